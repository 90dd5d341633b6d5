"""The Endpoint on loopback against a hand-driven UDP peer: reject headers, late offer, routing
by host and port."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from simplesip import Call, Endpoint, EndpointConfig
from simplesip.wire.message import Response, parse_message
from simplesip.wire.rtp import RtpPacket
from simplesip.wire.sdp import SessionDescription

SDP_ANSWER = ("v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
              "m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n")


class RawPeer(asyncio.DatagramProtocol):
    """A UDP socket on loopback with a queue of what arrives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls) -> "RawPeer":
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def final_response(self, timeout: float = 10.0) -> Response:
        while True:
            data, _ = await asyncio.wait_for(self.received.get(), timeout)
            message = parse_message(data)
            if isinstance(message, Response) and message.status >= 200:
                return message

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _invite(endpoint: Endpoint, peer: RawPeer, sdp: str = "") -> tuple[bytes, str]:
    host, port = endpoint.local_address
    call_id = f"{uuid.uuid4().hex}@peer"
    content_type = "Content-Type: application/sdp\r\n" if sdp else ""
    data = (f"INVITE sip:bob@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:peer@127.0.0.1>;tag=p1\r\nTo: <sip:bob@{host}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:peer@127.0.0.1:{peer.port}>\r\n"
            f"{content_type}Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
    return data, call_id


def _ack(ok: Response, peer: RawPeer, sdp: str = "") -> bytes:
    content_type = "Content-Type: application/sdp\r\n" if sdp else ""
    return (f"ACK {_contact_uri(ok)} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: {ok.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
            f"Call-ID: {ok.call_id}\r\nCSeq: 1 ACK\r\n{content_type}"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def _contact_uri(response: Response) -> str:
    return (response.headers.get("Contact") or "").strip("<>")


@pytest.fixture
async def callee_and_peer():
    endpoint = Endpoint(EndpointConfig(sip_port=0, username="bob", rtp_port_range=(40000, 49000)))
    await endpoint.start()
    peer = await RawPeer.open()
    yield endpoint, peer
    peer.close()
    await endpoint.stop()


@pytest.mark.parametrize("status, headers, expected", [
    (503, {"Retry-After": "7"}, ("Retry-After", "7")),
    (401, [("WWW-Authenticate", 'Digest realm="ivr.test", nonce="abc", qop="auth"')],
     ("WWW-Authenticate", 'Digest realm="ivr.test", nonce="abc", qop="auth"')),
])
async def test_reject_carries_the_given_headers(callee_and_peer, status, headers, expected):
    endpoint, peer = callee_and_peer
    endpoint.on_incoming_call = lambda call: call.reject(status, headers=headers)
    invite, _ = _invite(endpoint, peer, SDP_ANSWER.format(port=4000))
    peer.send(invite, endpoint.local_address)
    final = await peer.final_response()
    assert final.status == status
    assert final.headers.get(expected[0]) == expected[1]


def _answer_every_call(endpoint: Endpoint) -> list[Call]:
    """Make ``endpoint`` answer each incoming call; the returned list collects them."""
    calls: list[Call] = []

    async def answer(call: Call) -> None:
        calls.append(call)
        await call.answer()

    endpoint.on_incoming_call = answer
    return calls


async def test_late_offer_media_starts_from_the_sdp_in_the_ack(callee_and_peer):
    endpoint, peer = callee_and_peer
    rtp = await RawPeer.open()
    calls = _answer_every_call(endpoint)
    try:
        invite, call_id = _invite(endpoint, peer)  # no SDP: we must offer in the 200
        peer.send(invite, endpoint.local_address)
        ok = await peer.final_response()
        assert ok.status == 200
        offer = SessionDescription.parse(ok.body)
        assert offer.media and offer.media[0].port == calls[0].local_rtp_port
        assert calls[0].rtp is None  # nothing to send to before the answer
        assert calls[0].source == ("127.0.0.1", peer.port)
        peer.send(_ack(ok, peer, SDP_ANSWER.format(port=rtp.port)), endpoint.local_address)
        call = calls[0]
        call.queue_pcm(b"\x00\x10" * 1600)
        data, _ = await asyncio.wait_for(rtp.received.get(), 10)  # our media reaches the ACK's port
        packet = RtpPacket.parse(data)
        assert packet.payload_type == 8 and call.codec == "PCMA"
        assert call.remote_rtp == ("127.0.0.1", rtp.port)
        await call.hangup()
        assert call.end_reason == "local_bye"
    finally:
        rtp.close()


async def test_offerless_reinvite_moves_media_to_the_address_in_its_ack(callee_and_peer):
    """What a PBX does after a transfer: a re-INVITE without SDP, the new media address in the ACK."""
    endpoint, peer = callee_and_peer
    first, second = await RawPeer.open(), await RawPeer.open()
    calls = _answer_every_call(endpoint)
    try:
        invite, _ = _invite(endpoint, peer, SDP_ANSWER.format(port=first.port))
        peer.send(invite, endpoint.local_address)
        ok = await peer.final_response()
        peer.send(_ack(ok, peer), endpoint.local_address)
        call = calls[0]
        call.queue_pcm(b"\x00\x10" * 8000)
        await asyncio.wait_for(first.received.get(), 10)
        reinvite = parse_message(_invite(endpoint, peer)[0])
        for name in ("Call-ID", "To"):
            reinvite.headers.set(name, ok.headers.get(name) or "")
        reinvite.headers.set("CSeq", "2 INVITE")
        peer.send(reinvite.serialize(), endpoint.local_address)
        reoffer = await peer.final_response()
        assert reoffer.status == 200 and b"m=audio" in reoffer.body
        peer.send(_ack(reoffer, peer, SDP_ANSWER.format(port=second.port)).replace(
            b"CSeq: 1 ACK", b"CSeq: 2 ACK"), endpoint.local_address)
        await asyncio.wait_for(second.received.get(), 10)
        assert call.remote_rtp == ("127.0.0.1", second.port)
    finally:
        first.close()
        second.close()


async def test_late_offer_without_an_answer_in_the_ack_is_hung_up(callee_and_peer):
    endpoint, peer = callee_and_peer
    calls = _answer_every_call(endpoint)
    invite, _ = _invite(endpoint, peer)
    peer.send(invite, endpoint.local_address)
    ok = await peer.final_response()
    peer.send(_ack(ok, peer), endpoint.local_address)
    while True:
        data, _ = await asyncio.wait_for(peer.received.get(), 10)
        if data.startswith(b"BYE "):
            break
    await asyncio.wait_for(calls[0].ended.wait(), 10)


async def test_call_to_another_port_on_the_servers_host_goes_direct():
    """The registrar is on 127.0.0.1:<silent port>; bob on 127.0.0.1:<his port> must get the
    INVITE himself, not the server."""
    silent = await RawPeer.open()
    callee = Endpoint(EndpointConfig(sip_port=0, username="bob", rtp_port_range=(40000, 49000)))
    caller = Endpoint(EndpointConfig(sip_port=0, username="alice", server="127.0.0.1",
                                     server_port=silent.port, rtp_port_range=(40000, 49000)))
    await callee.start()
    await caller.start()

    async def answer(call: Call) -> None:
        await call.answer()

    callee.on_incoming_call = answer
    try:
        host, port = callee.local_address
        call = await caller.call(f"sip:bob@{host}:{port}", timeout=3)
        assert call.is_live and silent.received.empty()
        await call.hangup()
    finally:
        await caller.stop()
        await callee.stop()
        silent.close()
