"""Jitter buffer and receive statistics under loss, reordering, duplication, wrap and odd ptimes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplesip.core.jitter import JitterBuffer, conceal
from simplesip.core.rtpstats import ReceiveStats, SequenceUnwrapper
from simplesip.wire import g711


def _samples(count: int, start: int = 0) -> bytes:
    """A recognisable 'audio' stream: sample n is n mod 251 (a prime, so frames never repeat)."""
    return bytes((start + n) % 251 for n in range(count))


def _stream(ptime_ms: int, packets: int, seq0: int = 1000, ts0: int = 5000) -> list[tuple[int, int, bytes]]:
    size = 8 * ptime_ms
    return [
        ((seq0 + i) & 0xFFFF, (ts0 + i * size) & 0xFFFFFFFF, _samples(size, i * size))
        for i in range(packets)
    ]


Arrival = tuple[float, tuple[int, int, bytes]]  # (arrival time, (seq, timestamp, payload))


def _play(buffer: JitterBuffer, arrivals: list[Arrival], ticks: int) -> list[bytes | None]:
    """Push packets when their arrival time comes, pop once per 20 ms tick."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    out, i = [], 0
    for tick in range(ticks):
        now = tick * 0.020
        while i < len(arrivals) and arrivals[i][0] <= now + 1e-9:
            seq, ts, payload = arrivals[i][1]
            buffer.push(seq, ts, payload, arrivals[i][0])
            i += 1
        out.append(buffer.pop())
    return out


def _paced(packets, ptime_ms: int) -> list[tuple[float, tuple[int, int, bytes]]]:
    return [(i * ptime_ms / 1000, p) for i, p in enumerate(packets)]


def _started(frames: list[bytes | None]) -> list[bytes | None]:
    first = next(i for i, f in enumerate(frames) if f is not None)
    return frames[first:]


def test_in_order_stream_comes_out_whole_after_prefill() -> None:
    buffer = JitterBuffer(target_ms=60)
    frames = _play(buffer, _paced(_stream(20, 50), 20), 60)
    assert frames[:2] == [None, None]  # 40 ms of prefill, played from the third tick
    played = _started(frames)[:50]
    assert all(f is not None for f in played)
    assert b"".join(played) == _samples(50 * 160)  # type: ignore[arg-type]
    assert buffer.stats.as_dict()["lost"] == 0


def test_reordered_packets_are_put_back_in_order() -> None:
    packets = _stream(20, 40)
    arrivals = _paced(packets, 20)
    for i in range(3, 38, 4):  # packet i arrives 25 ms late, after i+1
        arrivals[i] = (arrivals[i][0] + 0.025, arrivals[i][1])
    buffer = JitterBuffer(target_ms=60)
    played = _started(_play(buffer, arrivals, 50))[:40]
    assert b"".join(played) == _samples(40 * 160)  # type: ignore[arg-type]
    assert buffer.stats.late == 0 and buffer.stats.lost == 0


def test_duplicates_are_dropped_and_counted() -> None:
    packets = _stream(20, 30)
    arrivals = _paced(packets, 20) + [(i * 0.020 + 0.005, packets[i]) for i in range(0, 30, 3)]
    buffer = JitterBuffer()
    played = _started(_play(buffer, arrivals, 40))[:30]
    assert b"".join(played) == _samples(30 * 160)  # type: ignore[arg-type]
    assert buffer.stats.duplicates == 10 and buffer.stats.received == 30


def test_lost_packet_is_a_none_in_its_place() -> None:
    packets = _stream(20, 30)
    del packets[10]
    buffer = JitterBuffer(target_ms=60)
    arrivals = [((ts - 5000) / 8000, (seq, ts, payload)) for seq, ts, payload in packets]  # sent on time
    played = _started(_play(buffer, arrivals, 40))[:30]
    assert [i for i, f in enumerate(played) if f is None] == [10]
    assert played[11] == _samples(160, 11 * 160)
    assert buffer.stats.lost == 1 and buffer.stats.expected == 30


def test_too_late_packet_is_dropped_and_counted() -> None:
    packets = _stream(20, 30)
    arrivals = _paced(packets, 20)
    arrivals[10] = (arrivals[10][0] + 0.300, arrivals[10][1])  # far beyond the 60 ms buffer
    buffer = JitterBuffer(target_ms=60)
    played = _started(_play(buffer, arrivals, 40))
    assert played[10] is None and played[11] == _samples(160, 11 * 160)
    assert buffer.stats.late == 1


def test_sequence_and_timestamp_wrap_around() -> None:
    packets = _stream(20, 40, seq0=65530, ts0=2**32 - 7 * 160)
    buffer = JitterBuffer()
    played = _started(_play(buffer, _paced(packets, 20), 50))[:40]
    assert b"".join(played) == _samples(40 * 160)  # type: ignore[arg-type]
    assert buffer.stats.highest_sequence == 65530 + 39 and buffer.stats.lost == 0


@pytest.mark.parametrize("ptime_ms", [10, 30, 40])
def test_peer_ptime_is_split_or_joined_into_20ms_frames(ptime_ms: int) -> None:
    count = 1200 // ptime_ms  # 1.2 s of audio
    buffer = JitterBuffer(target_ms=60)
    frames = _play(buffer, _paced(_stream(ptime_ms, count), ptime_ms), 80)
    played = _started(frames)[:60]
    assert all(f is not None and len(f) == 160 for f in played)
    assert b"".join(played) == _samples(60 * 160)  # type: ignore[arg-type]


def test_timestamp_jump_starts_a_new_timeline() -> None:
    packets = _stream(20, 20)
    # Same sequence numbering, but the sender's timestamp leaps 100 s (a re-originated stream).
    packets += [(1020 + i, 5000 + 800_000 + i * 160, _samples(160, 999 + i)) for i in range(20)]
    buffer = JitterBuffer(target_ms=60)
    played = _started(_play(buffer, _paced(packets, 20), 50))
    # Spliced seamlessly: 40 frames in a row, not a pause and certainly not 100 s of "loss".
    assert all(f is not None for f in played[:40])
    assert played[20] == _samples(160, 999)


def test_silence_gap_does_not_add_delay() -> None:
    # Talk spurt, 500 ms of silence suppression (timestamps keep counting), next spurt.
    first = _stream(20, 20)
    second = [(1020 + i, 5000 + (45 + i) * 160, _samples(160, 7 + i)) for i in range(20)]
    arrivals = _paced(first, 20) + [((45 + i) * 0.020, p) for i, p in enumerate(second)]
    buffer = JitterBuffer(target_ms=60)
    frames = _play(buffer, arrivals, 80)
    resumed = next(i for i in range(30, 80) if frames[i] is not None)
    assert resumed <= 45 + 3  # played out right after its prefill, not 25 frames late
    assert frames[resumed] == _samples(160, 7)


def test_fast_sender_clock_is_capped() -> None:
    packets = _stream(20, 300)
    arrivals = [(i * 0.019, p) for i, p in enumerate(packets)]  # 5 % fast
    buffer = JitterBuffer(target_ms=60, max_extra_ms=100)
    _play(buffer, arrivals, 300)
    assert buffer.depth_ms <= 60 + 100


def test_slow_sender_clock_rebuffers_instead_of_dropping() -> None:
    packets = _stream(20, 200)
    arrivals = [(i * 0.021, p) for i, p in enumerate(packets)]  # 5 % slow
    buffer = JitterBuffer(target_ms=60)
    played = [f for f in _play(buffer, arrivals, 260) if f is not None]
    assert b"".join(played) == _samples(len(played) * 160)  # nothing skipped or dropped
    assert len(played) >= 195 and buffer.stats.late == 0


def test_reset_forgets_the_old_stream() -> None:
    buffer = JitterBuffer()
    _play(buffer, _paced(_stream(20, 10), 20), 10)
    buffer.reset()
    assert buffer.pop() is None and buffer.stats.received == 0 and not buffer.started


def test_unwrapper_handles_reordering_across_the_wrap() -> None:
    unwrap = SequenceUnwrapper(16)
    assert [unwrap.extend(v) for v in (65534, 65535, 1, 0, 2)] == [65534, 65535, 65537, 65536, 65538]


def test_receive_stats_jitter_follows_rfc3550_a8() -> None:
    stats = ReceiveStats(clock_rate=8000)
    # Transit alternates by 80 timestamp units (10 ms): |D| is 80 after the first packet.
    for i in range(200):
        stats.record(i, i * 160, i * 0.020 + (0.010 if i % 2 else 0.0))
    assert stats.jitter == pytest.approx(80, rel=1e-3)
    assert stats.jitter_ms == pytest.approx(10, rel=1e-3)
    j = 0.0
    stats2 = ReceiveStats()
    for i, delay in enumerate([0, 0.005, 0.001, 0.030, 0.002]):
        stats2.record(i, i * 160, i * 0.020 + delay)
        if i:
            prev = [0, 0.005, 0.001, 0.030, 0.002][i - 1]
            j += (abs((delay - prev) * 8000) - j) / 16
    assert stats2.jitter == pytest.approx(j)


def test_receive_stats_loss_fraction_and_interval() -> None:
    stats = ReceiveStats()
    for seq in [0, 1, 2, 4, 5, 8, 9]:
        stats.record(seq, seq * 160, seq * 0.02)
    assert (stats.expected, stats.received, stats.lost) == (10, 7, 3)
    assert stats.fraction_lost == pytest.approx(0.3)
    assert stats.interval_fraction_lost() == (3 << 8) // 10
    for seq in range(10, 20):
        stats.record(seq, seq * 160, seq * 0.02)
    assert stats.interval_fraction_lost() == 0  # nothing lost since the last report
    assert set(stats.as_dict()) >= {"received", "expected", "lost", "fraction_lost", "jitter", "jitter_ms",
                                     "late", "duplicates"}


def test_receive_stats_restart_on_sequence_jump() -> None:
    stats = ReceiveStats()
    for seq in range(10):
        stats.record(seq, seq * 160, 0)
    assert stats.record(40000, 0, 0) is None  # a lone stray is not believed...
    assert stats.lost == 0 and stats.received == 10 and stats.discarded == 1
    stats.record(40001, 160, 0)  # ...but its successor next means the sender restarted
    stats.record(40002, 320, 0)
    assert (stats.lost, stats.received, stats.expected, stats.base_sequence) == (0, 2, 2, 40001)


def test_conceal_repeats_attenuated_then_falls_silent() -> None:
    pcm = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
    for codec in ("PCMU", "PCMA"):
        frame = g711.encode(pcm, codec).tobytes()
        energies = []
        for lost in (1, 2, 3):
            concealed = g711.decode(np.frombuffer(conceal(frame, codec, lost), np.uint8), codec)
            energies.append(np.abs(concealed.astype(int)).mean())
        assert energies[0] > energies[1] > energies[2] > 0
        assert energies[0] == pytest.approx(np.abs(pcm).mean() / 2, rel=0.1)
        silence = bytes([g711.silence_byte(codec)]) * 160
        assert conceal(frame, codec, 4) == silence
        assert conceal(None, codec, 1) == silence


# --- deep buffers: a stalled consumer catches up, a fast sender is trimmed a frame at a time ---

def _quiet_and_loud(count: int) -> list[tuple[int, int, bytes]]:
    """A stream alternating 4 loud frames and 1 silent frame (0xFF: a u-law zero)."""
    loud = _stream(20, count)
    return [(seq, ts, b"\xff" * 160 if i % 5 == 4 else payload) for i, (seq, ts, payload) in enumerate(loud)]


def test_stalled_consumer_catching_up_loses_nothing() -> None:
    packets = _stream(20, 40)
    buffer = JitterBuffer(target_ms=60, max_extra_ms=100)
    out: list[bytes | None] = []
    for i, (seq, ts, payload) in enumerate(packets[:5]):
        buffer.push(seq, ts, payload, i * 0.02)
        out.append(buffer.pop())
    # The consumer stalls 600 ms while 30 packets arrive: 33 frames deep, far past target + 100 ms.
    for seq, ts, payload in packets[5:35]:
        buffer.push(seq, ts, payload, 0.7)
    assert buffer.depth_ms > 160 + 400
    out += [buffer.pop(catch_up=True) for _ in range(30)]  # the ticks it missed
    for i, (seq, ts, payload) in enumerate(packets[35:], start=35):
        buffer.push(seq, ts, payload, i * 0.02)
        out.append(buffer.pop())
    out += [buffer.pop() for _ in range(3)]
    played = [f for f in out if f is not None]
    assert b"".join(played) == _samples(40 * 160)  # every frame, once, in order
    assert buffer.drift_dropped == 0


def test_fast_sender_drops_quiet_frames_one_at_a_time() -> None:
    packets = _quiet_and_loud(300)
    arrivals = [(i * 0.019, p) for i, p in enumerate(packets)]  # 5 % fast
    buffer = JitterBuffer(target_ms=60, max_extra_ms=100)
    frames = _play(buffer, arrivals, 300)
    played = [f for f in frames if f is not None]
    assert buffer.drift_dropped > 0 and buffer.depth_ms <= 160 + 20
    loud = [payload for _, _, payload in packets if payload != b"\xff" * 160]
    assert [f for f in played if f != b"\xff" * 160] == loud[:len([f for f in played if f != b"\xff" * 160])]
    assert buffer.stats.late == 0  # trimming never makes a packet arrive "late"


def test_fast_sender_without_silence_drops_isolated_speech_frames() -> None:
    packets = _stream(20, 250)  # _samples repeats after 251 frames: keep them all distinct
    arrivals = [(i * 0.019, p) for i, p in enumerate(packets)]  # 5 % fast, never quiet
    buffer = JitterBuffer(target_ms=60, max_extra_ms=100, drift_patience=10)
    played = [f for f in _play(buffer, arrivals, 250) if f is not None]
    index = {_samples(160, i * 160): i for i in range(250)}
    numbers = [index[f] for f in played]
    skips = [b - a - 1 for a, b in zip(numbers, numbers[1:])]
    assert max(skips) == 1  # one 20 ms frame at a time, never a 100 ms cut
    assert all(s in (0, 1) for s in skips) and sum(skips) == buffer.drift_dropped > 0
    gaps = [i for i, s in enumerate(skips) if s]
    assert min(b - a for a, b in zip(gaps, gaps[1:])) >= 10  # at most one per drift_patience pops


def test_buffer_of_a_consumer_that_sheds_ticks_stays_bounded() -> None:
    packets = _stream(20, 250)
    buffer = JitterBuffer(target_ms=60, max_extra_ms=100)
    # An overloaded consumer pops once per 100 ms while a packet arrives every 20 ms.
    for i, (seq, ts, payload) in enumerate(packets):
        buffer.push(seq, ts, payload, i * 0.02)
        if i % 5 == 0:
            buffer.pop()
    assert buffer.depth_ms <= 4 * 160 + 20


# --- the in-order path of push() behaves exactly like the general one ---------------------------

class _GeneralPathStats(ReceiveStats):
    """ReceiveStats that never knows the next sequence number: every packet takes the general
    accounting of record(), and a JitterBuffer holding it never takes its in-order path."""

    next_sequence = property(lambda self: -1, lambda self, value: None)  # type: ignore[assignment]


def _general_path_only(buffer: JitterBuffer) -> JitterBuffer:
    buffer.stats = _GeneralPathStats(buffer.stats.clock_rate)
    return buffer


def _observable(buffer: JitterBuffer) -> tuple:
    stats = buffer.stats
    return (stats.as_dict(), stats.jitter, stats.highest_sequence, stats.base_sequence,
            stats.discarded, buffer.depth_ms, buffer.drift_dropped, buffer.started)


# Mostly runs of in-order 20 ms packets (the path's case), broken by what a network and a
# sender do: loss, reordering, duplicates, sequence and timestamp jumps, odd packet sizes, wrap.
_disturbances = st.sampled_from(["none", "none", "none", "lose", "swap", "duplicate", "seq_jump",
                                 "ts_jump", "ts_odd", "short", "long", "restart"])
_runs = st.lists(st.tuples(st.integers(1, 25), _disturbances, st.integers(0, 3)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(runs=_runs, seq0=st.integers(0, 0xFFFF), ts0=st.integers(0, 0xFFFFFFFF),
       pops=st.lists(st.integers(0, 2), min_size=1, max_size=8), catch_up=st.booleans())
def test_in_order_path_matches_the_general_path(runs, seq0, ts0, pops, catch_up) -> None:
    fast = JitterBuffer(target_ms=60, max_extra_ms=60)
    general = _general_path_only(JitterBuffer(target_ms=60, max_extra_ms=60))
    packets: list[tuple[int, int, bytes]] = []
    seq, ts = seq0, ts0
    for count, disturbance, extra in runs:
        for _ in range(count):
            packets.append((seq & 0xFFFF, ts & 0xFFFFFFFF, _samples(160, seq)))
            seq, ts = seq + 1, ts + 160
        if disturbance == "lose":
            seq, ts = seq + 1 + extra, ts + 160 * (1 + extra)
        elif disturbance == "swap" and len(packets) > 1:
            packets[-1], packets[-2] = packets[-2], packets[-1]
        elif disturbance == "duplicate" and packets:
            packets.append(packets[-1 - min(extra, len(packets) - 1)])
        elif disturbance == "seq_jump":
            seq += 3001 + extra  # beyond MAX_DROPOUT: believed only when the next one follows
        elif disturbance == "ts_jump":
            ts += 160 * (200 + extra)  # past max_jump_ms: a new timeline
        elif disturbance == "ts_odd":
            ts += 80 + extra  # the stream leaves the frame grid
        elif disturbance in ("short", "long"):
            size = 80 if disturbance == "short" else 320
            packets.append((seq & 0xFFFF, ts & 0xFFFFFFFF, _samples(size, seq)))
            seq, ts = seq + 1, ts + size
        elif disturbance == "restart":
            seq, ts = seq + 20000, ts + 12345
    for i, (packet_seq, packet_ts, payload) in enumerate(packets):
        now = i * 0.020 + (i % 3) * 0.004  # some jitter, so the A.8 estimate moves
        accepted = fast.push(packet_seq, packet_ts, payload, now)
        assert accepted == general.push(packet_seq, packet_ts, payload, now)
        for _ in range(pops[i % len(pops)]):
            assert fast.pop(catch_up) == general.pop(catch_up)
        assert _observable(fast) == _observable(general)


def test_in_order_stream_across_both_wraps_takes_the_in_order_path() -> None:
    buffer = JitterBuffer(target_ms=60)
    general_pushes = []
    original = buffer._push_any
    def counting(*args):
        general_pushes.append(args[0])
        return original(*args)

    buffer._push_any = counting  # type: ignore[method-assign]
    packets = _stream(20, 40, seq0=0xFFF0, ts0=0xFFFFFFFF - 160 * 5 + 1)
    frames = _play(buffer, _paced(packets, 20), 45)
    assert general_pushes == [0xFFF0]  # only the first packet: it sets the timeline up
    assert b"".join(_started(frames)[:40]) == b"".join(p for _, _, p in packets)  # type: ignore[misc]
    assert buffer.stats.highest_sequence == 0xFFF0 + 39 and buffer.stats.lost == 0


@pytest.mark.parametrize("back_ms", [20, 100, 1000, 1990, 5000])
def test_backward_timestamp_jump_starts_a_new_timeline(back_ms: int) -> None:
    packets = _stream(20, 20)
    # The sequence numbers go on, the timestamps step back (a media server switching sources
    # behind one SSRC): the new audio follows what is buffered, none of it is late.
    restart = 5000 + 20 * 160 - back_ms * 8
    packets += [(1020 + i, restart + i * 160, _samples(160, 999 + i)) for i in range(20)]
    buffer = JitterBuffer(target_ms=60)
    played = _started(_play(buffer, _paced(packets, 20), 50))
    assert played[:40] == [_samples(160, i * 160) for i in range(20)] + [
        _samples(160, 999 + i) for i in range(20)]
    assert buffer.stats.late == 0


def test_reordered_packet_after_a_backward_jump_still_finds_its_place() -> None:
    packets = _stream(20, 10)
    jumped = [(1010 + i, 5000 + i * 160, _samples(160, 500 + i)) for i in range(10)]  # back 200 ms
    jumped[2], jumped[3] = jumped[3], jumped[2]
    buffer = JitterBuffer(target_ms=60)
    played = _started(_play(buffer, _paced(packets + jumped, 20), 40))
    assert played[10:20] == [_samples(160, 500 + i) for i in range(10)]


def test_first_packet_arriving_after_the_second_before_playout_is_kept() -> None:
    first, second, *rest = _stream(20, 10)
    buffer = JitterBuffer(target_ms=60)
    assert buffer.push(*second, 0.0)
    assert buffer.pop() is None  # still filling
    assert buffer.push(*first, 0.015)
    for i, packet in enumerate(rest):
        buffer.push(*packet, 0.02 * (i + 1))
    frames = [buffer.pop() for _ in range(10)]
    assert frames == [_samples(160, i * 160) for i in range(10)]
    assert buffer.stats.late == 0


def test_defaults_and_small_settings() -> None:
    buffer = JitterBuffer()
    assert (buffer.target_frames, buffer.max_frames, buffer.max_jump_frames, buffer.drift_patience) == (3, 8, 100, 10)
    assert type(buffer.max_jump_frames) is int and buffer.codec == "PCMU" and buffer.stats.clock_rate == 8000
    assert JitterBuffer(fill_byte=g711.ALAW_SILENCE).codec == "PCMA"
    assert JitterBuffer(codec="alaw").codec == "PCMA" and JitterBuffer(codec="ulaw").codec == "PCMU"
    tiny = JitterBuffer(target_ms=10, max_extra_ms=10)
    assert (tiny.target_frames, tiny.max_frames) == (1, 2)
    assert tiny.push(1, 0, _samples(160), 0.0)
    assert tiny.pop() == _samples(160)  # one frame is enough to start


def test_empty_late_and_duplicate_packets_are_refused_and_counted() -> None:
    buffer = JitterBuffer(target_ms=20)
    assert buffer.push(1, 0, b"", 0.0) is False
    for seq in range(2, 6):
        assert buffer.push(seq, (seq - 1) * 160, _samples(160, seq), 0.0)
    for _ in range(4):
        buffer.pop()
    assert buffer.push(2, 160, _samples(160), 0.1) is False  # duplicate
    assert buffer.push(0, -160 & 0xFFFFFFFF, _samples(160), 0.1) is False  # late
    assert buffer.push(0xFFFF, -320 & 0xFFFFFFFF, _samples(160), 0.1) is False  # late
    assert buffer.push(1, 0, _samples(160), 0.1) is False  # seen already (it was the empty one)
    assert (buffer.stats.late, buffer.stats.duplicates) == (2, 2)


@pytest.mark.parametrize("sizes", [[161, 159, 160, 1, 319], [7] * 60, [240, 80, 400, 160]])
def test_packets_of_any_size_land_sample_by_sample(sizes: list[int]) -> None:
    buffer = JitterBuffer(target_ms=20)
    stream = _samples(sum(sizes))
    ts, out = 0, []
    for seq, size in enumerate(sizes, start=100):
        assert buffer.push(seq, 9000 + ts, stream[ts:ts + size], 0.0)
        ts += size
    while (frame := buffer.pop()) is not None:
        out.append(frame)
    whole = len(stream) // 160 * 160
    assert b"".join(out)[:whole] == stream[:whole]


def test_a_jump_of_exactly_max_jump_ms_is_a_gap_not_a_new_timeline() -> None:
    buffer = JitterBuffer(target_ms=20, max_extra_ms=1000, max_jump_ms=200)  # 10 frames, no trimming
    buffer.push(1, 0, _samples(160), 0.0)
    assert buffer.pop() == _samples(160)
    buffer.push(2, 11 * 160, _samples(160, 1), 0.02)  # 10 frames after the next one: kept in place
    frames = [buffer.pop() for _ in range(11)]
    assert frames == [None] * 10 + [_samples(160, 1)]
    buffer.push(3, 23 * 160, _samples(160, 2), 0.04)  # 11 frames ahead: a new timeline, no gap
    assert buffer.pop() == _samples(160, 2)


def _frames(count: int, first: int = 0) -> list[tuple[int, int, bytes]]:
    """In-order 20 ms packets of frame indices first..first+count-1 (speech-like, never quiet)."""
    return [(1000 + i, 5000 + i * 160, _samples(160, i * 160)) for i in range(first, first + count)]


def _frame_index(frame: bytes | None) -> int | None:
    return None if frame is None else next(i for i in range(400) if frame == _samples(160, i * 160))


@pytest.mark.parametrize(("buffered", "expected_frame", "dropped"), [
    (16, 0, 0),   # twice the maximum depth (8): still waiting for a quiet frame
    (20, 1, 1),   # past twice the maximum: one speech frame dropped each pop
    (32, 1, 1),   # four times the maximum: still one frame at a time
    (33, 25, 25),  # past four times: cut back to the maximum at once
])
def test_depth_thresholds_of_drift_correction(buffered: int, expected_frame: int, dropped: int) -> None:
    buffer = JitterBuffer()  # target 3 frames, maximum 8
    for packet in _frames(buffered):
        buffer.push(*packet, 0.0)
    assert _frame_index(buffer.pop()) == expected_frame
    assert buffer.drift_dropped == dropped


def test_speech_frame_dropped_after_drift_patience_pops_over_depth() -> None:
    buffer = JitterBuffer(drift_patience=4)
    for packet in _frames(12):
        buffer.push(*packet, 0.0)
    played = []
    for i in range(12, 24):  # one new frame per pop: the excess stands
        played.append(_frame_index(buffer.pop()))
        buffer.push(*_frames(1, i)[0], 0.0)
    skipped = sorted(set(range(played[0], played[-1] + 1)) - set(played))
    assert played[0] == 0 and skipped == [3, 8, 13]  # the 4th pop over depth drops one, then every 5th
    assert buffer.drift_dropped == 3


def test_after_an_overload_cut_the_old_frames_are_gone() -> None:
    buffer = JitterBuffer()
    for packet in _frames(4):
        buffer.push(*packet, 0.0)
    assert _frame_index(buffer.pop()) == 0
    for packet in _frames(40, 4):
        buffer.push(*packet, 0.0)
    assert _frame_index(buffer.pop()) == 36 and buffer.drift_dropped == 35  # 43 deep: cut to 8
    while buffer.pop() is not None:
        pass
    assert buffer.depth_ms == 0
    # After running dry it re-buffers: nothing old comes back, only the new audio, after 3 frames.
    new = _frames(3, 44)
    buffer.push(*new[0], 1.0)
    assert buffer.pop() is None and buffer.depth_ms == 20
    buffer.push(*new[1], 1.0)
    buffer.push(*new[2], 1.0)
    assert [_frame_index(buffer.pop()) for _ in range(3)] == [44, 45, 46]


def test_depth_while_rebuffering_counts_from_the_oldest_frame_held() -> None:
    buffer = JitterBuffer()
    for packet in _frames(3):
        buffer.push(*packet, 0.0)
    for _ in range(4):
        buffer.pop()  # plays 0-2, then runs dry at frame 3
    for packet in _frames(2, 10):  # a silence-suppression gap: frames 10 and 11 arrive
        buffer.push(*packet, 0.5)
    assert buffer.depth_ms == 40  # two frames held, not the gap from frame 3
    assert JitterBuffer().depth_ms == 0


def test_assembled_frames_come_out_as_bytes() -> None:
    buffer = JitterBuffer(target_ms=20)
    stream = _samples(480)
    for seq, (lo, hi) in enumerate([(0, 100), (100, 300), (300, 480)]):
        buffer.push(seq, lo, stream[lo:hi], 0.0)
    frames = [buffer.pop() for _ in range(3)]
    assert [type(f) for f in frames] == [bytes] * 3 and b"".join(frames) == stream


def test_conceal_uses_all_attenuation_steps_then_silence() -> None:
    loud = g711.encode(np.full(160, 30000, dtype=np.int16), "PCMU").tobytes()
    silence = bytes([g711.ULAW_SILENCE]) * 160
    eighth = conceal(loud, "PCMU", 8, max_repeats=10)
    assert eighth != silence and g711.decode(np.frombuffer(eighth, np.uint8), "PCMU")[0] == \
        g711.decode(g711.encode(np.array([30000 >> 8], dtype=np.int16), "PCMU"), "PCMU")[0]
    assert conceal(loud, "PCMU", 9, max_repeats=10) == silence
    assert conceal(loud[:100], "PCMU", 1) == silence  # a frame of the wrong size is not repeated
