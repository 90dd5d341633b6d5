"""``ivr serve`` with SIP over TLS (``listen.tls``): baresip calls it over TLS and its digit
reaches the flow; it registers over TLS to Kamailio's tls module and takes a call through it;
``ivr call`` dials it with a ``sips:`` URI and ``--ca``, and fails at once naming the TLS problem
when the server's certificate is not trusted. On ``[::]`` its TLS listener is dual stack: a TLS
client over 127.0.0.1 and baresip over ::1 reach it; SIGHUP reloads its certificate (Python's
``ssl`` client sees the renewed certificate's serial on new connections, while a connection opened
before keeps its session and is still served; a broken file keeps the running one)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from simplesip import Endpoint, EndpointConfig
from tests.helpers.certs import CertSet, issue_server_certificate, make_test_pki
from tests.helpers.net import free_port
from tests.helpers.peers import BaresipRunner, KamailioRunner

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]

FLOW = """\
flow: tls
start: ask
nodes:
  ask:
    collect:
      prompt: {tone: "440", duration: 1s}
      max_digits: 1
      timeout: 10s
    on: {ok: thanks, timeout: bye, invalid: bye}
  thanks: {play: {tone: "880", duration: 500ms}, next: bye}
  bye: {hangup: {}}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertSet:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


class Serve:
    """``ivr serve`` in a subprocess with ``config`` (YAML text) in ``folder``."""

    def __init__(self, folder: Path, config: str):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tls.yaml").write_text(FLOW)
        (folder / "ivr.yaml").write_text(config)
        self.folder = folder
        self.log_path = folder / "serve.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log_file = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "ivr", "serve", "--config", "ivr.yaml", "tls.yaml"],
                                     cwd=folder, stdout=self.log_file, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 15
        while "ivr serving on" not in self.log():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text()

    def cdr(self, count: int = 1, timeout: float = 10) -> list[dict]:
        path = self.folder / "cdr.jsonl"
        deadline = time.monotonic() + timeout
        while not path.exists() or len(path.read_text().splitlines()) < count:
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)
        return [json.loads(line) for line in path.read_text().splitlines()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self.log_file.close()


def _config(pki: CertSet, port: int, tls_port: int, extra: str = "") -> str:
    return f"""\
listen:
  port: {port}
  transports: [udp, tls]
  tls:
    port: {tls_port}
    cert: {pki.cert("server")}
    key: {pki.key("server")}
    ca: {pki.ca}
cdr: cdr.jsonl
{extra}"""


def test_baresip_calls_ivr_serve_over_tls(tmp_path: Path, pki: CertSet):
    tls_port = free_port()
    serve = Serve(tmp_path / "serve", _config(pki, free_port(), tls_port))
    try:
        pem = tmp_path / "baresip.pem"
        pem.write_text(Path(pki.cert("server")).read_text() + Path(pki.key("server")).read_text())
        with BaresipRunner(tmp_path / "baresip", commands=[f"/dial sip:tls@127.0.0.1:{tls_port};transport=tls"],
                           extra_config=[f"sip_certificate\t{pem}", f"sip_cafile\t{pki.ca}"]) as baresip:
            baresip.wait_ready()
            deadline = time.monotonic() + 10
            while "Call established" not in baresip.log():
                assert time.monotonic() < deadline, baresip.log() + serve.log()
                time.sleep(0.1)
            time.sleep(1.2)
            baresip.command("sndcode", "5")
            [record] = serve.cdr()
            deadline = time.monotonic() + 10
            while "terminated" not in baresip.log() and time.monotonic() < deadline:  # the BYE's news
                time.sleep(0.1)
            log = baresip.log()
    finally:
        serve.stop()
    assert record["flow"] == "tls" and record["digits"] == "5", record
    assert "terminated" in log, log  # the flow's BYE, over TLS


def test_ivr_call_dials_ivr_serve_with_a_sips_uri(tmp_path: Path, pki: CertSet):
    tls_port = free_port()
    serve = Serve(tmp_path / "serve", _config(pki, free_port(), tls_port))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        good = subprocess.run([sys.executable, "-m", "ivr", "call", f"sips:tls@127.0.0.1:{tls_port}",
                               "--ca", pki.ca, "--dtmf", "+1.5s 3", "--duration", "6"],
                              capture_output=True, text=True, env=env, timeout=30)
        started = time.monotonic()
        bad = subprocess.run([sys.executable, "-m", "ivr", "call", f"sips:tls@127.0.0.1:{tls_port}"],
                             capture_output=True, text=True, env=env, timeout=30)  # system CAs only
        took = time.monotonic() - started
        [record] = serve.cdr()
    finally:
        serve.stop()
    assert good.returncode == 0, good.stderr + serve.log()
    assert record["digits"] == "3"
    assert bad.returncode == 1 and "TLS: certificate verification failed" in bad.stderr, bad.stderr
    assert took < 8  # python start-up included; not "no answer" after 32 s


def test_ivr_serve_registers_over_tls_to_kamailio_and_takes_a_call(tmp_path: Path, pki: CertSet):
    kamailio = KamailioRunner(tmp_path / "kamailio", tls=(pki.cert("server"), pki.key("server")))
    account = (f"accounts:\n  - {{username: alice, password: secret, server: 127.0.0.1, "
               f"port: {kamailio.tls_port}, transport: tls}}\n")
    serve = None
    try:
        serve = Serve(tmp_path / "serve", _config(pki, free_port(), free_port(), account))
        deadline = time.monotonic() + 10
        while "transport=tls" not in kamailio.registrations():
            assert time.monotonic() < deadline, serve.log() + kamailio.log()[-3000:]
            time.sleep(0.1)

        async def call_through_kamailio() -> None:
            async with Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000))) as caller:
                call = await caller.call(f"sip:alice@127.0.0.1:{kamailio.port}", timeout=10)
                await asyncio.sleep(1.0)
                call.send_dtmf("9")
                await asyncio.wait_for(call.ended.wait(), 10)  # the flow hangs up after its tone
                assert call.end_reason == "remote_bye"

        asyncio.run(call_through_kamailio())
        [record] = serve.cdr()
        assert record["digits"] == "9", record
    finally:
        if serve is not None:
            serve.stop()
        kamailio.stop()


def _tls_client(host: str, port: int, ca: str) -> tuple[ssl.SSLSocket, int]:
    """A TLS connection verifying the server against ``ca`` and ``host``; the serial number of
    the certificate the server showed."""
    context = ssl.create_default_context(cafile=ca)
    sock = context.wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname=host)
    return sock, int(sock.getpeercert()["serialNumber"], 16)


def _options(sock: ssl.SSLSocket, host: str) -> str:
    """Send an OPTIONS over ``sock``; the status line of the answer."""
    sent_by = f"[{host}]" if ":" in host else host
    request = (f"OPTIONS sip:tls@{sent_by} SIP/2.0\r\n"
               f"Via: SIP/2.0/TLS {sent_by}:5999;branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:probe@localhost>;tag=p\r\nTo: <sip:tls@localhost>\r\n"
               f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    sock.sendall(request.encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed; got {answer!r}"
        answer += chunk
    return answer.split(b"\r\n", 1)[0].decode()


def _wait_log(serve: Serve, text: str, count: int = 1, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while serve.log().count(text) < count:
        assert serve.proc.poll() is None and time.monotonic() < deadline, serve.log()
        time.sleep(0.05)


def test_sighup_reloads_the_tls_certificate_of_a_dual_stack_listener(tmp_path: Path, pki: CertSet):
    issue_server_certificate(pki, "renewed")
    first, renewed = pki.serial("server"), pki.serial("renewed")
    assert first != renewed
    folder = tmp_path / "serve"
    folder.mkdir()
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    shutil.copy(pki.cert("server"), cert)
    shutil.copy(pki.key("server"), key)
    tls_port = free_port()
    serve = Serve(folder, f"""\
listen:
  host: "::"
  port: {free_port()}
  transports: [udp, tls]
  tls: {{port: {tls_port}, cert: fullchain.pem, key: privkey.pem, ca: {pki.ca}}}
cdr: cdr.jsonl
""")
    try:
        old, serial = _tls_client("127.0.0.1", tls_port, pki.ca)  # IPv4 to the listener on [::]
        assert serial == first
        assert _options(old, "127.0.0.1").startswith("SIP/2.0 200"), serve.log()

        # The renewal, in place (what a certbot deploy hook does), then SIGHUP.
        shutil.copy(pki.cert("renewed"), cert)
        shutil.copy(pki.key("renewed"), key)
        serve.proc.send_signal(signal.SIGHUP)
        _wait_log(serve, "TLS certificate reloaded")
        for host in ("127.0.0.1", "::1"):
            new, serial = _tls_client(host, tls_port, pki.ca)
            assert serial == renewed, host
            assert _options(new, host).startswith("SIP/2.0 200"), serve.log()
            new.close()
        # The connection opened before the reload keeps its session and is still served.
        assert int(old.getpeercert()["serialNumber"], 16) == first
        assert _options(old, "127.0.0.1").startswith("SIP/2.0 200"), serve.log()

        # A broken renewal is refused; the running certificate stays.
        cert.write_text("not a certificate\n")
        serve.proc.send_signal(signal.SIGHUP)
        _wait_log(serve, "reload failed")
        new, serial = _tls_client("::1", tls_port, pki.ca)
        assert serial == renewed
        new.close()

        # baresip over IPv6 calls the same listener over TLS and is served with the new certificate.
        pem = tmp_path / "baresip.pem"
        pem.write_text(Path(pki.cert("server")).read_text() + Path(pki.key("server")).read_text())
        with BaresipRunner(tmp_path / "baresip", host="::1",
                           commands=[f"/dial sip:tls@[::1]:{tls_port};transport=tls"],
                           extra_config=[f"sip_certificate\t{pem}", f"sip_cafile\t{pki.ca}"]) as baresip:
            baresip.wait_ready()
            deadline = time.monotonic() + 10
            while "Call established" not in baresip.log():
                assert time.monotonic() < deadline, baresip.log() + serve.log()
                time.sleep(0.1)
            baresip.command("sndcode", "4")
            [record] = serve.cdr()
        old.close()
        log = serve.log()
    finally:
        serve.stop()
    assert record["flow"] == "tls" and record["digits"] == "4" and "[::1]" in record["from"], record
    assert "ffff" not in log.lower()
