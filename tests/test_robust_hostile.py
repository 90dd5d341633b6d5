"""Hostile input against the running product: floods, authentication, oversized and trickled
messages, RTP injection. Each test names the defence it checks (docs/security.md)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from simplesip import Call, Endpoint, EndpointConfig
from simplesip.core.auth import Challenge, build_authorization
from simplesip.core.auth_server import DigestVerifier
from simplesip.wire.rtp import RtpPacket
from tests.helpers.robust_server import (
    IvrServeProcess,
    SipClient,
    ack_for,
    header_of,
    invite,
    status_of,
)
from tests.helpers.waiting import wait_for

AUTH = "limits: {auth: {realm: ivr.test, users: {alice: secret}}, rate: {per_source: 1000, burst: 1000}}\n"


def _final(server: IvrServeProcess, client: SipClient, request: bytes) -> bytes | None:
    client.send(request, server.address)
    response = client.final_response(3.0)
    if response is not None and status_of(response) >= 300:
        client.send(ack_for(request, response), server.address)
    return response


# --- inbound digest authentication ---------------------------------------------------------------


def test_inbound_auth_refuses_unauthenticated_and_wrong_password(tmp_path: Path) -> None:
    with IvrServeProcess(tmp_path, config_extra=AUTH) as server, SipClient() as client:
        challenge_response = _final(server, client, invite(server.address, client.port))
        assert status_of(challenge_response) == 401, challenge_response
        challenge = Challenge.parse(header_of(challenge_response, "WWW-Authenticate") or "")
        assert challenge.realm == "ivr.test"
        uri = f"sip:ivr@{server.address[0]}:{server.address[1]}"
        wrong = build_authorization(challenge, "INVITE", uri, "alice", "guess")
        refused = _final(server, client, invite(server.address, client.port,
                                                extra_headers=f"Authorization: {wrong}\r\n"))
        assert status_of(refused) in (401, 403), refused
        unknown = build_authorization(challenge, "INVITE", uri, "mallory", "secret")
        refused = _final(server, client, invite(server.address, client.port,
                                                extra_headers=f"Authorization: {unknown}\r\n"))
        assert status_of(refused) in (401, 403), refused
        assert server.alive()


@pytest.mark.parametrize("authorization", [
    'Digest username="alice", realm="ivr.test", nonce="1.a.\u00e9\u00e9", uri="sip:ivr", response="00", '
    'qop=auth, nc=00000001, cnonce="c"',
    'Digest username="\u00e9", realm="ivr.test", nonce="\u2603", uri="sip:ivr", response="\u00ff", qop=auth, '
    'nc=00000001, cnonce="c"',
    "Digest " + "a" * 3000,
    "Basic YWxpY2U6c2VjcmV0",
])
def test_malformed_credentials_are_refused_and_the_server_survives(tmp_path: Path, authorization: str) -> None:
    """Found by fuzz/fuzz_auth.py: a non-ASCII nonce or response made DigestVerifier.verify raise
    TypeError (hmac.compare_digest refuses non-ASCII str)."""
    with IvrServeProcess(tmp_path, config_extra=AUTH) as server, SipClient() as client:
        response = _final(server, client, invite(server.address, client.port,
                                                 extra_headers=f"Authorization: {authorization}\r\n"))
        assert status_of(response) in (401, 403), response
        server.wait_ready(3)  # still answering


@pytest.mark.parametrize("nonce_or_response", ["nonce", "response"])
def test_digest_verifier_refuses_non_ascii_values(nonce_or_response: str) -> None:
    verifier = DigestVerifier("ivr", {"alice": "secret"}.get)
    nonce = verifier.make_nonce(1000.0) if nonce_or_response == "response" else "1.a.\u00e9"
    response = "\u00e9" * 32 if nonce_or_response == "response" else "0" * 32
    header = (f'Digest username="alice", realm="ivr", nonce="{nonce}", uri="sip:ivr", '
              f'response="{response}", qop=auth, nc=00000001, cnonce="c"')
    assert not verifier.verify(header, "INVITE", 1001.0).ok


# --- flood ---------------------------------------------------------------------------------------


def test_invite_flood_from_one_source_is_rate_limited(tmp_path: Path) -> None:
    extra = "limits: {rate: {per_source: 2, burst: 3}, max_calls: 100, retry_after: 9}\n"
    with IvrServeProcess(tmp_path, config_extra=extra) as server, SipClient() as client:
        requests = [invite(server.address, client.port, to_user="flood", rtp_port=4000 + 2 * i) for i in range(15)]
        for request in requests:
            client.send(request, server.address)
        finals: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 15  # the loop ends once every final is in
        while len(finals) < len(requests) and time.monotonic() < deadline:
            data = client.receive(0.5)
            if data and data.startswith(b"SIP/2.0 ") and data[8:9] != b"1":
                finals[(header_of(data, "Call-ID") or "").encode()] = data
        refused = [r for r in finals.values() if status_of(r) == 503]
        assert len(refused) >= 10, [status_of(r) for r in finals.values()]
        assert all(header_of(r, "Retry-After") == "9" for r in refused)
        assert server.alive()
        # Another source (another host: the limit is per host, since ports are free to vary) is not
        # punished for the flood.
        with SipClient("127.0.0.2") as other:
            ok = other_final = _final(server, other, invite(server.address, other.port, to_user="flood",
                                                            local_host="127.0.0.2"))
            assert status_of(other_final) == 200, ok


# --- size limits and slow connections -------------------------------------------------------------


def _tcp_closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(70000)
            if not data:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def test_oversized_tcp_message_is_refused(tmp_path: Path) -> None:
    with IvrServeProcess(tmp_path) as server:
        with socket.create_connection(server.address, 3) as sock:
            body = "a=x-pad:" + "x" * 70_000 + "\r\n"
            sock.sendall(invite(server.address, sock.getsockname()[1], body=body))
            assert _tcp_closed_within(sock, 3), "a 70 KB message must close the connection"
        with socket.create_connection(server.address, 3) as sock:
            sock.sendall(b"INVITE sip:ivr@127.0.0.1 SIP/2.0\r\nX-Long: " + b"y" * 70_000)
            assert _tcp_closed_within(sock, 3), "an endless header section must close the connection"
        server.wait_ready(3)


def test_largest_udp_datagram_does_not_hurt(tmp_path: Path) -> None:
    """A UDP datagram cannot exceed 65 507 octets on IPv4, below the 64 KiB limit: the biggest one
    possible is answered or dropped, and the server stays up."""
    with IvrServeProcess(tmp_path) as server, SipClient() as client:
        filler = "a=x-pad:" + "x" * 64_000 + "\r\n"
        request = invite(server.address, client.port, body=filler)
        assert len(request) < 65_507
        client.send(request, server.address)
        client.final_response(2.0)
        server.wait_ready(3)


async def _endpoint_with_idle_timeout(seconds: float) -> Endpoint:
    endpoint = Endpoint(EndpointConfig(sip_port=0, tcp_idle_timeout=seconds, rtp_port_range=(40000, 49000)))
    await endpoint.start()
    return endpoint


async def test_idle_tcp_connection_is_closed() -> None:
    endpoint = await _endpoint_with_idle_timeout(1.0)
    try:
        reader, writer = await asyncio.open_connection(*endpoint.local_address)
        data = await asyncio.wait_for(reader.read(100), 4)
        assert data == b"", "an idle connection must be closed after tcp_idle_timeout"
        writer.close()
    finally:
        await endpoint.stop()


async def test_trickling_tcp_connection_is_closed() -> None:
    """Slowloris: one byte every 0.3 s keeps a connection 'active' but never completes a
    message. The whole message must arrive within a bound, not just some byte per interval."""
    endpoint = await _endpoint_with_idle_timeout(1.0)
    try:
        reader, writer = await asyncio.open_connection(*endpoint.local_address)
        message = invite(endpoint.local_address, 5060)
        closed_at = None
        start = asyncio.get_running_loop().time()
        for byte in message[:20]:
            writer.write(bytes([byte]))
            try:
                data = await asyncio.wait_for(reader.read(100), 0.3)
            except asyncio.TimeoutError:
                continue
            if data == b"":
                closed_at = asyncio.get_running_loop().time() - start
                break
        writer.close()
        assert closed_at is not None and closed_at < 5, "a trickled message was never cut off"
    finally:
        await endpoint.stop()


# --- RTP injection through the Endpoint -----------------------------------------------------------


async def test_rtp_from_a_foreign_address_or_ssrc_is_not_heard() -> None:
    """A third party that learns the callee's RTP port sends loud audio with its own SSRC, and
    then spoofs the caller's SSRC from another address: the callee hears only the caller."""
    caller, callee = (Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000))) for _ in range(2))
    await caller.start()
    await callee.start()
    incoming: list[Call] = []

    async def answer(call: Call) -> None:
        incoming.append(call)
        await call.answer()

    callee.on_incoming_call = answer
    try:
        host, port = callee.local_address
        call = await caller.call(f"sip:bob@{host}:{port}")
        remote = incoming[0]
        heard: list[bytes] = []
        remote.on_audio = heard.append
        quiet = np.zeros(8000 * 2, dtype=np.int16)
        call.queue_pcm(quiet.tobytes())
        # the callee latches the caller's address and SSRC
        await wait_for(lambda: remote.rtp.remote_ssrc is not None and heard, message="the callee latched")
        injector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        injector.bind(("127.0.0.2", 0))
        target = ("127.0.0.1", remote.local_rtp_port)
        loud = b"\x80" * 160  # PCMU near full scale
        latched_ssrc = remote.rtp.remote_ssrc
        for seq in range(60):
            ssrc = 0x0BAD0BAD if seq % 2 else latched_ssrc
            injector.sendto(RtpPacket(0, 30000 + seq, seq * 160, ssrc, loud).serialize(), target)
            await asyncio.sleep(0.01)
        injector.close()
        await wait_for(lambda: remote.stats()["rejected"] >= 60 and len(heard) * 160 > 4000,
                       message="every injected packet rejected, 0.5 s heard")
        pcm = np.frombuffer(b"".join(heard), dtype="<i2")
        assert len(pcm) > 4000
        assert int(np.abs(pcm).max()) < 1000, "injected audio reached the callee"
        assert remote.stats()["rejected"] >= 60
        await call.hangup()
    finally:
        await caller.stop()
        await callee.stop()
