"""Two Endpoints on the IPv6 loopback (::1), over UDP and TCP: bracketed hosts in what we build
(Via, Contact, Request-URI, From), SDP ``c=IN IP6``, audio both ways, RFC 4733 DTMF, BYE."""

from __future__ import annotations

import asyncio
import socket
import uuid

import numpy as np
import pytest

from simplesip import Call, CallState, Endpoint, EndpointConfig
from simplesip.aio.call import split_target
from simplesip.core.config import UAConfig
from simplesip.core.message_factory import MessageFactory
from simplesip.wire import g711
from simplesip.wire.uri import NameAddr, Via


def test_what_we_build_brackets_an_ipv6_host() -> None:
    factory = MessageFactory(UAConfig(local_host="::1", local_port=5070, username="ivr"))
    via = factory.via("udp", "z9hG4bKx")
    assert via.startswith("SIP/2.0/UDP [::1]:5070;") and Via.parse(via).host == "::1"
    contact = factory.contact("tcp")
    assert contact == "<sip:ivr@[::1]:5070;transport=tcp>"
    assert NameAddr.parse(contact).uri.host == "::1" and NameAddr.parse(contact).uri.port == 5070
    assert factory.aor() == "sip:ivr@[::1]" and factory.target_uri("100") == "sip:100@[::1]"


@pytest.mark.parametrize("target, expected", [
    ("sip:bob@[::1]:5070;transport=tcp", ("bob", "::1", 5070)),
    ("bob@[2001:db8::7]", ("bob", "2001:db8::7", None)),
    ("sip:bob@127.0.0.1:5080", ("bob", "127.0.0.1", 5080)),
])
def test_split_target_reads_bracketed_hosts(target, expected) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_call_over_ipv6_carries_audio_and_dtmf(transport) -> None:
    def config(user: str) -> EndpointConfig:
        return EndpointConfig(local_host="::1", sip_port=0, transports=(transport,), transport=transport,
                              username=user, rtp_port_range=(40000, 49000))

    caller, callee = Endpoint(config("alice")), Endpoint(config("bob"))
    await caller.start()
    await callee.start()
    incoming: list[Call] = []

    async def on_call(call: Call) -> None:
        incoming.append(call)
        await call.answer()

    callee.on_incoming_call = on_call
    try:
        host, port = callee.local_address
        call = await asyncio.wait_for(caller.call(f"sip:bob@[{host}]:{port};transport={transport}"), 5)
        (remote,) = incoming
        assert remote.from_user == "alice" and call.state is CallState.CONNECTED
        heard: list[bytes] = []
        digits: list[str] = []
        remote.on_audio = heard.append
        remote.on_dtmf = lambda digit, source, ms: digits.append(digit)
        noise = np.random.default_rng(6).integers(-8000, 8000, 4000).astype(np.int16)
        call.queue_pcm(noise.tobytes())
        deadline = asyncio.get_running_loop().time() + 5
        expected = g711.decode(g711.encode(noise, call.codec), call.codec)
        while True:  # every sample arrives, in order
            pcm = np.frombuffer(b"".join(heard), dtype="<i2")
            starts = [i for i in range(0, max(0, len(pcm) - len(expected)) + 1, 160)
                      if np.array_equal(pcm[i:i + len(expected)], expected)]
            if starts:
                break
            assert asyncio.get_running_loop().time() < deadline, "the audio did not arrive whole"
            await asyncio.sleep(0.02)
        call.send_dtmf("7#", duration_ms=80)
        while digits != ["7", "#"]:
            assert asyncio.get_running_loop().time() < deadline + 3, digits
            await asyncio.sleep(0.02)
        await call.hangup()
        await asyncio.wait_for(remote.ended.wait(), 3)
        assert remote.end_reason == "remote_bye"
    finally:
        await caller.stop()
        await callee.stop()


async def test_an_ipv4_invite_offering_ipv6_media_gets_ipv6_media_from_the_first_packet() -> None:
    loop = asyncio.get_running_loop()
    endpoint = Endpoint(EndpointConfig(sip_port=0, transports=("udp",), rtp_port_range=(40000, 49000)))
    endpoint.on_incoming_call = lambda call: asyncio.ensure_future(call.answer())
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind(("127.0.0.1", 0))
    sip.setblocking(False)
    rtp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rtp.bind(("::1", 0))
    rtp.setblocking(False)
    await endpoint.start()
    try:
        host, port = endpoint.local_address
        sdp = (f"v=0\r\no=peer 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
               f"m=audio {rtp.getsockname()[1]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        invite = (f"INVITE sip:ivr@{host}:{port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{sip.getsockname()[1]};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
                  f"Max-Forwards: 70\r\nFrom: <sip:peer@127.0.0.1>;tag=p1\r\nTo: <sip:ivr@{host}>\r\n"
                  f"Call-ID: {uuid.uuid4().hex}@peer\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:peer@127.0.0.1:{sip.getsockname()[1]}>\r\nContent-Type: application/sdp\r\n"
                  f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
        await loop.sock_sendto(sip, invite, (host, port))
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sip, 65535), 5)
            if data.startswith(b"SIP/2.0 200"):
                break
        assert b"c=IN IP6 " in data  # our answer is in the family of the offer...
        packet, source = await asyncio.wait_for(loop.sock_recvfrom(rtp, 2048), 5)
        assert packet[0] >> 6 == 2 and ":" in source[0]  # ...and RTP v2 arrives over IPv6
    finally:
        await endpoint.stop()
        sip.close()
        rtp.close()
