"""RFC 4733 telephone-events: payload format, receiver, sender, real SIPp captures, SIP INFO."""

from __future__ import annotations

import random

import pytest

from simplesip.core.dtmf import DtmfDigit, DtmfReceiver, DtmfSender
from simplesip.wire.dtmf_payloads import TelephoneEvent, parse_info_dtmf
from simplesip.wire.rtp import RtpPacket
from tests.helpers.media_pcap import SIPP_PCAPS, read_udp


def test_payload_round_trip_and_flags() -> None:
    event = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert event.serialize() == bytes([11, 0x8A, 0x03, 0x20])
    assert TelephoneEvent.parse(event.serialize()) == event
    assert event.digit == "#"
    # The R bit is reserved: ignored on receipt.
    assert TelephoneEvent.parse(bytes([5, 0x40 | 7, 0, 160])) == TelephoneEvent(5, False, 7, 160)
    with pytest.raises(ValueError):
        TelephoneEvent.parse(b"\x01\x0a")
    with pytest.raises(ValueError):
        TelephoneEvent(1, volume=64)


def _ev(code: int, duration: int, end: bool = False, volume: int = 10) -> bytes:
    return TelephoneEvent(code, end, volume, duration).serialize()


def test_receiver_reports_once_on_end_and_ignores_retransmissions() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(1000, True, _ev(5, 160)) == []
    assert receiver.feed(1000, False, _ev(5, 320, volume=20)) == []  # volume changes are irrelevant
    assert receiver.feed(1000, False, _ev(5, 800, end=True)) == [DtmfDigit("5", 100)]
    assert receiver.feed(1000, False, _ev(5, 800, end=True)) == []
    assert receiver.feed(1000, False, _ev(5, 800, end=True)) == []
    assert receiver.feed(1000, False, _ev(5, 480)) == []  # a late update of the finished event


def test_receiver_closes_event_when_new_timestamp_starts() -> None:
    receiver = DtmfReceiver()
    receiver.feed(1000, True, _ev(1, 160))
    receiver.feed(1000, False, _ev(1, 480))
    # All end packets of "1" lost; "2" starts, and its first packet is lost too (no marker seen).
    assert receiver.feed(3000, False, _ev(2, 320)) == [DtmfDigit("1", 60)]
    assert receiver.feed(3000, False, _ev(2, 640, end=True)) == [DtmfDigit("2", 80)]


def test_same_key_twice_is_two_presses() -> None:
    receiver = DtmfReceiver()
    got = receiver.feed(1000, True, _ev(7, 800, end=True)) + receiver.feed(2600, True, _ev(7, 800, end=True))
    assert [d.digit for d in got] == ["7", "7"]


def test_receiver_times_out_when_all_end_packets_are_lost() -> None:
    receiver = DtmfReceiver(timeout=0.5)
    receiver.feed(1000, True, _ev(9, 160), now=10.0)
    receiver.feed(1000, False, _ev(9, 320), now=10.02)
    assert receiver.poll(10.3) == []
    assert receiver.poll(10.6) == [DtmfDigit("9", 40)]
    assert receiver.poll(20.0) == []
    assert receiver.feed(1000, False, _ev(9, 800, end=True), now=20.1) == []  # a straggler, not a new press


def test_non_dtmf_events_are_ignored() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(1000, True, _ev(16, 800, end=True)) == []  # flash hook
    assert receiver.feed(1000, True, b"\x05") == []  # truncated


def _sender_packets(sender: DtmfSender, ticks: int) -> list[tuple[int, RtpPacket | None]]:
    """Run ``ticks`` media ticks (timestamps advancing 160 each), like RtpSession does."""
    out = []
    for tick in range(ticks):
        now_ts = 50_000 + tick * 160
        due = sender.next_tick()
        packet = None
        if due is not None:
            packet = RtpPacket(101, tick, now_ts - due.timestamp_offset, 1, due.payload, due.marker)
        out.append((tick, packet))
    return out


def test_sender_packet_schedule() -> None:
    sender = DtmfSender(gap_ms=60)
    sender.send("4", duration_ms=100)
    packets = [p for _, p in _sender_packets(sender, 20) if p is not None]
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {p.timestamp for p in packets} == {50_000}  # one timestamp per event
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [p.sequence for p in packets] == list(range(7))  # one packet per 20 ms tick
    assert not sender.busy


def test_sender_leaves_a_gap_and_a_new_timestamp_between_digits() -> None:
    sender = DtmfSender(gap_ms=60)
    sender.send("12", duration_ms=40)
    ticks = _sender_packets(sender, 20)
    slots = ["D" if p is not None else "-" for _, p in ticks]
    assert "".join(slots) == "DDDD---DDDD---" + "------"
    first = [p for _, p in ticks[:4]]
    second = [p for _, p in ticks[7:11]]
    assert first[0].timestamp != second[0].timestamp and second[0].marker
    assert not sender.busy


def test_sender_to_receiver_round_trip_with_loss_and_reordering() -> None:
    rng = random.Random(4)
    sender = DtmfSender()
    keys = "0123456789*#ABCD"
    sender.send(keys, duration_ms=120)
    packets = [p for _, p in _sender_packets(sender, 400) if p is not None]
    survivors = [p for p in packets if rng.random() > 0.15]
    for i in range(0, len(survivors) - 1, 5):  # swap some neighbours
        survivors[i], survivors[i + 1] = survivors[i + 1], survivors[i]
    receiver = DtmfReceiver()
    got = []
    for p in survivors:
        got += receiver.feed(p.timestamp, p.marker, p.payload)
    got += receiver.poll(1e9)
    assert "".join(d.digit for d in got) == keys
    assert all(0 < d.duration_ms <= 120 for d in got)


def test_sender_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        DtmfSender().send("5x")
    with pytest.raises(ValueError):
        DtmfSender().send("5", duration_ms=0)


SIPP_DIGITS = [(str(n), str(n)) for n in range(10)] + [("star", "*"), ("pound", "#")]


@pytest.mark.parametrize(("name", "digit"), SIPP_DIGITS)
def test_sipp_capture_yields_digit_exactly_once(name: str, digit: str) -> None:
    receiver = DtmfReceiver()
    got = []
    for datagram in read_udp(SIPP_PCAPS / f"dtmf_2833_{name}.pcap"):
        packet = RtpPacket.parse(datagram.payload)
        got += receiver.feed(packet.timestamp, packet.marker, packet.payload, datagram.time)
    got += receiver.poll(datagram.time + 5)
    assert [d.digit for d in got] == [digit]
    assert got[0].duration_ms == 280  # 2240 timestamp units in the end packet


@pytest.mark.parametrize(("content_type", "body", "expected"), [
    ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
    ("Application/DTMF-Relay; charset=x", "signal= #\nduration = 250", ("#", 250)),
    ("application/dtmf-relay", b"Signal=*\r\n", ("*", None)),
    ("application/dtmf-relay", b"Signal=11\r\nDuration=100", ("#", 100)),
    ("application/dtmf", b"5", ("5", None)),
    ("application/dtmf", b" d\r\n", ("D", None)),
    ("application/dtmf-relay", b"Duration=160", None),
    ("application/dtmf-relay", b"Signal=X", None),
    ("application/dtmf", b"", None),
    ("text/plain", b"5", None),
    # Event codes outside 0-15 (16 is flash-hook-like, not a key) and digits that are not ASCII
    # are not keys: refused, never an exception out of the INFO handler.
    ("application/dtmf-relay", b"Signal=16\r\nDuration=160", None),
    ("application/dtmf-relay", "Signal=255", None),
    ("application/dtmf-relay", "Signal=\u00b2", None),
    ("application/dtmf-relay", "Signal=\u0661", None),
    ("application/dtmf", b"16", None),
    ("application/dtmf", "\u00b2", None),
    ("application/dtmf", b"15", ("D", None)),
    ("application/dtmf-relay", b"Signal=0\r\nDuration=0", ("0", 0)),
])
def test_parse_info_dtmf(content_type: str, body: bytes | str, expected) -> None:
    assert parse_info_dtmf(content_type, body) == expected


# --- long key presses: RFC 4733 §2.5.1.3, the 16-bit duration split into segments -------------


def _segments(packets: list) -> list[tuple[int, list[TelephoneEvent]]]:
    """The packets grouped by RTP timestamp, in order: (timestamp, events)."""
    groups: list[tuple[int, list[TelephoneEvent]]] = []
    for p in packets:
        if not groups or groups[-1][0] != p.timestamp:
            groups.append((p.timestamp, []))
        groups[-1][1].append(TelephoneEvent.parse(p.payload))
    return groups


@pytest.mark.parametrize("held_ms", [10_000, 20_000])
def test_long_key_press_is_sent_as_segments_and_received_as_one(held_ms: int) -> None:
    sender = DtmfSender()
    sender.send("5", duration_ms=held_ms)  # ~8.2 s is the most one 16-bit duration holds at 8 kHz
    packets = [p for _, p in _sender_packets(sender, held_ms // 20 + 10) if p is not None]
    segments = _segments(packets)
    assert len(segments) == 1 + (held_ms * 8 - 1) // 0xFFFF
    for (ts, events), (next_ts, _) in zip(segments, segments[1:]):
        # A full segment ends with a packet at the maximum duration, not an end packet; the next
        # one starts where the maximum left off, with the same event code.
        assert events[-1].duration == 0xFFFF and not events[-1].end
        assert (next_ts - ts) % 2**32 == 0xFFFF
    assert {e.event for _, events in segments for e in events} == {5}
    last = segments[-1][1]
    assert [e.end for e in last[-3:]] == [True] * 3
    assert sum(events[-1].duration for _, events in segments) == held_ms * 8
    assert [p.marker for p in packets].count(True) == 1 and packets[0].marker  # one event
    receiver = DtmfReceiver()
    got = []
    for p in packets:
        got += receiver.feed(p.timestamp, p.marker, p.payload)
    got += receiver.poll(1e9)
    assert got == [DtmfDigit("5", held_ms)]


def test_long_key_press_continuation_survives_loss_and_late_packets() -> None:
    sender = DtmfSender()
    sender.send("7", duration_ms=9_000)
    packets = [p for _, p in _sender_packets(sender, 500) if p is not None]
    full = next(i for i, p in enumerate(packets) if TelephoneEvent.parse(p.payload).duration == 0xFFFF)
    # The packet at the maximum is lost, and a packet of the first segment arrives late, after
    # the continuation: still one key press.
    reordered = packets[:full - 1] + packets[full + 1:full + 3] + [packets[full - 1]] + packets[full + 3:]
    receiver = DtmfReceiver()
    got = []
    for p in reordered:
        got += receiver.feed(p.timestamp, p.marker, p.payload)
    got += receiver.poll(1e9)
    assert got == [DtmfDigit("7", 9_000)]


def test_same_key_after_a_long_press_with_a_fresh_event_is_a_second_press() -> None:
    receiver = DtmfReceiver()
    got = receiver.feed(1000, True, _ev(1, 0xFFFF))  # no end packet seen
    # A new event (marker, a timestamp far from where the segment would continue) is a new press.
    got += receiver.feed(1000 + 0xFFFF + 8000 * 5, True, _ev(1, 800, end=True))
    assert [d.digit for d in got] == ["1", "1"]
    # A different key with the continuation's timestamp is a new press too.
    receiver = DtmfReceiver()
    got = receiver.feed(0, True, _ev(2, 0xFFFF))
    got += receiver.feed(0xFFFF, False, _ev(3, 160, end=True))
    assert [d.digit for d in got] == ["2", "3"]


# --- boundaries of the payload, the receiver's timeout and durations, the sender's defaults ----


def test_payload_field_ranges_are_the_wire_ranges() -> None:
    for fields in ({"event": 0}, {"event": 255}, {"event": 1, "volume": 0}, {"event": 1, "volume": 63},
                   {"event": 1, "duration": 0}, {"event": 1, "duration": 0xFFFF}):
        event = TelephoneEvent(**fields)
        assert TelephoneEvent.parse(event.serialize()) == event
    for fields, message in (({"event": 256}, "event code out of range: 256"),
                            ({"event": -1}, "event code out of range"),
                            ({"event": 1, "volume": 64}, "volume out of range: 64"),
                            ({"event": 1, "volume": -1}, "volume out of range"),
                            ({"event": 1, "duration": 0x10000}, "duration out of range: 65536"),
                            ({"event": 1, "duration": -1}, "duration out of range")):
        with pytest.raises(ValueError, match=message):
            TelephoneEvent(**fields)
    with pytest.raises(ValueError, match=r"too short \(3 bytes\)"):
        TelephoneEvent.parse(b"\x01\x0a\x00")
    # Not the end: the E bit is clear and the volume alone fills the flags byte.
    assert TelephoneEvent(7, end=False, volume=10, duration=160).serialize() == bytes([7, 10, 0, 160])
    assert TelephoneEvent(7, end=False, volume=0, duration=0).serialize() == bytes([7, 0, 0, 0])


def test_info_dtmf_media_type_with_several_parameters_and_bad_utf8() -> None:
    assert parse_info_dtmf("application/dtmf-relay;a=1;b=2", "Signal=9") == ("9", None)
    # A byte that is not UTF-8 elsewhere in the body does not hide the key.
    assert parse_info_dtmf("application/dtmf-relay", b"Signal=4\r\nX=\xff\r\n") == ("4", None)
    assert parse_info_dtmf("application/dtmf", b"#\xff") is None


def test_receiver_timeout_default_is_half_a_second() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(800, True, _ev(5, 160)) == []  # now defaults to 0.0
    assert receiver.poll(0.5) == []  # not more than the timeout yet
    assert receiver.poll(0.51) == [DtmfDigit("5", 20)]
    assert receiver.poll(9.0) == []


def test_receiver_durations_round_down_to_whole_ms_on_every_press() -> None:
    receiver = DtmfReceiver()
    got = receiver.feed(0, True, _ev(1, 159, end=True))  # 19.875 ms
    got += receiver.feed(8000, True, _ev(2, 159, end=True))
    receiver.reset()
    got += receiver.feed(16000, True, _ev(3, 159, end=True))
    assert got == [DtmfDigit("1", 19), DtmfDigit("2", 19), DtmfDigit("3", 19)]
    assert all(type(d.duration_ms) is int for d in got)


def test_reset_forgets_an_open_long_press() -> None:
    receiver = DtmfReceiver()
    receiver.feed(0, True, _ev(8, 0xFFFF))
    receiver.feed(0xFFFF, False, _ev(8, 800))
    receiver.reset()
    assert receiver.flush() == []
    assert receiver.feed(0xFFFF, True, _ev(8, 159, end=True)) == [DtmfDigit("8", 19)]


def test_long_press_continues_across_the_32_bit_timestamp_wrap() -> None:
    receiver = DtmfReceiver()
    start = 2**32 - 1000
    got = receiver.feed(start, True, _ev(6, 0xFFFF))
    got += receiver.feed((start + 0xFFFF) % 2**32, False, _ev(6, 8000, end=True))
    assert got == [DtmfDigit("6", (0xFFFF + 8000) * 1000 // 8000)]


@pytest.mark.parametrize(("last_duration", "offset", "one_press"), [
    (0xFFFF - 4000, 0xFFFF, True),  # the packets of the last 0.5 s of the segment were lost
    (0xFFFF - 4001, 0xFFFF, False),
    (0xFFFF, 0xFFFF + 4000, True),  # a sender that starts the next segment up to 0.5 s later
    (0xFFFF, 0xFFFF + 4001, False),
    (0xFFFF, 0xFFFF - 1, False),
])
def test_continuation_tolerance_is_the_timeout(last_duration: int, offset: int, one_press: bool) -> None:
    receiver = DtmfReceiver()
    got = receiver.feed(1000, True, _ev(9, last_duration))
    got += receiver.feed(1000 + offset, False, _ev(9, 160, end=True))
    assert len(got) == (1 if one_press else 2)


def test_sender_defaults_and_limits() -> None:
    sender = DtmfSender()
    assert (sender.clock_rate, sender.ptime_ms, sender.volume, sender.gap_ms) == (8000, 20, 10, 60)
    sender.send("5")  # 100 ms: five ticks, the end three times, then 60 ms of audio
    ticks = [p for _, p in _sender_packets(sender, 12)]
    assert "".join("D" if p else "-" for p in ticks) == "DDDDDDD---" + "--"
    assert {TelephoneEvent.parse(p.payload).volume for p in ticks if p} == {10}
    sender.send("6", duration_ms=1)  # the shortest press is one tick
    events = [TelephoneEvent.parse(p.payload) for _, p in _sender_packets(sender, 10) if p]
    assert [(e.duration, e.end) for e in events] == [(160, True)] * 3
    sender = DtmfSender(volume=20)
    sender.send("7", duration_ms=20)
    assert {TelephoneEvent.parse(p.payload).volume for _, p in _sender_packets(sender, 5) if p} == {20}
    with pytest.raises(ValueError, match="must be positive"):
        sender.send("1", duration_ms=-5)
    with pytest.raises(ValueError, match="not a DTMF key: 'x'"):
        sender.send("x")


def test_digits_queued_while_busy_keep_their_own_timestamps() -> None:
    sender = DtmfSender(gap_ms=40)
    sender.send("1", duration_ms=40)
    starts: dict[int, set[int]] = {}
    for tick in range(16):
        if tick == 3:
            sender.send("2", duration_ms=40)  # queued behind the rest of the first digit
        due = sender.next_tick()
        if due is not None:
            now_ts = 50_000 + tick * 160  # the media clock
            code = TelephoneEvent.parse(due.payload).event
            starts.setdefault(code, set()).add(now_ts - due.timestamp_offset)
    # Each event has one timestamp, that of the tick its first packet went out on: "1" at tick 0;
    # "2" after "1" (ticks 0-3: 160, then the end at 320 three times) and 2 ticks of gap: tick 6.
    assert starts == {1: {50_000}, 2: {50_000 + 6 * 160}}


@pytest.mark.parametrize("held_ms", [8_200, 8_180])
def test_long_press_whose_last_tick_crosses_the_segment_end(held_ms: int) -> None:
    sender = DtmfSender()
    sender.send("0", duration_ms=held_ms)
    packets = [p for _, p in _sender_packets(sender, held_ms // 20 + 10) if p is not None]
    segments = _segments(packets)
    ticks = held_ms // 20
    if held_ms * 8 > 0xFFFF:  # 8200 ms: the final tick fills the segment, the end goes in the next
        assert len(segments) == 2 and len(packets) == ticks + 3
        assert segments[0][1][-1] == TelephoneEvent(0, False, 10, 0xFFFF)
        assert segments[1][1] == [TelephoneEvent(0, True, 10, held_ms * 8 - 0xFFFF)] * 3
    else:  # 8180 ms: 65440 units still fit one segment
        assert len(segments) == 1 and len(packets) == ticks + 2
    receiver = DtmfReceiver()
    got = [d for p in packets for d in receiver.feed(p.timestamp, p.marker, p.payload)]
    assert got == [DtmfDigit("0", held_ms)]
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
