"""The measuring caller: a few calls per step whose every received RTP packet is timestamped.

SIPp carries the load but does not read the RTP it is sent, so what the server sends is measured
here, on a sample of calls placed alongside SIPp's: a minimal SIP UAC (INVITE, ACK, BYE over UDP)
that sends the same caller stream as SIPp (speech and RFC 4733 keys, :mod:`bench.media`) and
receives the server's RTP with the kernel's arrival timestamps (``SO_TIMESTAMPNS``). Kernel stamps
keep the probe's own scheduling out of the figures when the box is saturated.

From each call: packets received and lost (sequence gaps), the intervals between consecutive
packets (the send-interval error is ``|interval - 20 ms|``), and for each key press the time from
our first end packet to the first frame of the server's answer that is no longer the menu tone
(DTMF barge-in stopped the prompt: the flow reacted).
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from bench.media import FRAME_SECONDS, TimedPacket
from simplesip.wire import g711

log = logging.getLogger(__name__)

_TIMESTAMP_ANCILLARY = socket.CMSG_SPACE(16)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
# A frame of the menu prompt (a -12 dBFS tone) has an RMS near 5800; silence (the ack prompt,
# or no prompt at all) is near 0. Anything under this is "the tone stopped".
TONE_STOPPED_RMS = 1000.0


@dataclass
class ProbeResult:
    """What one probe call measured."""

    answered: bool = False
    setup_seconds: float | None = None
    received: int = 0
    expected: int = 0  # by sequence numbers
    expected_by_time: int = 0  # 20 ms frames between the first and the last arrival
    intervals_ms: list[float] = field(default_factory=list)
    reactions_ms: list[float] = field(default_factory=list)
    error: str | None = None
    foreign_packets: int = 0  # audio from another address than the server's SDP, not counted

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)


class ProbeCall:
    """One call to ``target`` (``host``, ``port``) driven from :meth:`run` in its own thread."""

    def __init__(self, target: tuple[str, int], stream: list[TimedPacket], hold_seconds: float,
                 service: str = "bench") -> None:
        self.target = target
        self.stream = stream
        self.hold_seconds = hold_seconds
        self.service = service
        self.result = ProbeResult()
        self._sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sip.bind(("127.0.0.1", 0))
        self._rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._rtp.bind(("127.0.0.1", 0))
        self._rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._call_id = f"probe-{uuid.uuid4().hex[:12]}@127.0.0.1"
        self._tag = uuid.uuid4().hex[:8]
        self._to_tag = ""
        self._remote_target = ""  # the 200's Contact: Request-URI of ACK and BYE
        self._route_set: list[str] = []  # its Record-Route, as Route headers (a proxy in front)
        self._remote_rtp: tuple[str, int] | None = None

    # -- SIP ----------------------------------------------------------------------------------

    def _request(self, method: str, cseq: int, body: bytes = b"") -> bytes:
        host, port = self.target
        local_port = self._sip.getsockname()[1]
        to_tag = f";tag={self._to_tag}" if self._to_tag else ""
        request_uri = self._remote_target if method in ("ACK", "BYE") and self._remote_target \
            else f"sip:{self.service}@{host}:{port}"
        lines = [
            f"{method} {request_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
            f"From: <sip:probe@127.0.0.1:{local_port}>;tag={self._tag}",
            f"To: <sip:{self.service}@{host}:{port}>{to_tag}",
            f"Call-ID: {self._call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:probe@127.0.0.1:{local_port}>",
            "Max-Forwards: 70",
        ]
        if method in ("ACK", "BYE"):
            lines += [f"Route: {route}" for route in self._route_set]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _sdp(self) -> bytes:
        port = self._rtp.getsockname()[1]
        return (f"v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n").encode()

    def _transact(self, data: bytes, method: str, timeout: float) -> tuple[int, str] | None:
        """Send ``data`` (retransmitted per RFC 3261 timer A/E) until a final response."""
        deadline = time.monotonic() + timeout
        interval, next_send = 0.5, 0.0
        self._sip.settimeout(0.05)
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                self._sip.sendto(data, self.target)
                next_send = time.monotonic() + interval
                interval = min(interval * 2, 4.0)
            try:
                reply = self._sip.recv(65535).decode("utf-8", "replace")
            except socket.timeout:
                continue
            status = int(reply.split(" ", 2)[1]) if reply.startswith("SIP/2.0") else 0
            if f" {method}" not in _header(reply, "CSeq") or status < 200:
                if status >= 100:
                    interval = max(interval, 4.0)  # provisional: stop retransmitting so fast
                continue
            return status, reply
        return None

    # -- the call -----------------------------------------------------------------------------

    def run(self) -> ProbeResult:
        """Place the call, stream for ``hold_seconds``, hang up; never raises."""
        try:
            self._run()
        except Exception as exc:  # a probe failure is a measured failure, not a harness crash
            self.result.error = repr(exc)
            log.debug("probe call failed", exc_info=True)
        finally:
            self._sip.close()
            self._rtp.close()
        return self.result

    def _run(self) -> None:
        started = time.monotonic()
        answer = self._transact(self._request("INVITE", 1, self._sdp()), "INVITE", 16.0)
        if answer is None or answer[0] != 200:
            self.result.error = f"INVITE: {answer[0] if answer else 'no answer'}"
            return
        reply = answer[1]
        self.result.answered = True
        self.result.setup_seconds = time.monotonic() - started
        self._to_tag = _header(reply, "To").partition(";tag=")[2].split(";")[0]
        contact = _header(reply, "Contact")
        self._remote_target = contact[contact.find("<") + 1 : contact.find(">")] if "<" in contact else contact
        record_route = [r.strip() for r in ",".join(_headers(reply, "Record-Route")).split(",") if r.strip()]
        self._route_set = record_route[::-1]  # a UAC's route set is the Record-Route reversed
        self._remote_rtp = _sdp_address(reply)
        self._sip.sendto(self._request("ACK", 1), self.target)
        self._stream()
        self._transact(self._request("BYE", 2), "BYE", 8.0)

    def _stream(self) -> None:
        """Send the caller stream on its schedule and record every packet that comes back."""
        assert self._remote_rtp is not None
        selector = selectors.DefaultSelector()
        selector.register(self._rtp, selectors.EVENT_READ)
        arrivals: list[tuple[float, int, float]] = []  # (kernel time, extended seq, frame RMS)
        digit_ends: list[float] = []  # kernel-comparable (CLOCK_REALTIME) send times
        start = time.monotonic()
        index = 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= self.hold_seconds:
                break
            while index < len(self.stream) and self.stream[index].at <= elapsed:
                packet = self.stream[index]
                self._rtp.sendto(packet.data, self._remote_rtp)
                if packet.digit_end:
                    digit_ends.append(time.time())
                index += 1
            next_at = self.stream[index].at if index < len(self.stream) else self.hold_seconds
            wait = max(0.0, min(next_at - (time.monotonic() - start), 0.02))
            for _ in selector.select(wait):
                self._drain(arrivals)
        selector.close()
        self._summarise(arrivals, digit_ends)

    def _drain(self, arrivals: list[tuple[float, int, float]]) -> None:
        while True:
            try:
                data, ancillary, _flags, source = self._rtp.recvmsg(2048, _TIMESTAMP_ANCILLARY,
                                                                    socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if len(data) < 12 or data[1] & 0x7F != 0:
                continue  # not PCMU audio (RTCP, events)
            if source != self._remote_rtp:
                # Not the server's media port (it sends from the port of its SDP): another
                # stream. Counted apart: once, in a 2-worker run, a second stream reached a probe
                # and its sequence numbers read as 97 % loss.
                self.result.foreign_packets += 1
                continue
            stamp = kernel_timestamp(ancillary)
            sequence = struct.unpack("!H", data[2:4])[0]
            pcm = np.frombuffer(g711.ulaw_to_pcm(data[12:]), dtype="<i2").astype(np.float64)
            arrivals.append((stamp, sequence, float(np.sqrt(np.mean(pcm * pcm))) if len(pcm) else 0.0))

    def _summarise(self, arrivals: list[tuple[float, int, float]], digit_ends: list[float]) -> None:
        if not arrivals:
            return
        (self.result.received, self.result.expected, self.result.expected_by_time,
         self.result.intervals_ms) = summarise_arrivals([(stamp, sequence) for stamp, sequence, _ in arrivals])
        for sent in digit_ends:
            stopped = next((t for t, _, rms in arrivals if t > sent and rms < TONE_STOPPED_RMS), None)
            if stopped is not None:
                self.result.reactions_ms.append((stopped - sent) * 1000)


def summarise_arrivals(arrivals: list[tuple[float, int]]) -> tuple[int, int, int, list[float]]:
    """``(arrival time, RTP sequence)`` of one stream -> (received, expected, expected by time,
    intervals in ms).

    Expected counts the sequence span (what the sender sent: its loss is sequence gaps). Expected
    by time counts the 20 ms frames of the time span: a sender whose clock skips ticks (or runs
    slow) sends fewer packets than real time needs without leaving a sequence gap.
    """
    extended, last, cycles = [], None, 0
    for _, sequence in arrivals:
        if last is not None and sequence < last and last - sequence > 0x8000:
            cycles += 1
        extended.append(sequence + (cycles << 16))
        last = sequence
    times = [stamp for stamp, _ in arrivals]
    intervals = [(b - a) * 1000 for a, b in zip(times, times[1:])]
    by_time = int(round((times[-1] - times[0]) / FRAME_SECONDS)) + 1
    return len(set(extended)), max(extended) - min(extended) + 1, by_time, intervals


def kernel_timestamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The ``SO_TIMESTAMPNS`` arrival time in an ancillary list (wall clock), else now."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            return seconds + nanoseconds / 1e9
    return time.time()


class RtpSink:
    """One UDP socket that receives the RTP of many calls (told to send here by the SDP) and
    sorts it by SSRC, with kernel arrival times. Runs in its own thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.socket.settimeout(0.2)
        self.port: int = self.socket.getsockname()[1]
        self.streams: dict[int, list[tuple[float, int]]] = {}
        self._running = True
        self._thread = threading.Thread(target=self._receive, name="rtp-sink", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while self._running:
            try:
                data, ancillary, _flags, _addr = self.socket.recvmsg(2048, _TIMESTAMP_ANCILLARY)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(data) >= 12 and data[1] & 0x7F < 96:  # audio, not events or RTCP
                ssrc = struct.unpack("!I", data[8:12])[0]
                sequence = struct.unpack("!H", data[2:4])[0]
                self.streams.setdefault(ssrc, []).append((kernel_timestamp(ancillary), sequence))

    def take(self) -> ProbeResult:
        """Everything received since the last take, summed over the streams."""
        streams, self.streams = self.streams, {}
        total = ProbeResult(answered=bool(streams))
        for arrivals in streams.values():
            if len(arrivals) < 2:
                continue
            received, expected, by_time, intervals = summarise_arrivals(arrivals)
            total.received += received
            total.expected += expected
            total.expected_by_time += by_time
            total.intervals_ms.extend(intervals)
        return total

    def stop(self) -> None:
        self._running = False
        self._thread.join(2.0)
        self.socket.close()


def _header(message: str, name: str) -> str:
    for line in message.split("\r\n")[1:]:
        if not line:
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def _headers(message: str, name: str) -> list[str]:
    """Every value of header ``name`` (it may appear on several lines)."""
    values = []
    for line in message.split("\r\n")[1:]:
        if not line:
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            values.append(value.strip())
    return values


def _sdp_address(message: str) -> tuple[str, int]:
    body = message.partition("\r\n\r\n")[2]
    host, port = "127.0.0.1", 0
    for line in body.splitlines():
        if line.startswith("c=IN IP4 "):
            host = line.split()[-1]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    if not port:
        raise ValueError("no audio in the SDP answer")
    return host, port
