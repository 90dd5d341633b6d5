"""``ivr serve`` as a real subprocess on free ports, plus a raw SIP test client.

The robustness tests drive the product as an operator would run it: a configuration file, a
flow, a process that gets signals. :class:`IvrServeProcess` writes both into the test's own
folder, starts ``python -m ivr serve`` there and waits until it answers OPTIONS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from tests.helpers.net import free_port
from tests.helpers.paths import PROJECT

#: Answers, records the caller until '#', BYE or 60 s, then hangs up.
RECORD_FLOW = """\
flow: robust
start: rec
nodes:
  rec:
    record: {to: "{{ call.id }}.wav", max_length: 60s, beep: false, silence_timeout: 60s, min_length: 0s}
    next: bye
  bye: {hangup: }
"""

#: Refuses every call it is given before answering (no media, no dialog to tear down).
REJECT_FLOW = """\
flow: refuse
start: no
nodes:
  no: {reject: 486}
"""

#: Answers and waits (collecting DTMF into the CDR) until the caller hangs up.
WAIT_FLOW = """\
flow: robust
start: wait
nodes:
  wait:
    collect: {max_digits: 20, timeout: 60s, inter_digit_timeout: 60s, attempts: 1}
    next: bye
  bye: {hangup: }
"""


class IvrServeProcess:
    """``ivr serve`` in ``folder`` with ``config_extra`` appended to a minimal configuration."""

    def __init__(self, folder: Path, flow: str | dict[str, str] = WAIT_FLOW, config_extra: str = "",
                 transports: str = "[udp, tcp]") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        flows = flow if isinstance(flow, dict) else {"flow": flow}
        for name, text in flows.items():
            (folder / f"{name}.yaml").write_text(text)
        flow_list = ", ".join(f"{name}.yaml" for name in flows)
        low = 20000 + (self.port * 7) % 40000 // 2 * 2  # spread parallel sessions over the range
        self.config_path = folder / "ivr.yaml"
        self.config_path.write_text(
            f"listen: {{host: 127.0.0.1, port: {self.port}, transports: {transports}}}\n"
            f"rtp_ports: [{low}, {low + 4000}]\nflows: [{flow_list}]\nrecordings: rec\ncdr: cdr.jsonl\n"
            f"drain_timeout: 5\n{config_extra}")
        self.log_path = folder / "serve.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ivr", "serve", "-c", str(self.config_path)], cwd=folder,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(PROJECT)}, start_new_session=True)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def recordings(self) -> Path:
        return self.folder / "rec"

    def log(self) -> str:
        """Everything the server logged so far (also after it stopped)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the server answers an OPTIONS over UDP."""
        deadline = time.monotonic() + timeout
        with SipClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ivr serve exited with {self.proc.returncode}:\n{self.log()}")
                client.send(options(self.address, client.port), self.address)
                if client.receive(0.3) is not None:
                    return
        raise TimeoutError(f"ivr serve did not answer OPTIONS:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.signal(signal.SIGTERM)
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(3)
            except ProcessLookupError:
                pass
        self._log.close()

    def __enter__(self) -> "IvrServeProcess":
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(*args: str, cwd: Path, log_path: Path | None = None,
            timeout: float = 15.0) -> Iterator[Callable[[], str]]:
    """``python -m ivr serve ARGS`` in ``cwd`` (this checkout first on the path), entered once it
    logs "ivr serving on"; yields a function returning its log (``log_path``, by default
    ``cwd/serve.log``) so far. Stopped (SIGTERM) and reaped on the way out."""
    log_path = log_path or cwd / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ivr", "serve", *args], cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(PROJECT)})

        def text() -> str:
            log.flush()
            return log_path.read_text(errors="replace")

        try:
            deadline = time.monotonic() + timeout
            while "ivr serving on" not in text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"ivr serve did not start:\n{text()}")
                time.sleep(0.05)
            yield text
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class SipClient:
    """A bare UDP socket that sends SIP bytes and reads back whole responses."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def receive(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recvfrom(70000)[0]
        except socket.timeout:
            return None

    def final_response(self, timeout: float = 3.0) -> bytes | None:
        """The first response with a status >= 200 (provisional ones are skipped)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            data = self.receive(remaining)
            if data is None:
                return None
            if data.startswith(b"SIP/2.0 ") and not data[8:9] == b"1":
                return data
        return None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "SipClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def status_of(response: bytes | None) -> int | None:
    if response is None:
        return None
    return int(response.split(b" ", 2)[1])


def header_of(response: bytes, name: str) -> str | None:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.decode(errors="replace").partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def options(target: tuple[str, int], local_port: int) -> bytes:
    branch = "z9hG4bK" + uuid.uuid4().hex[:12]
    return (f"OPTIONS sip:ivr@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:ivr@{target[0]}>\r\nCall-ID: {uuid.uuid4().hex}@robust\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


SDP_OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
             "a=fmtp:101 0-15\r\na=sendrecv\r\n")


def invite(target: tuple[str, int], local_port: int, *, call_id: str | None = None, rtp_port: int = 4000,
           user: str = "caller", to_user: str = "ivr", extra_headers: str = "", body: str | None = None,
           content_type: str = "application/sdp", uri: str | None = None, max_forwards: int = 70,
           local_host: str = "127.0.0.1") -> bytes:
    """A complete INVITE from ``local_host:local_port`` (``extra_headers`` lines end in CRLF)."""
    sdp = SDP_OFFER.format(port=rtp_port) if body is None else body
    call_id = call_id or f"{uuid.uuid4().hex}@robust"
    request_uri = uri or f"sip:ivr@{target[0]}:{target[1]}"
    return (f"INVITE {request_uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local_host}:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
            f"Max-Forwards: {max_forwards}\r\nFrom: <sip:{user}@{local_host}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{to_user}@{target[0]}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:{user}@{local_host}:{local_port}>\r\n{extra_headers}"
            f"Content-Type: {content_type}\r\nContent-Length: {len(sdp.encode())}\r\n\r\n{sdp}").encode()


def ack_for(invite_bytes: bytes, response: bytes) -> bytes:
    """The ACK for a non-2xx final response (same branch, To tag from the response)."""
    from simplesip.wire.message import parse_message

    request = parse_message(invite_bytes)
    headers = request.headers
    to = header_of(response, "To") or headers.get("To")
    return (f"ACK {request.uri} SIP/2.0\r\nVia: {headers.get_all('Via')[0]}\r\nMax-Forwards: 70\r\n"
            f"From: {headers.get('From')}\r\nTo: {to}\r\nCall-ID: {headers.get('Call-ID')}\r\n"
            f"CSeq: {request.cseq[0]} ACK\r\nContent-Length: 0\r\n\r\n").encode()
