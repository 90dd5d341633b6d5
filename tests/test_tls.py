"""SIP over TLS between two Endpoints on loopback: calls, audio, DTMF, BYE; and every way a TLS
connection fails (expired, untrusted or misnamed certificate, plain TCP on the TLS port, a
client certificate missing where mutual TLS is required). Certificates: tests/helpers/certs.py."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import numpy as np
import pytest

from simplesip import Call, CallError, CallState, Endpoint, EndpointConfig
from simplesip.aio.tls import client_context, server_context
from simplesip.aio.transport import SipTransport
from simplesip.wire import g711
from tests.helpers.certs import CertSet, issue_server_certificate, make_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertSet:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _server(pki: CertSet, cert: str = "server", **kw) -> Endpoint:
    return Endpoint(EndpointConfig(
        sip_port=0, tls_port=0, transports=("udp", "tcp", "tls"), username="bob",
        tls_cert_file=pki.cert(cert), tls_key_file=pki.key(cert), tls_ca_file=pki.ca,
        rtp_port_range=(40000, 49000), dns_srv=False, **kw))


def _client(pki: CertSet, listen: bool = False, **kw) -> Endpoint:
    """A caller; with ``listen`` it has a TLS listener too (its Contact names that port)."""
    kw.setdefault("tls_ca_file", pki.ca)
    if listen:
        kw.update(tls_cert_file=pki.cert("server"), tls_key_file=pki.key("server"))
    return Endpoint(EndpointConfig(sip_port=0, tls_port=0, transports=("udp", "tcp", "tls"),
                                   username="alice", rtp_port_range=(40000, 49000), dns_srv=False,
                                   **kw))


def _answer_all(callee: Endpoint, sink: list[Call]) -> None:
    async def on_call(call: Call) -> None:
        sink.append(call)
        await call.answer()
    callee.on_incoming_call = on_call


async def _until(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_sips_call_with_audio_dtmf_and_bye(pki):
    async with _server(pki) as callee, _client(pki, listen=True) as caller:
        incoming: list[Call] = []
        _answer_all(callee, incoming)
        call = await caller.call(f"sips:bob@127.0.0.1:{callee.tls_port}")
        assert call.state in (CallState.CONNECTED, CallState.STREAMING)
        (remote,) = incoming
        via = remote.headers.get("Via")
        assert via.startswith(f"SIP/2.0/TLS 127.0.0.1:{caller.tls_port};")
        # a sips: Request-URI obliges a sips: Contact (RFC 3261 8.1.1.8), on our TLS port
        assert remote.headers.get("Contact") == f"<sips:alice@127.0.0.1:{caller.tls_port}>"
        assert caller._transport.tls_connection_count == 1
        assert caller._transport.tcp_connection_count == 0

        heard: list[bytes] = []
        remote.on_audio = heard.append
        noise = np.random.default_rng(3).integers(-8000, 8000, 4000).astype(np.int16)
        call.queue_pcm(noise.tobytes())
        await _until(lambda: call.queued_audio_bytes == 0 and remote.state is CallState.STREAMING)
        await asyncio.sleep(0.3)
        pcm = np.frombuffer(b"".join(heard), dtype="<i2")
        expected = g711.decode(g711.encode(noise, call.codec), call.codec)
        start = next(i for i in range(0, len(pcm) - 160, 160) if np.array_equal(pcm[i:i + 160], expected[:160]))
        np.testing.assert_array_equal(pcm[start:start + len(expected)], expected)

        digits: list[str] = []
        remote.on_dtmf = lambda d, src, ms: digits.append(d)
        call.send_dtmf("42#", duration_ms=80)
        await _until(lambda: len(digits) == 3, 4)
        assert digits == ["4", "2", "#"]

        await call.hangup()  # the BYE goes over the same TLS connection
        await asyncio.wait_for(remote.ended.wait(), 2)
        assert call.end_reason == "local_bye" and remote.end_reason == "remote_bye"
        assert caller.tls_handshake_failures == {"inbound": 0, "outbound": 0}


async def test_transport_tls_uri_call_and_the_callee_hangs_up(pki):
    async with _server(pki) as callee, _client(pki, listen=True) as caller:
        incoming: list[Call] = []
        _answer_all(callee, incoming)
        call = await caller.call(f"sip:bob@127.0.0.1:{callee.tls_port};transport=tls")
        (remote,) = incoming
        assert remote.headers.get("Contact") == f"<sip:alice@127.0.0.1:{caller.tls_port};transport=tls>"
        await remote.hangup()  # the callee's BYE goes back over the connection the caller opened
        await asyncio.wait_for(call.ended.wait(), 2)
        assert call.end_reason == "remote_bye"


async def test_a_second_call_reuses_the_tls_connection(pki):
    async with _server(pki) as callee, _client(pki) as caller:
        _answer_all(callee, [])
        for _ in range(2):
            call = await caller.call(f"sips:bob@127.0.0.1:{callee.tls_port}")
            await call.hangup()
        assert caller._transport.tls_connection_count == 1


@pytest.mark.parametrize("cert, client_kw, words", [
    ("expired", {}, "certificate has expired"),
    ("other", {}, "host name mismatch"),
    ("selfsigned", {}, "self-signed certificate"),
    ("server", {"tls_ca_file": None}, "unable to get local issuer certificate"),  # system store
])
async def test_a_bad_server_certificate_fails_the_call_at_once(pki, cert, client_kw, words):
    async with _server(pki, cert) as callee, _client(pki, **client_kw) as caller:
        callee.on_incoming_call = lambda call: call.answer()
        started = time.monotonic()
        with pytest.raises(CallError) as info:
            await caller.call(f"sips:bob@127.0.0.1:{callee.tls_port}")
        assert time.monotonic() - started < 2
        message = str(info.value)
        assert message.startswith("TLS: ") and words in message, message
        assert f"127.0.0.1:{callee.tls_port}" in message
        assert caller.tls_handshake_failures["outbound"] == 1
        assert not caller.calls and not callee.calls


async def test_verify_off_accepts_any_certificate(pki):
    async with _server(pki, "selfsigned") as callee, _client(pki, tls_verify=False, tls_ca_file=None) as caller:
        _answer_all(callee, [])
        call = await caller.call(f"sips:bob@127.0.0.1:{callee.tls_port}")
        await call.hangup()


async def test_plain_tcp_on_the_tls_port_is_closed_and_the_listener_serves_on(pki, caplog):
    async with _server(pki) as callee, _client(pki) as caller:
        _answer_all(callee, [])
        loop = asyncio.get_running_loop()

        def plain_invite() -> bytes:
            with socket.create_connection(("127.0.0.1", callee.tls_port), timeout=3) as sock:
                sock.sendall(b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKx\r\n"
                             b"Content-Length: 0\r\n\r\n")
                try:
                    return sock.recv(4096) + sock.recv(4096)
                except ConnectionResetError:
                    return b""

        reply = await loop.run_in_executor(None, plain_invite)
        assert b"SIP/2.0" not in reply  # a TLS alert at most, never a SIP answer
        await _until(lambda: callee.tls_handshake_failures["inbound"] == 1)
        assert any("TLS handshake with 127.0.0.1" in r.getMessage() for r in caplog.records)
        call = await caller.call(f"sips:bob@127.0.0.1:{callee.tls_port}")
        await call.hangup()


async def test_mutual_tls(pki):
    server = _server(pki, tls_client_ca_file=pki.ca)
    async with server as callee:
        _answer_all(callee, [])
        async with _client(pki, tls_client_cert_file=pki.cert("client"),
                           tls_client_key_file=pki.key("client")) as trunk:
            call = await trunk.call(f"sips:bob@127.0.0.1:{callee.tls_port}")
            await call.hangup()
        async with _client(pki) as stranger:  # no client certificate: refused, and said so
            started = time.monotonic()
            with pytest.raises(CallError, match="TLS: "):
                await stranger.call(f"sips:bob@127.0.0.1:{callee.tls_port}", timeout=5)
            assert time.monotonic() - started < 2
        await _until(lambda: callee.tls_handshake_failures["inbound"] == 1)


async def test_transport_without_a_server_context_connects_out_only(pki):
    received: list[tuple[bytes, tuple[str, int], str]] = []
    server = SipTransport("127.0.0.1", 0, lambda d, a, t: received.append((d, a, t)), transports=("tls",),
                          tls_port=0, tls_server_context=server_context(pki.cert("server"), pki.key("server")))
    client = SipTransport("127.0.0.1", 0, lambda d, a, t: None, transports=("udp", "tls"),
                          tls_client_context=client_context(ca_file=pki.ca))
    await server.start()
    await client.start()
    try:
        assert server.tls_listening and not client.tls_listening
        message = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"
        client.send(message, ("127.0.0.1", server.tls_port), "tls")
        await _until(lambda: received)
        assert received[0][0] == message and received[0][2] == "tls"
    finally:
        await client.close()
        await server.close()


async def test_close_connections_makes_the_next_call_handshake_again(pki):
    async with _server(pki) as callee, _client(pki) as caller:
        _answer_all(callee, [])
        call = await caller.call(f"sips:bob@127.0.0.1:{callee.tls_port}")
        await call.hangup()
        assert caller.close_connections("tcp") == 0
        assert caller.close_connections("tls") == 1
        await _until(lambda: caller._transport.tls_connection_count == 0)
        call = await caller.call(f"sips:bob@127.0.0.1:{callee.tls_port}")
        await call.hangup()
        assert caller._transport.tls_connection_count == 1


async def test_ivr_call_over_tls_with_transport_option(pki):
    from ivr.cli import place_call

    async with _server(pki) as callee:
        incoming: list[Call] = []
        _answer_all(callee, incoming)
        report = await place_call(f"sip:bob@127.0.0.1:{callee.tls_port}", transport="tls", duration=0.3,
                                  tls={"tls_ca_file": pki.ca})
        assert report.answered, report.end_reason
        assert incoming[0].headers.get("Via").startswith("SIP/2.0/TLS ")
        report = await place_call(f"sip:bob@127.0.0.1:{callee.tls_port}", transport="tls", duration=0.3)
        assert not report.answered and report.end_reason.startswith("TLS: certificate verification failed")


async def test_a_silent_client_on_the_tls_port_is_dropped_after_the_handshake_timeout(pki):
    async with _server(pki, tls_handshake_timeout=0.5) as callee:
        reader, writer = await asyncio.open_connection("127.0.0.1", callee.tls_port)
        try:
            started = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the server
            assert 0.4 < time.monotonic() - started < 2
            await _until(lambda: callee.tls_handshake_failures["inbound"] == 1)
        finally:
            writer.close()


async def test_tls_over_ipv6(pki):
    v6 = {"local_host": "::1"}
    async with _server(pki, **v6) as callee, _client(pki, listen=True, **v6) as caller:
        incoming: list[Call] = []
        _answer_all(callee, incoming)
        call = await caller.call(f"sips:bob@[::1]:{callee.tls_port}")  # the certificate's IP:::1
        assert incoming[0].headers.get("Via").startswith(f"SIP/2.0/TLS [::1]:{caller.tls_port};")
        await call.hangup()
        await asyncio.wait_for(incoming[0].ended.wait(), 2)


async def test_reload_tls_changes_new_connections_only_and_refuses_broken_files(pki, tmp_path):
    issue_server_certificate(pki, "reloaded")
    async with _server(pki) as server:
        def serial() -> int:
            context = ssl.create_default_context(cafile=pki.ca)
            with context.wrap_socket(socket.create_connection(("127.0.0.1", server.tls_port), timeout=5),
                                     server_hostname="127.0.0.1") as sock:
                return int(sock.getpeercert()["serialNumber"], 16)

        assert await asyncio.to_thread(serial) == pki.serial("server")
        server.reload_tls(tls_cert_file=pki.cert("reloaded"), tls_key_file=pki.key("reloaded"))
        assert await asyncio.to_thread(serial) == pki.serial("reloaded")
        broken = tmp_path / "broken.pem"
        broken.write_text("not a certificate\n")
        with pytest.raises(ssl.SSLError):
            server.reload_tls(tls_cert_file=str(broken))
        with pytest.raises(ValueError, match="not reloadable: tls_port"):
            server.reload_tls(tls_port=1)
        assert server.config.tls_cert_file == pki.cert("reloaded")  # unchanged by the failures
        assert await asyncio.to_thread(serial) == pki.serial("reloaded")
