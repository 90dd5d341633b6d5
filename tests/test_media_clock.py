"""The Endpoint's media clock: 20 ms ticks without drift, catch-up after a stall, and the batched tick."""

from __future__ import annotations

import asyncio
import random
import time
from types import SimpleNamespace

import numpy as np
import pytest

from simplesip.aio.media import FRAME_SAMPLES, MediaClock, run_tick
from simplesip.wire import g711
from tests.helpers.waiting import wait_for


async def test_clock_ticks_every_20ms_without_drift():
    """Every firing runs exactly the ticks due by then (a sleep(0.02) loop with 4 ms of work per
    tick would fall 0.2 s behind a second), never one early. How late firings are on a real
    machine is a benchmark (bench/clock_timing.py), not a unit test: it depends on the load."""
    firings: list[tuple[float, int]] = []  # (the firing's `now`, tick number), one per tick

    def slow_tick(now: float, k: int, send: bool) -> None:
        firings.append((now, k))
        time.sleep(0.004)  # 4 ms of work per tick

    clock = MediaClock(slow_tick)
    clock.start()
    t0 = clock._t0
    await wait_for(lambda: clock.tick_number >= 50, timeout=20, message="50 ticks")
    clock.stop()
    numbers = [k for _, k in firings]
    # in order, none twice; a loaded machine may make the clock shed a tick or two (overload)
    assert numbers == sorted(set(numbers)) and len(numbers) + clock.dropped_ticks == clock.tick_number
    last_of_firing: dict[float, int] = {}
    for now, k in firings:
        assert now >= t0 + k * 0.020 - 0.002, (k, now - t0)  # tick k never runs before its time
        last_of_firing[now] = k
    for now, k in last_of_firing.items():  # ...and no firing leaves a due tick for later
        assert k == int((now - t0) / 0.020 + 1e-6), (k, now - t0)


def test_clock_schedules_tick_k_at_start_plus_k_intervals_however_late_it_fires():
    """No drift by construction: the timer for tick k is t0 + k * 20 ms whatever the lateness of
    the firings before it and however long their ticks ran."""
    clock, loop, fired = _stepped_clock(cost=0.004)
    rng = random.Random(7)
    for _ in range(150):
        when, _ = loop.timer
        assert when == pytest.approx((clock.tick_number + 1) * 0.020, abs=1e-9)
        now = max(loop.now, when + rng.choice([0.0, 0.0, 0.001, 0.007, 0.015, 0.045]))
        loop.fire_at(now)
        assert clock.tick_number == int(now / 0.020 + 1e-6)  # every tick due by then has run
    assert [k for k, _ in fired] == list(range(1, len(fired) + 1)) and clock.dropped_ticks == 0


async def test_clock_runs_every_missed_tick_but_sends_at_most_max_burst_after_a_stall():
    ticks: list[tuple[float, int, bool]] = []
    clock = MediaClock(lambda now, k, send: ticks.append((now, k, send)), max_burst=2)
    clock.start()
    await asyncio.sleep(0.1)
    time.sleep(0.2)  # block the loop for 10 ticks
    await asyncio.sleep(0.005)
    await asyncio.sleep(0.03)
    clock.stop()
    numbers = [k for _, k, _ in ticks]
    assert numbers == list(range(1, len(numbers) + 1))  # none skipped, none twice, in order
    assert clock.catch_up_ticks >= 6 and clock.dropped_ticks == 0
    # Ticks of one firing share its `now`: the stall's firing ran ~10 ticks, only the last 2 sent.
    by_firing: dict[float, list[bool]] = {}
    for now, _, send in ticks:
        by_firing.setdefault(now, []).append(send)
    catch_up = max(by_firing.values(), key=len)
    assert len(catch_up) >= 8
    assert catch_up[-2:] == [True, True] and not any(catch_up[:-2])
    assert all(sum(sends) <= 2 for sends in by_firing.values())


async def test_clock_gives_up_on_ticks_beyond_max_catch_up():
    numbers: list[int] = []
    clock = MediaClock(lambda now, k, send: numbers.append(k), max_burst=2, max_catch_up=4)
    clock.start()
    await asyncio.sleep(0.05)
    time.sleep(0.2)
    await asyncio.sleep(0.01)
    clock.stop()
    assert clock.dropped_ticks >= 5
    assert numbers == sorted(set(numbers))
    assert len(numbers) + clock.dropped_ticks == clock.tick_number


async def test_clock_sheds_ticks_when_they_cost_more_than_real_time():
    """Overload is not a stall: catching up on ticks that each take 30 ms would grow the delay
    without end, so once the backlog stops shrinking the clock drops ticks and stays near time:
    each firing runs only the last ``max_burst`` ticks due, never older ones. (The delay in
    seconds, 30 ms ticks included, is checked on a stepped clock below, without the machine's
    own scheduling delays.)"""
    runs: list[tuple[float, int]] = []  # (the firing's `now`, tick number)
    clock = MediaClock(lambda now, k, send: (time.sleep(0.03), runs.append((now, k))), max_burst=2)
    clock.start()
    t0 = clock._t0
    await wait_for(lambda: clock.overloaded and clock.dropped_ticks > 20 and len(runs) >= 40,
                   timeout=20, message="overloaded, more than 20 ticks dropped")
    clock.stop()
    assert clock.overloaded and clock.dropped_ticks > 20
    assert [k for _, k in runs] == sorted({k for _, k in runs})  # in order, none twice
    # a tick runs at most a couple of ticks late, not seconds: the last ten were each due within
    # max_burst ticks of the firing that ran them
    assert all(0 <= int((now - t0) / 0.020 + 1e-6) - k < 2 for now, k in runs[-10:]), runs[-10:]


async def test_clock_survives_a_failing_tick():
    numbers: list[int] = []

    def tick(now: float, k: int, send: bool) -> None:
        numbers.append(k)
        if k == 2:
            raise RuntimeError("consumer bug")

    clock = MediaClock(tick)
    clock.start()
    await asyncio.sleep(0.15)
    clock.stop()
    assert numbers[:4] == [1, 2, 3, 4]


class FakeSession:
    """Stands in for RtpSession: pull_frame() from a list, build_packet() records payloads."""

    def __init__(self, codec, frames):
        self.codec = codec
        self.is_alaw = codec == "PCMA"
        self.frames = list(frames)
        self.sent: list[bytes] = []
        self.skipped = 0
        self.ticks_skipped = 0
        self.catch_up_pulls = 0
        self.digits = []

    def pull_frame(self, catch_up=False):
        self.catch_up_pulls += catch_up
        silence = g711.ULAW_SILENCE if self.codec == "PCMU" else g711.ALAW_SILENCE
        return self.frames.pop(0) if self.frames else bytes([silence]) * FRAME_SAMPLES

    @property
    def last_dtmf_in(self):
        return 0.0 if self.digits else None  # like RtpSession: set while digits wait

    def pop_dtmf(self, now):
        digits, self.digits = self.digits, []
        return digits

    def skip_frame(self):
        self.skipped += 1

    def skip_tick(self):
        self.ticks_skipped += 1

    def build_packet(self, payload: bytes, marker: bool = False) -> bytes:
        self.sent.append(payload)
        return b"RTP" + payload


class FakeLeg:
    def __init__(self, codec, frames, outbound=None, on_hold=False):
        self.rtp = FakeSession(codec, frames)
        self.rtp_socket = None
        self.dtmf = []
        self.on_hold = on_hold
        self.delivered: list[np.ndarray] = []
        self.packets: list[bytes] = []
        self.outbound = list(outbound or [])

    def send_packet(self, packet):
        self.packets.append(packet)

    def next_outbound_frame(self):
        return self.outbound.pop(0) if self.outbound else None

    def deliver_dtmf(self, digits):
        self.dtmf.extend(digits)

    def deliver_frame(self, pcm):
        self.delivered.append(pcm.copy())


def test_run_tick_decodes_per_codec_and_sends_queued_audio():
    pcm = (np.arange(FRAME_SAMPLES) * 100 - 8000).astype(np.int16)
    ulaw = g711.pcm_to_ulaw(pcm.tobytes())
    alaw = g711.pcm_to_alaw(pcm.tobytes())
    a = FakeLeg("PCMU", [ulaw], outbound=[pcm.tobytes()])
    b = FakeLeg("PCMA", [alaw])
    c = FakeLeg("PCMU", [], on_hold=True)
    a.rtp.digits = [("5", 100)]
    run_tick([a, b, c], None, 0.0)
    np.testing.assert_array_equal(a.delivered[0], np.frombuffer(g711.ulaw_to_pcm(ulaw), "<i2"))
    np.testing.assert_array_equal(b.delivered[0], np.frombuffer(g711.alaw_to_pcm(alaw), "<i2"))
    assert not c.delivered[0].any()  # nothing received: silence
    assert a.rtp.sent == [ulaw]  # the queued frame, encoded in the call's codec
    assert b.rtp.sent == [bytes([g711.ALAW_SILENCE]) * FRAME_SAMPLES]  # nothing queued: silence
    assert c.packets == [] and c.rtp.skipped == 1  # on hold: nothing sent, timestamp moves on
    assert a.dtmf == [("5", 100)] and b.dtmf == []


def test_run_tick_with_on_tick_uses_its_batch():
    a = FakeLeg("PCMU", [bytes([0x80]) * FRAME_SAMPLES])
    b = FakeLeg("PCMA", [])
    seen = {}

    def on_tick(calls, inbound, now, tick):
        seen["calls"] = calls
        seen["tick"] = (now, tick)
        seen["shape"] = inbound.shape
        out = np.zeros_like(inbound)
        out[1] = 1000
        return out

    run_tick([a, b], on_tick, 0.0, tick=7)
    assert seen["calls"] == [a, b] and seen["shape"] == (2, FRAME_SAMPLES)
    assert seen["tick"] == (0.0, 7)  # the clock's time and tick number pass through
    assert a.delivered == []  # on_tick replaces per-call delivery
    assert b.rtp.sent == [g711.pcm_to_alaw(np.full(FRAME_SAMPLES, 1000, np.int16).tobytes())]


def test_catch_up_tick_delivers_inbound_and_sends_nothing():
    pcm = (np.arange(FRAME_SAMPLES) * 50).astype(np.int16)
    ulaw = g711.pcm_to_ulaw(pcm.tobytes())
    a = FakeLeg("PCMU", [ulaw], outbound=[pcm.tobytes()])
    held = FakeLeg("PCMU", [], on_hold=True)
    run_tick([a, held], None, 0.0, send=False)
    np.testing.assert_array_equal(a.delivered[0], np.frombuffer(g711.ulaw_to_pcm(ulaw), "<i2"))
    assert a.rtp.catch_up_pulls == 1  # the jitter buffer is told not to drop anything
    assert a.packets == [] and a.rtp.ticks_skipped == 1  # no packet, timestamp and DTMF move on
    assert a.outbound == [pcm.tobytes()]  # queued audio waits for a sending tick, nothing lost
    assert held.rtp.skipped == 1 and held.rtp.ticks_skipped == 0
    run_tick([a, held], None, 0.02)
    assert a.rtp.sent == [ulaw] and a.rtp.catch_up_pulls == 1


async def test_rtp_leaves_from_the_rtp_port_and_rtcp_from_the_port_above() -> None:
    """Symmetric RTP (RFC 4961): a peer that latches must see our RTP come from the port in our SDP."""
    import socket

    from simplesip.aio.rtpsocket import open_rtp_socket

    rtp, port = await open_rtp_socket("127.0.0.1", (40000, 40998))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    try:
        rtp.sendto(b"rtp", sink.getsockname())
        data, source = sink.recvfrom(100)
        assert (data, source[1]) == (b"rtp", port)
        rtp.send_rtcp(b"rtcp", sink.getsockname())
        data, source = sink.recvfrom(100)
        assert (data, source[1]) == (b"rtcp", port + 1)
    finally:
        sink.close()
        rtp.close()


async def test_drain_reads_every_waiting_packet_without_the_loop() -> None:
    """After a stall the clock reads what waited in the socket itself: asyncio would deliver one
    datagram per socket per loop pass, too late for the catch-up ticks."""
    import socket
    import struct

    from simplesip.aio.rtpsocket import open_rtp_socket
    from simplesip.core.rtpsession import RtpSession

    rtp, port = await open_rtp_socket("127.0.0.1", (42000, 49998))
    session = RtpSession(0, "PCMU", None)
    rtp.session = session
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for k in range(5):
            sender.sendto(struct.pack("!BBHII", 0x80, 0, k, k * 160, 77) + bytes(160), ("127.0.0.1", port))
        time.sleep(0.05)  # the loop is blocked: nothing reads them
        assert rtp.drain() == 5
        assert session.stats()["received"] == 5 and session.stats()["jitter_buffer_ms"] == 100
        assert rtp.drain() == 0
        rtp.close()
        assert rtp.drain() == 0  # a closed socket is left alone
    finally:
        sender.close()
        rtp.close()


class SteppedLoop:
    """Just enough of an event loop for MediaClock: a clock we set, and the one pending timer."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timer = None

    def time(self) -> float:
        return self.now

    def call_at(self, when, callback):
        self.timer = (when, callback)
        return SimpleNamespace(cancel=lambda: None)

    def fire_at(self, now: float) -> None:
        """The loop gets control back at ``now`` and runs the clock's timer (if it is due)."""
        self.now = now
        when, callback = self.timer
        if now >= when:
            callback()


def _stepped_clock(cost: float = 0.0):
    loop = SteppedLoop()
    fired: list[tuple[int, bool]] = []

    def tick(now: float, k: int, send: bool) -> None:
        fired.append((k, send))
        loop.now += cost  # each tick takes this long

    clock = MediaClock(tick, max_burst=2)
    clock.start(loop)
    return clock, loop, fired


def test_a_late_firing_followed_by_a_stall_is_caught_up_not_shed():
    clock, loop, fired = _stepped_clock()
    loop.fire_at(0.020)
    loop.fire_at(0.100)  # 60 ms late under load: 4 ticks due at once
    loop.fire_at(0.400)  # then a 300 ms stall
    loop.fire_at(0.420)
    assert [k for k, _ in fired] == list(range(1, 22))  # every tick ran, in order
    assert not clock.overloaded and clock.dropped_ticks == 0
    assert [k for k, send in fired if not send] == [2, 3] + list(range(6, 19))


def test_sending_tells_a_consumer_without_the_send_argument_which_ticks_send():
    """The batched on_tick is not passed ``send``: it reads ``clock.sending`` (the engine turns it
    into AudioBatch.send so that playback holds its place through a stall's catch-up ticks)."""
    clock, loop, fired = _stepped_clock()
    seen: list[tuple[bool, bool]] = []
    clock.on_tick = lambda now, k, send: seen.append((send, clock.sending))
    loop.fire_at(0.020)
    loop.fire_at(0.200)  # 9 ticks due: 7 catch up without sending, the last 2 send
    assert [send for send, _ in seen] == [True] + [False] * 7 + [True] * 2
    assert all(send == sending for send, sending in seen)
    assert clock.sending  # between firings


def test_sustained_overload_sheds_ticks_and_recovers_when_ticks_get_cheap():
    clock, loop, fired = _stepped_clock(cost=0.030)  # every tick costs 30 ms: more than real time
    for _ in range(12):
        loop.fire_at(max(loop.now, loop.timer[0]))
    assert clock.overloaded and clock.dropped_ticks > 0
    lag = loop.now - clock.tick_number * 0.020
    assert lag < 0.150  # shedding keeps the clock within a few ticks of real time
    loop.fire_at(loop.now)
    clock.on_tick = lambda now, k, send: None  # the load goes away
    loop.fire_at(max(loop.now, loop.timer[0]))
    loop.fire_at(loop.timer[0])
    assert not clock.overloaded


def test_tick_timings_record_how_late_each_firing_was_and_how_long_it_ran():
    clock, loop, _ = _stepped_clock(cost=0.003)  # each tick takes 3 ms
    loop.fire_at(0.020)  # on time: one tick
    loop.fire_at(0.0470)  # 7 ms late: one tick (the next is not due yet)
    loop.fire_at(0.100)  # tick 3 due at 60 ms: 40 ms late; ticks 3-5 are due
    assert clock.lateness.count == clock.tick_duration.count == 3
    assert clock.lateness.counts[0] == 1  # <= 1 ms
    assert clock.lateness.counts[clock.lateness.bounds.index(0.010)] == 1  # 5-10 ms
    assert clock.lateness.counts[clock.lateness.bounds.index(0.050)] == 1  # 20-50 ms
    assert abs(clock.lateness.total - (0.0 + 0.007 + 0.040)) < 1e-9
    # durations: 3 ms, 3 ms and three ticks' worth (9 ms)
    assert clock.tick_duration.counts[clock.tick_duration.bounds.index(0.005)] == 2
    assert clock.tick_duration.counts[clock.tick_duration.bounds.index(0.010)] == 1
    assert clock.tick_duration.cumulative()[-1] == ("+Inf", 3)


class _EchoLeg(FakeLeg):
    """A leg with a real RtpSession: what run_tick sends for it is recorded."""

    def __init__(self, session):
        super().__init__("PCMU", [])
        self.rtp = session


def test_run_tick_groups_real_sessions_by_law_and_follows_a_codec_change():
    from simplesip.core.rtpsession import RtpSession
    from simplesip.wire.rtp import RtpPacket

    legs = [_EchoLeg(RtpSession(pt, codec, ("127.0.0.1", 40000 + pt), rng=random.Random(pt)))
            for pt, codec in ((0, "PCMU"), (8, "PCMA"), (8, "PCMA"))]
    payload = bytes([0x23, 0x45, 0x66, 0x99, 0xAB] * 32)  # codes that survive decode + encode in both laws
    for tick in range(8):
        for i, leg in enumerate(legs):
            data = RtpPacket(leg.rtp.payload_type, tick, tick * 160, 0x100 + i, payload).serialize()
            leg.rtp.receive(data, ("127.0.0.1", 40000 + i), tick * 0.02)
        run_tick(legs, lambda calls, inbound, now, number: inbound, tick * 0.02)
    for leg in legs:  # echoed in each call's own law, whatever the mix in the batch
        assert RtpPacket.parse(leg.packets[-1]).payload == payload
    legs[1].rtp.update(codec="PCMU", payload_type=0)  # re-INVITE: now one A-law call only
    assert [leg.rtp.is_alaw for leg in legs] == [False, False, True]
    run_tick(legs, lambda calls, inbound, now, number: np.full_like(inbound, 1000), 1.0)
    sent = [RtpPacket.parse(leg.packets[-1]).payload for leg in legs]
    assert sent[0] == sent[1] == g711.pcm_to_ulaw(np.full(FRAME_SAMPLES, 1000, np.int16).tobytes())
    assert sent[2] == g711.pcm_to_alaw(np.full(FRAME_SAMPLES, 1000, np.int16).tobytes())
