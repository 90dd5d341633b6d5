"""Our own hold and resume (re-INVITE with sendonly / inactive, then sendrecv) between two
Endpoints: both sides' media follows the negotiated directions."""

from __future__ import annotations

import asyncio

import pytest

from simplesip import Call, CallState, Endpoint, EndpointConfig
from simplesip.core.offeranswer import SdpSession


@pytest.fixture
async def connected():
    caller = Endpoint(EndpointConfig(sip_port=0, username="alice", rtp_port_range=(40000, 49000)))
    callee = Endpoint(EndpointConfig(sip_port=0, username="bob", rtp_port_range=(40000, 49000)))
    await caller.start()
    await callee.start()
    incoming: list[Call] = []

    async def on_call(call: Call) -> None:
        incoming.append(call)
        await call.answer()

    callee.on_incoming_call = on_call
    host, port = callee.local_address
    call = await caller.call(f"sip:bob@{host}:{port}")
    yield call, incoming[0]
    await caller.stop()
    await callee.stop()


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_hold_sendonly_keeps_our_audio_flowing_and_resume_restores_both_ways(connected) -> None:
    ours, theirs = connected
    heard: list[bytes] = []
    theirs.on_audio = heard.append
    assert await ours.hold() == 200
    assert ours.held and not ours.on_hold  # we still send (music on hold)...
    assert theirs.on_hold  # ...and the peer, held, does not
    assert b"a=sendonly" in ours.local_sdp
    ours.queue_pcm(b"\x00\x10" * 1600)
    await until(lambda: sum(map(len, heard)) >= 3200)
    assert await ours.resume() == 200
    assert not ours.held and not ours.on_hold and not theirs.on_hold
    assert b"a=sendrecv" in ours.local_sdp
    assert ours.state in (CallState.CONNECTED, CallState.STREAMING)


async def test_hold_inactive_stops_media_both_ways(connected) -> None:
    ours, theirs = connected
    assert await ours.hold("inactive") == 200
    assert ours.on_hold and theirs.on_hold
    with pytest.raises(ValueError):
        await ours.hold("recvonly")


async def test_a_second_reoffer_while_one_is_in_flight_gets_491(connected) -> None:
    ours, _ = connected
    first = asyncio.ensure_future(ours.hold())
    await asyncio.sleep(0)
    assert await ours.resume() == 491
    assert await first == 200


def test_sdp_offers_carry_the_asked_direction() -> None:
    session = SdpSession("127.0.0.1", 4000)
    assert b"a=inactive" in session.offer("inactive").serialize()


async def test_early_media_flows_both_ways_before_the_answer() -> None:
    caller = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000)))
    callee = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000)))
    await caller.start()
    await callee.start()
    incoming: list[Call] = []
    callee.on_incoming_call = incoming.append
    try:
        host, port = callee.local_address
        outgoing = asyncio.ensure_future(caller.call(f"sip:bob@{host}:{port}"))
        await until(lambda: bool(incoming))
        (theirs,) = incoming
        assert await theirs.early_media()
        theirs.queue_pcm(b"\x00\x10" * 4000)  # an announcement before the answer
        await until(lambda: caller.calls and next(iter(caller.calls.values())).stats().get("packets_in", 0) > 10)
        ours = next(iter(caller.calls.values()))
        assert ours.state is CallState.RINGING and not outgoing.done()  # still unanswered
        assert theirs.stats()["packets_in"] > 0  # the caller's stream reaches us too
        await theirs.answer()
        call = await asyncio.wait_for(outgoing, 5)
        assert call is ours and call.state in (CallState.CONNECTED, CallState.STREAMING)
        packets = call.stats()["packets_in"]
        await until(lambda: call.stats()["packets_in"] > packets + 5)  # media goes on after the 200
        await call.hangup()
    finally:
        await caller.stop()
        await callee.stop()
