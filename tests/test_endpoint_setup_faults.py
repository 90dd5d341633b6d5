"""Every INVITE gets a final response and leaves nothing open, whatever fails before the 200.

A real :class:`Endpoint` on loopback and a bare UDP client sending INVITEs. Faults are injected
at each step between the INVITE and the 200 (the offer's parse, its negotiation, the RTP port,
the answer itself, the application's callback); Hypothesis then mutates offers on the wire. Each
time the caller must get a final response (and no 180 for an offer we could never answer) and
the process must hold exactly the file descriptors it held before.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplesip import Call, Endpoint, EndpointConfig
from tests.helpers.robust_server import SDP_OFFER, SipClient, ack_for, invite, status_of
from tests.helpers.waiting import wait_for

GOOD = SDP_OFFER.format(port=4000)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def exchange(endpoint: Endpoint, body: str, tweak: Callable[[bytes], bytes] | None = None,
                   timeout: float = 5.0) -> list[int]:
    """Send an INVITE offering ``body`` (``tweak`` may alter its bytes) to ``endpoint``; the
    statuses it answers with, up to the final one (which is ACKed, or BYEd after a 2xx's ACK, so
    the call is over when this returns)."""
    with SipClient() as client:
        message = invite(endpoint.local_address, client.port, body=body)
        if tweak is not None:
            message = tweak(message)
        client.send(message, endpoint.local_address)
        statuses: list[int] = []
        final = None
        deadline = asyncio.get_running_loop().time() + timeout
        while final is None and asyncio.get_running_loop().time() < deadline:
            data = await asyncio.to_thread(client.receive, 0.2)
            if data is None or not data.startswith(b"SIP/2.0 "):
                continue
            statuses.append(status_of(data))
            if statuses[-1] >= 200:
                final = data
        if final is not None and statuses[-1] >= 300:
            client.send(ack_for(message, final), endpoint.local_address)
        elif final is not None:
            await _ack_and_bye(client, endpoint, message, final)
    return statuses


async def _ack_and_bye(client: SipClient, endpoint: Endpoint, message: bytes, ok: bytes) -> None:
    from simplesip.wire.message import parse_message

    request, response = parse_message(message), parse_message(ok)
    head = (f"Via: SIP/2.0/UDP 127.0.0.1:{client.port};branch=z9hG4bK{{branch}};rport\r\n"
            f"From: {request.headers.get('From')}\r\nTo: {response.headers.get('To')}\r\n"
            f"Call-ID: {request.headers.get('Call-ID')}\r\nMax-Forwards: 70\r\n")
    contact = response.headers.get("Contact").strip("<>").split(">")[0]
    ack = (f"ACK {contact} SIP/2.0\r\n" + head.format(branch=uuid.uuid4().hex[:10])
           + "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
    bye = (f"BYE {contact} SIP/2.0\r\n" + head.format(branch=uuid.uuid4().hex[:10])
           + "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
    client.send(ack.encode(), endpoint.local_address)
    client.send(bye.encode(), endpoint.local_address)
    await asyncio.to_thread(client.final_response, 3.0)


async def settled(endpoint: Endpoint) -> None:
    """Until the endpoint holds no call (a refused call ends once its response is sent)."""
    await wait_for(lambda: not endpoint.calls, message="the endpoint holding no call")


async def all_closed(before: set, context: str = "") -> None:
    """Until the descriptors open are those of ``before``: a transport closes its socket a loop
    pass after close(), later still on a busy machine; a leaked one never closes."""
    try:
        await wait_for(lambda: open_fds() == before, timeout=5, message="every descriptor closed")
    except AssertionError:
        assert open_fds() == before, context  # shows which are left
        raise


@pytest.fixture
async def endpoint():
    ep = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(42000, 42100)))
    await ep.start()
    answered: list[Call] = []

    async def answer(call: Call) -> None:
        answered.append(call)
        await call.answer()

    ep.on_incoming_call = answer
    yield ep
    await ep.stop()


async def test_a_good_offer_is_answered_and_the_call_leaves_nothing_open(endpoint):
    before = open_fds()
    assert await exchange(endpoint, GOOD) == [100, 180, 200]
    await settled(endpoint)
    await all_closed(before)


async def test_an_offer_cut_short_by_its_content_length_gets_400_before_ringing(endpoint):
    body = GOOD + "a=ptime:20\r\n"  # a Content-Length 4 short leaves "a=ptime:" at the end

    def cut(message: bytes) -> bytes:
        return message.replace(f"Content-Length: {len(body)}".encode(), f"Content-Length: {len(body) - 4}".encode())

    before = open_fds()
    assert await exchange(endpoint, body, cut) == [100, 400]
    await settled(endpoint)
    await all_closed(before)


async def test_an_offer_with_no_codec_of_ours_gets_488_before_ringing(endpoint):
    body = SDP_OFFER.format(port=4000).replace("RTP/AVP 0 101", "RTP/AVP 18").replace(
        "a=rtpmap:0 PCMU/8000\r\n", "a=rtpmap:18 G729/8000\r\n")
    before = open_fds()
    assert await exchange(endpoint, body) == [100, 488]
    await settled(endpoint)
    await all_closed(before)


async def test_no_free_rtp_port_gets_503_and_leaves_nothing_open():
    held = []
    for port in range(42200, 42204):  # every port of the range taken by someone else
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            pass  # taken already: just as good
        held.append(sock)
    ep = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(42200, 42204)))
    ep.on_incoming_call = lambda call: call.answer()
    await ep.start()
    try:
        before = open_fds()
        assert await exchange(ep, GOOD) == [100, 180, 503]
        await settled(ep)
        await all_closed(before)
    finally:
        await ep.stop()
        for sock in held:
            sock.close()


async def test_a_failure_while_answering_gets_500_and_closes_the_rtp_socket(endpoint, monkeypatch):
    def broken(call, params):
        raise RuntimeError("injected fault in media start")

    monkeypatch.setattr(endpoint, "_start_media", broken)
    before = open_fds()
    assert await exchange(endpoint, GOOD) == [100, 180, 500]
    await settled(endpoint)
    await all_closed(before)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_incoming_call_callback_that_raises_gets_500(endpoint, kind):
    def sync_callback(call: Call) -> None:
        raise ValueError("application bug")

    async def async_callback(call: Call) -> None:
        await asyncio.sleep(0)
        raise ValueError("application bug")

    endpoint.on_incoming_call = sync_callback if kind == "sync" else async_callback
    before = open_fds()
    assert await exchange(endpoint, GOOD) == [100, 180, 500]
    await settled(endpoint)
    await all_closed(before)


SDP_LINES = SDP_OFFER.format(port=4000).split("\r\n")[:-1]


@st.composite
def mutated_offers(draw) -> str:
    """The good offer with lines dropped, duplicated, swapped, truncated or sprinkled with junk."""
    lines = list(SDP_LINES)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "cut", "junk", "swap"]))
        if action == "drop" and len(lines) > 1:
            lines.pop(index)
        elif action == "dup":
            lines.insert(index, lines[index])
        elif action == "cut":
            lines[index] = lines[index][: draw(st.integers(0, max(0, len(lines[index]) - 1)))]
        elif action == "junk":
            lines[index] += draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8))
        elif action == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
    return "\r\n".join(lines) + "\r\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated_offers())
def test_mutated_offers_over_the_wire_always_get_a_final_response_and_leak_nothing(body):
    async def run() -> None:
        ep = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(42300, 42400)))
        ep.on_incoming_call = lambda call: call.answer()
        await ep.start()
        try:
            before = open_fds()
            statuses = await exchange(ep, body)
            assert statuses and statuses[0] == 100 and statuses[-1] >= 200, (statuses, body)
            if statuses[-1] in (400, 488):  # refused offers are refused before ringing
                assert 180 not in statuses, (statuses, body)
            assert statuses[-1] in (200, 400, 488), (statuses, body)
            await settled(ep)
            await all_closed(before, body)
        finally:
            await ep.stop()

    asyncio.run(run())
