"""Two Endpoints on loopback, in one event loop: calls, media both ways, DTMF, hangup paths."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from simplesip import Call, CallError, CallState, Endpoint, EndpointConfig
from simplesip.wire import g711
from tests.helpers.waiting import wait_for


def _config(**kw) -> EndpointConfig:
    return EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000), **kw)


@pytest.fixture
async def pair():
    caller = Endpoint(_config(username="alice"))
    callee = Endpoint(_config(username="bob"))
    await caller.start()
    await callee.start()
    yield caller, callee
    await caller.stop()
    await callee.stop()


def _uri(ep: Endpoint, user: str = "bob") -> str:
    host, port = ep.local_address
    return f"sip:{user}@{host}:{port}"


def _answer_all(callee: Endpoint, sink: list[Call]):
    async def on_call(call: Call) -> None:
        sink.append(call)
        await call.answer()
    callee.on_incoming_call = on_call


async def test_call_answer_audio_both_ways_and_bye(pair):
    caller, callee = pair
    incoming: list[Call] = []
    _answer_all(callee, incoming)
    heard_by_callee: list[bytes] = []

    call = await caller.call(_uri(callee), headers={"X-Test": "yes"})
    assert call.state is CallState.CONNECTED and call.direction == "outbound"
    (remote,) = incoming
    assert remote.from_user == "alice" and remote.to_user == "bob"
    assert remote.headers.get("X-Test") == "yes"
    remote.on_audio = heard_by_callee.append

    noise = np.random.default_rng(1).integers(-8000, 8000, 8000).astype(np.int16)  # 1 s, no period
    call.queue_pcm(noise.tobytes())
    await wait_for(lambda: call.state is CallState.STREAMING and remote.state is CallState.STREAMING)
    await wait_for(lambda: call.queued_audio_bytes == 0)
    expected = g711.decode(g711.encode(noise, call.codec), call.codec)
    sent = [expected[i:i + 160].astype("<i2").tobytes() for i in range(0, len(expected), 160)]
    # the jitter buffer delay: until the last frame sent has been heard (then check all of it)
    await wait_for(lambda: sent[-1] in heard_by_callee, message="the last frame heard")
    heard = list(heard_by_callee)
    # every sample arrives exactly as G.711 encodes/decodes it, each frame once and in order...
    assert [heard.count(frame) for frame in sent] == [1] * len(sent)
    positions = [heard.index(frame) for frame in sent]
    assert positions == sorted(positions)
    # ...and with no gap, unless the loop stalled: the caller's clock then skips the packets of
    # the overdue ticks (a gap, not a burst: simplesip.aio.media) and sends the audio after it
    gap = positions[-1] - positions[0] - (len(sent) - 1)
    assert gap <= caller.media_clock.catch_up_ticks, (gap, caller.media_clock.catch_up_ticks)
    assert call.stats()["packets_out"] > 40 and remote.stats()["packets_in"] > 40

    await call.hangup()
    await asyncio.wait_for(remote.ended.wait(), 10)
    assert call.end_reason == "local_bye" and remote.end_reason == "remote_bye"
    assert not caller.calls and not callee.calls


async def test_rfc4733_dtmf_arrives_once_per_digit(pair):
    caller, callee = pair
    incoming: list[Call] = []
    _answer_all(callee, incoming)
    call = await caller.call(_uri(callee))
    digits: list[tuple[str, str, int]] = []
    incoming[0].on_dtmf = lambda d, src, ms: digits.append((d, src, ms))
    call.send_dtmf("159#", duration_ms=80)
    await wait_for(lambda: len(digits) == 4)
    await asyncio.sleep(0.3)
    assert [d for d, _, _ in digits] == ["1", "5", "9", "#"]
    assert all(src == "rfc4733" and 60 <= ms <= 120 for _, src, ms in digits)
    await call.hangup()


async def test_reject_gives_call_error_with_status(pair):
    caller, callee = pair
    callee.on_incoming_call = lambda call: asyncio.ensure_future(call.reject(486))
    with pytest.raises(CallError) as err:
        await caller.call(_uri(callee))
    assert err.value.status == 486
    assert not caller.calls


async def test_no_handler_rejects_480(pair):
    caller, callee = pair
    with pytest.raises(CallError) as err:
        await caller.call(_uri(callee))
    assert err.value.status == 480


async def test_cancel_before_answer(pair):
    caller, callee = pair
    ringing: list[Call] = []
    callee.on_incoming_call = ringing.append  # never answers
    task = asyncio.ensure_future(caller.call(_uri(callee)))
    await wait_for(lambda: bool(ringing))
    await wait_for(lambda: any(c.state is CallState.RINGING for c in caller.calls.values()))
    (outgoing,) = caller.calls.values()
    await outgoing.hangup()
    with pytest.raises(CallError) as err:
        await task
    assert err.value.status == 487
    await asyncio.wait_for(ringing[0].ended.wait(), 10)
    assert ringing[0].end_reason == "cancelled"


async def test_call_timeout_cancels(pair):
    caller, callee = pair
    callee.on_incoming_call = lambda call: None
    with pytest.raises(CallError) as err:
        await caller.call(_uri(callee), timeout=0.5)
    assert err.value.status == 408
    await wait_for(lambda: not callee.calls)


async def test_on_tick_batches_every_call(pair):
    caller, callee = pair
    incoming: list[Call] = []
    _answer_all(callee, incoming)
    batches: list[int] = []

    def on_tick(calls, inbound, now, tick):
        batches.append(len(calls))
        assert inbound.shape == (len(calls), 160) and inbound.dtype == np.int16
        return np.full((len(calls), 160), 500, dtype=np.int16)

    callee.on_tick = on_tick
    calls = [await caller.call(_uri(callee)) for _ in range(3)]
    heard: list[bytes] = []
    calls[2].on_audio = heard.append
    await wait_for(lambda: len(heard) > 5)
    assert max(batches) == 3
    level = np.frombuffer(heard[-1], dtype="<i2")
    assert abs(int(np.median(level)) - 500) < 40  # G.711 quantisation of the constant
    await asyncio.gather(*(c.hangup() for c in calls))


async def test_stop_hangs_up_every_call(pair):
    caller, callee = pair
    incoming: list[Call] = []
    _answer_all(callee, incoming)
    call = await caller.call(_uri(callee))
    await caller.stop()
    await asyncio.wait_for(incoming[0].ended.wait(), 10)
    assert incoming[0].end_reason == "remote_bye" and call.ended.is_set()
    assert not caller.running


async def test_call_over_tcp():
    callee = Endpoint(_config(transport="tcp"))
    caller = Endpoint(_config(transport="tcp"))
    async with callee, caller:
        incoming: list[Call] = []
        _answer_all(callee, incoming)
        call = await caller.call(_uri(callee) + ";transport=tcp")
        assert caller._transport.tcp_connection_count == 1
        await call.hangup()
        await asyncio.wait_for(incoming[0].ended.wait(), 10)


async def test_register_without_server_is_a_value_error(pair):
    with pytest.raises(ValueError):
        await pair[0].register()


async def test_register_to_a_silent_server_times_out_with_connection_error():
    import socket

    from simplesip import ConnectionError

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        endpoint = Endpoint(_config(username="alice", password="pw", server="127.0.0.1",
                                    server_port=silent.getsockname()[1], register_timeout=0.5))
        async with endpoint:
            with pytest.raises(ConnectionError):
                await endpoint.register()
            assert silent.recv(4096).startswith(b"REGISTER ")
            assert not endpoint.registered
