"""RtpSession: latching and injection refusal, DTMF both ways, pacing, RTCP, a real SIPp stream."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplesip.core.dtmf import DtmfSender
from simplesip.core.rtpsession import RtpSession
from simplesip.core.rtpstats import ReceiveStats
from simplesip.wire import g711
from simplesip.wire.dtmf_payloads import TelephoneEvent
from simplesip.wire.rtp import (
    ReceiverReport,
    RtcpPacket,
    RtpPacket,
    build_sender_report,
    parse_rtcp,
)
from tests.helpers.media_pcap import SIPP_PCAPS, read_udp

PEER = ("127.0.0.1", 40000)
INTRUDER = ("127.0.0.1", 40002)


def _session(**kwargs) -> RtpSession:
    return RtpSession(0, "PCMU", ("127.0.0.1", 39000), 101, rng=random.Random(1), **kwargs)


def _audio(seq: int, ssrc: int = 0x1111, fill: int = 0x10, pt: int = 0) -> bytes:
    return RtpPacket(pt, seq, seq * 160, ssrc, bytes([fill]) * 160).serialize()


def _feed(session: RtpSession, packets, addr=PEER, t0: float = 0.0) -> None:
    for i, data in enumerate(packets):
        session.receive(data, addr, t0 + i * 0.020)


def test_origins_are_random_and_packets_advance() -> None:
    a, b = RtpSession(0, "PCMU", PEER), RtpSession(0, "PCMU", PEER)
    assert a.ssrc != b.ssrc
    first = RtpPacket.parse(a.build_packet(b"\xff" * 160))
    second = RtpPacket.parse(a.build_packet(b"\xff" * 160))
    assert first.marker and not second.marker  # talk-spurt start
    assert second.sequence == (first.sequence + 1) & 0xFFFF
    assert second.timestamp == (first.timestamp + 160) & 0xFFFFFFFF
    assert (first.ssrc, first.payload_type) == (a.ssrc, 0)


def test_silence_gap_marks_next_packet() -> None:
    session = _session()
    p1 = RtpPacket.parse(session.build_packet(b"\xff" * 160))
    session.skip_frame()
    session.skip_frame()
    p2 = RtpPacket.parse(session.build_packet(b"\xff" * 160))
    assert p2.marker and p2.timestamp - p1.timestamp == 3 * 160 and p2.sequence == p1.sequence + 1


def test_latches_to_first_source_and_refuses_injection() -> None:
    session = _session()
    assert session.remote_addr == ("127.0.0.1", 39000)  # the SDP address until a packet arrives
    _feed(session, [_audio(i) for i in range(5)])
    assert session.remote_addr == PEER and session.remote_ssrc == 0x1111
    # Another address, and a spoofed SSRC from the peer's address, while the peer is live.
    session.receive(_audio(5, fill=0x77), INTRUDER, 0.1)
    session.receive(_audio(5, ssrc=0x2222, fill=0x77), PEER, 0.1)
    session.receive(RtpPacket(101, 6, 800, 0x1111, TelephoneEvent(1, True, 10, 800).serialize(), True)
                    .serialize(), INTRUDER, 0.1)
    assert session.remote_addr == PEER and session.stats()["rejected"] == 3
    assert session.pop_dtmf() == []
    frames = [session.pull_frame() for _ in range(5)]
    assert all(f == b"\x10" * 160 for f in frames)  # none of the intruder's 0x77 audio


def test_relatches_only_after_the_source_fell_silent() -> None:
    session = _session()
    _feed(session, [_audio(i) for i in range(5)])  # last packet at t=0.08
    session.receive(_audio(100, ssrc=0x3333), INTRUDER, 0.9)
    assert session.remote_addr == PEER
    session.receive(_audio(101, ssrc=0x3333), INTRUDER, 1.2)  # > 1 s since the peer's last packet
    assert session.remote_addr == INTRUDER and session.remote_ssrc == 0x3333
    assert session.stats()["received"] == 1  # statistics restarted for the new stream


def test_unknown_payload_types_and_garbage_are_dropped() -> None:
    session = _session()
    session.receive(RtpPacket(18, 1, 160, 0x1111, b"\x00" * 20).serialize(), PEER, 0.0)  # G.729
    session.receive(b"\x80\x00\x01", PEER, 0.0)
    session.receive(b"\x81\xc9\x00\x07garbage", PEER, 0.0)
    assert session.latched_addr is None  # nothing latched on junk
    stats = session.stats()
    assert stats["rejected"] == 1 and stats["malformed"] == 2 and stats["packets_in"] == 0


def test_pull_frame_is_silence_before_start_then_conceals() -> None:
    session = _session(jitter_target_ms=40)
    assert session.pull_frame() == b"\xff" * 160
    packets = [_audio(i, fill=0x20) for i in range(6)]
    del packets[3]
    for i, data in enumerate(packets):
        session.receive(data, PEER, i * 0.02)
    frames = [session.pull_frame() for _ in range(5)]
    assert frames[:3] == [b"\x20" * 160] * 3
    assert frames[3] != b"\x20" * 160 and len(frames[3]) == 160  # concealed, attenuated
    pcm = g711.decode(np.frombuffer(frames[3], np.uint8), "PCMU")
    assert abs(int(pcm[0])) < abs(int(g711.decode(np.array([0x20], np.uint8), "PCMU")[0]))
    assert session.stats()["concealed"] == 1 and session.stats()["lost"] == 1


def test_other_g711_law_is_transcoded() -> None:
    session = _session()
    alaw = g711.pcm_to_alaw(np.full(160, 1000, dtype="<i2").tobytes())
    for i in range(4):
        session.receive(RtpPacket(8, i, i * 160, 5, alaw).serialize(), PEER, i * 0.02)
    assert session.pull_frame() == g711.transcode(alaw, "PCMA", "PCMU")


def test_dtmf_in_is_reported_once() -> None:
    session = _session()
    sender = DtmfSender()
    sender.send("59", 80)
    seq = 0
    for tick in range(40):
        due = sender.next_tick()
        if due is None:
            data = _audio(seq)
        else:
            timestamp = seq * 160 - due.timestamp_offset
            data = RtpPacket(101, seq, timestamp, 0x1111, due.payload, due.marker).serialize()
        session.receive(data, PEER, tick * 0.02)
        seq += 1
    assert session.pop_dtmf() == [("5", 80), ("9", 80)]
    assert session.pop_dtmf() == []
    assert session.stats()["lost"] == 0 and session.stats()["jitter_ms"] == 0


def test_dtmf_out_replaces_audio_ticks_and_round_trips() -> None:
    alice, bob = _session(), RtpSession(0, "PCMU", None, 101)
    alice.build_dtmf_packets("1#", duration_ms=60)
    assert alice.dtmf_pending
    kinds = []
    for tick in range(30):
        data = alice.build_packet(b"\xff" * 160)
        packet = RtpPacket.parse(data)
        kinds.append("D" if packet.payload_type == 101 else "a")
        bob.receive(data, PEER, tick * 0.02)
    assert "".join(kinds) == "DDDDD" + "aaa" + "DDDDD" + "a" * 17
    assert bob.pop_dtmf() == [("1", 60), ("#", 60)]
    assert not alice.dtmf_pending
    with pytest.raises(ValueError):
        RtpSession(0, "PCMU", PEER, None).build_dtmf_packets("1")


def test_lost_dtmf_end_packets_close_on_audio_or_timeout() -> None:
    session = _session()
    for i in range(3):  # only the start of a "7"
        session.receive(RtpPacket(101, i, 0, 0x1111, TelephoneEvent(7, False, 10, 160 * (i + 1)).serialize(),
                                  i == 0).serialize(), PEER, i * 0.02)
    assert session.pop_dtmf() == []
    assert session.pop_dtmf(now=1.0) == [("7", 60)]


def test_rtcp_report_every_few_seconds_with_reception_block() -> None:
    session = _session()
    packets = [_audio(i) for i in range(100)]
    del packets[50]
    _feed(session, packets)
    session.receive(build_sender_report(0x1111, 0x0001_0002_0003_0004, 0, 1, 2), PEER, 2.0)
    assert session.rtcp_report(2.0) is None  # arms the interval
    assert session.rtcp_report(2.1) is None
    report = session.rtcp_report(10.0)
    assert report is not None
    rr, sdes = parse_rtcp(report)
    assert isinstance(rr, ReceiverReport) and isinstance(sdes, RtcpPacket)
    (block,) = rr.reports
    assert block.ssrc == 0x1111 and block.cumulative_lost == 1 and block.highest_sequence == 99
    assert block.fraction_lost == 256 // 100 and block.last_sr == 0x0002_0003
    assert block.delay_since_last_sr == 8 * 65536
    assert session.rtcp_report(10.1) is None


def test_update_keeps_ssrc_and_relatches_on_new_address() -> None:
    session = _session()
    _feed(session, [_audio(i) for i in range(3)])
    before = RtpPacket.parse(session.build_packet(b"\xff" * 160))
    session.update(remote_addr=("127.0.0.1", 41000), codec="PCMA", payload_type=8, dtmf_payload_type=None)
    after = RtpPacket.parse(session.build_packet(b"\xd5" * 160))
    assert (after.ssrc, after.sequence) == (before.ssrc, before.sequence + 1) and after.payload_type == 8
    assert session.remote_addr == ("127.0.0.1", 41000) and session.latched_addr is None
    assert session.dtmf_payload_type is None and session.pull_frame() == b"\xd5" * 160
    session.receive(_audio(3, pt=8), ("127.0.0.1", 41000), 0.1)
    assert session.latched_addr == ("127.0.0.1", 41000)


def test_sipp_g711a_capture_plays_without_gaps() -> None:
    """SIPp's g711a.pcap: 30 ms PCMA packets, about 7 s, replayed at their captured times."""
    datagrams = read_udp(SIPP_PCAPS / "g711a.pcap")
    session = RtpSession(8, "PCMA", datagrams[0].src, 101, rng=random.Random(2))
    t0 = datagrams[0].time
    arrivals = [(d.time - t0, d.payload) for d in datagrams]
    duration = arrivals[-1][0] + 0.030
    frames, concealed, i, tick = [], [], 0, 0
    while tick * 0.020 < duration + 0.2:
        now = tick * 0.020
        while i < len(arrivals) and arrivals[i][0] <= now:
            session.receive(arrivals[i][1], datagrams[0].src, arrivals[i][0])
            i += 1
        frames.append(session.pull_frame())
        concealed.append(session.stats()["concealed"])
        tick += 1
    expected = b"".join(RtpPacket.parse(d.payload).payload for d in datagrams)
    assert len(expected) == 236 * 240  # ~7.08 s
    audio = b"".join(frames)
    # The capture opens with silence, like the frames before playout: anchor on speech.
    anchor = next(n for n in range(0, len(expected), 160) if len(set(expected[n : n + 160])) > 20)
    start = audio.index(expected[anchor : anchor + 480]) - anchor
    assert audio[start : start + len(expected)] == expected  # every sample, in order, no holes
    stats = session.stats()
    assert stats["lost"] == 0 and stats["late"] == 0
    last_tick = (start + len(expected)) // 160 - 1
    assert concealed[last_tick] == 0  # only the silence after the stream ended is concealment
    assert stats["jitter_ms"] < 10


def test_update_from_negotiated_media_params_object() -> None:
    session = _session()
    params = SimpleNamespace(remote_address=("127.0.0.1", 42000), payload_type=8, codec="PCMA",
                             dtmf_payload_type=96, ptime=30)
    session.update(params)
    assert (session.remote_addr, session.payload_type, session.codec) == (("127.0.0.1", 42000), 8, "PCMA")
    assert (session.dtmf_payload_type, session.ptime) == (96, 30)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_receive_survives_any_datagram(datagrams: list[bytes]) -> None:
    session = _session()
    for i, data in enumerate(datagrams):
        session.receive(data, PEER, i * 0.02)
        assert len(session.pull_frame()) == 160
    session.pop_dtmf(now=10.0)
    assert session.stats()["packets_in"] <= len(datagrams)


# --- SIPp's uac_pcap: DTMF from the peer's address with another SSRC (tests/test_robust_loss.py) ----

SIPP_DTMF_AT = 8.0  # uac_pcap plays g711a.pcap, pauses 8 s from its start, then dtmf_2833_1.pcap


def _sipp_uac_pcap_arrivals(dtmf_at: float, lost: frozenset[int] = frozenset(),
                            audio_tail: int = 0) -> list[tuple[float, bytes]]:
    """SIPp's audio then DTMF capture, as they arrive (time since the first audio packet,
    datagram); ``lost`` holds indexes into the DTMF capture that never arrive; ``audio_tail``
    keeps only the last packets of the audio (0: all of it)."""
    audio = read_udp(SIPP_PCAPS / "g711a.pcap")
    dtmf = read_udp(SIPP_PCAPS / "dtmf_2833_1.pcap")
    arrivals = [(d.time - audio[0].time, d.payload) for d in audio[-audio_tail:]]
    arrivals += [(dtmf_at + d.time - dtmf[0].time, d.payload) for i, d in enumerate(dtmf) if i not in lost]
    return arrivals


def _play_at_media_ticks(session: RtpSession, arrivals: list[tuple[float, bytes]], until: float) -> list[str]:
    """Deliver the arrivals from PEER and poll DTMF every 20 ms tick, as the media clock does."""
    digits, i = [], 0
    for tick in range(int(arrivals[0][0] / 0.020), int(until / 0.020) + 1):
        now = tick * 0.020
        while i < len(arrivals) and arrivals[i][0] <= now:
            session.receive(arrivals[i][1], PEER, arrivals[i][0])
            i += 1
        session.pull_frame()
        digits += [d.digit for d in session.pop_dtmf(now)]
    return digits


@pytest.mark.parametrize("dtmf_at", [SIPP_DTMF_AT, 7.3])
def test_sipp_dtmf_capture_with_its_own_ssrc_after_the_audio_is_heard(dtmf_at: float) -> None:
    """Regression: the DTMF capture's SSRC differs from the audio's and it starts 0.95 s after
    the audio ends, inside the 1 s re-latch window, so every packet of the '1' was refused.
    A new SSRC from the latched address is a new stream of the same peer once the old one
    has fallen silent."""
    arrivals = _sipp_uac_pcap_arrivals(dtmf_at)
    assert RtpPacket.parse(arrivals[0][1]).ssrc != RtpPacket.parse(arrivals[-1][1]).ssrc
    session = RtpSession(8, "PCMA", PEER, 101, rng=random.Random(3))
    assert _play_at_media_ticks(session, arrivals, until=dtmf_at + 1.0) == ["1"]
    assert session.remote_ssrc == RtpPacket.parse(arrivals[-1][1]).ssrc and session.latched_addr == PEER
    assert session.stats()["rejected"] == 0


def test_new_ssrc_from_the_peer_address_is_refused_while_the_old_stream_is_live() -> None:
    session = _session()
    _feed(session, [_audio(i) for i in range(5)])  # last packet at t=0.08
    session.receive(_audio(5, ssrc=0x2222), PEER, 0.1)  # audio of a second stream: not while the first is live
    assert session.stats()["rejected"] == 1 and session.remote_ssrc == 0x1111
    # Its key presses are heard at once (the address is the peer's), and only once when it takes over.
    event = TelephoneEvent(3, True, 10, 800).serialize()
    session.receive(RtpPacket(101, 500, 9000, 0x2222, event, True).serialize(), PEER, 0.1)
    assert session.remote_ssrc == 0x1111 and session.pop_dtmf() == [("3", 100)]
    session.receive(RtpPacket(101, 501, 9000, 0x2222, event).serialize(), PEER, 0.08 + 0.25)
    assert session.remote_ssrc == 0x2222 and session.pop_dtmf(0.08 + 0.3) == []
    # Another address still has to wait for the full re-latch time.
    session.receive(_audio(9, ssrc=0x3333), INTRUDER, 0.08 + 0.25 + 0.5)
    assert session.latched_addr == PEER and session.stats()["rejected"] == 2


def test_digit_of_the_old_stream_is_reported_when_a_new_stream_starts() -> None:
    """A key press whose end packets were lost must not vanish when the peer's stream changes."""
    session = _session()
    for i in range(3):
        session.receive(RtpPacket(101, i, 0, 0x1111, TelephoneEvent(4, False, 10, 160 * (i + 1)).serialize(),
                                  i == 0).serialize(), PEER, i * 0.02)
    session.receive(_audio(7, ssrc=0x4444), PEER, 0.3)
    assert session.pop_dtmf() == [("4", 60)] and session.remote_ssrc == 0x4444


@settings(max_examples=150, deadline=None)
@given(st.sets(st.integers(0, 9), max_size=9), st.floats(7.3, 8.2))
def test_sipp_dtmf_survives_any_loss_of_its_packets(lost: set[int], dtmf_at: float) -> None:
    """Whatever part of the '1' is lost (start, updates, all three ends), one packet is enough
    to report it, exactly once: the end, the next update or the timeout closes it."""
    arrivals = _sipp_uac_pcap_arrivals(dtmf_at, frozenset(lost), audio_tail=10)
    session = RtpSession(8, "PCMA", PEER, 101, rng=random.Random(4))
    assert _play_at_media_ticks(session, arrivals, until=dtmf_at + 1.0) == ["1"]


def test_our_own_stream_looped_back_is_never_taken_as_the_peers() -> None:
    """Regression (tests/test_robust_loss.py): a relay sent our own RTP back to us from the
    peer's address; after the peer's audio paused it was latched as the peer's new stream and
    the peer's DTMF, arriving next, was refused."""
    session = _session()
    _feed(session, [_audio(i) for i in range(5)])
    for tick in range(30):
        session.receive(session.build_packet(b"\xff" * 160), PEER, 0.1 + tick * 0.02)
    assert session.remote_ssrc == 0x1111 and session.stats()["rejected"] == 30
    event = TelephoneEvent(9, True, 10, 800).serialize()
    session.receive(RtpPacket(101, 77, 4000, 0x5555, event, True).serialize(), PEER, 0.7)
    assert session.pop_dtmf() == [("9", 100)]


def test_an_echo_service_returning_our_own_stream_is_played() -> None:
    """SIPp -rtp_echo (or a PBX echo test) sends back our packets unchanged, SSRC included:
    with no other stream latched, that is the peer's audio."""
    session = _session()
    for tick in range(10):
        session.receive(session.build_packet(bytes([tick]) * 160), PEER, tick * 0.02)
    assert session.remote_ssrc == session.ssrc and session.stats()["rejected"] == 0


# --- the receive fast path behaves exactly like the full parser --------------------------------

def _padded(data: bytes) -> bytes:
    """The same RTP packet with one byte of padding: the P bit keeps it off the fast path."""
    return bytes([data[0] | 0x20]) + data[1:] + b"\x01"


_packet_plans = st.lists(
    st.tuples(
        st.sampled_from([PEER, INTRUDER]),
        st.sampled_from([0x1111, 0x2222]),
        st.sampled_from([0, 8, 101, 96, 72]),  # ours, static A-law, DTMF, foreign, RTCP-looking
        st.integers(0, 40),                    # sequence offset (reorder, duplicates)
        st.booleans(),                         # marker
        st.integers(0, 255),                   # payload fill
        st.floats(0.0, 0.5),                   # time since the previous packet
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(plan=_packet_plans, codec_pt=st.sampled_from([(0, "PCMU"), (8, "PCMA"), (96, "PCMU"), (72, "PCMA")]))
def test_fast_path_matches_the_full_parser(plan, codec_pt) -> None:
    pt, codec = codec_pt
    fast = RtpSession(pt, codec, ("127.0.0.1", 39000), 101, rng=random.Random(1))
    full = RtpSession(pt, codec, ("127.0.0.1", 39000), 101, rng=random.Random(1))
    now = 0.0
    frames_fast, frames_full = [], []
    for addr, ssrc, packet_pt, seq, marker, fill, gap in plan:
        now += gap
        if packet_pt == 101:
            payload = TelephoneEvent(fill % 16, end=marker, volume=10, duration=160 * (seq + 1)).serialize()
        else:
            payload = bytes([fill]) * 160
        data = RtpPacket(packet_pt, seq, seq * 160, ssrc, payload, marker=marker).serialize()
        fast.receive(data, addr, now)
        full.receive(_padded(data), addr, now)
        frames_fast.append(fast.pull_frame())
        frames_full.append(full.pull_frame())
        assert fast.pop_dtmf(now) == full.pop_dtmf(now)
    assert frames_fast == frames_full
    assert fast.stats() == full.stats()
    assert (fast.latched_addr, fast.remote_ssrc, fast.remote_addr) == (
        full.latched_addr, full.remote_ssrc, full.remote_addr)


def test_outbound_header_is_plain_rtp_with_the_negotiated_type() -> None:
    session = RtpSession(8, "PCMA", PEER, 101, rng=random.Random(3))
    packets = [RtpPacket.parse(session.build_packet(bytes([i]) * 160)) for i in range(3)]
    assert [(p.payload_type, p.ssrc, p.csrcs, p.padding, p.extension_profile) for p in packets] == [
        (8, session.ssrc, [], 0, None)] * 3
    assert [p.marker for p in packets] == [True, False, False]
    assert [p.payload for p in packets] == [bytes([i]) * 160 for i in range(3)]
    session.payload_type = 200
    with pytest.raises(ValueError):
        session.build_packet(b"\xd5" * 160)


def test_skip_tick_keeps_a_key_press_on_one_event_timestamp() -> None:
    session = _session()
    session.build_packet(b"\xff" * 160)
    session.build_dtmf_packets("5", duration_ms=100)
    sent = [RtpPacket.parse(session.build_packet(b"\xff" * 160))]
    session.skip_tick()  # a tick the clock skipped after a stall: that update is "lost"
    session.skip_tick()
    while session.dtmf_pending:
        data = session.build_packet(b"\xff" * 160)
        packet = RtpPacket.parse(data)
        if packet.payload_type == 101:
            sent.append(packet)
    assert {p.timestamp for p in sent} == {sent[0].timestamp}  # one event, not a second key press
    assert TelephoneEvent.parse(sent[-1].payload).end
    assert session.ticks_skipped == 2


def test_key_presses_under_a_second_ssrc_beside_the_live_stream_are_heard() -> None:
    """SIPp plays its RFC 4733 capture as a separate stream while its audio stream is still live:
    the digits come from the latched address, so they count; the audio stream stays latched."""
    session = _session()
    _feed(session, [_audio(i) for i in range(5)])
    for duration, end in ((160, False), (320, False), (800, True), (800, True), (800, True)):
        event = TelephoneEvent(1, end, 10, duration).serialize()
        session.receive(RtpPacket(101, 500 + duration, 9000, 0x7777, event, duration == 160).serialize(), PEER, 0.12)
    assert session.pop_dtmf() == [("1", 100)]
    assert session.remote_ssrc == 0x1111


def test_key_presses_from_another_address_are_still_refused() -> None:
    session = _session()
    _feed(session, [_audio(i) for i in range(5)])
    event = TelephoneEvent(1, True, 10, 800).serialize()
    for _ in range(3):
        session.receive(RtpPacket(101, 9, 9000, 0x7777, event, True).serialize(), ("127.0.0.9", 4000), 0.12)
    assert session.pop_dtmf(1.0) == []


# --- in-order runs: the fast paths of receive() and of the jitter buffer together --------------

class _GeneralPathStats(ReceiveStats):
    """Never knows the next sequence number: the jitter buffer holding it never takes its
    in-order path and every packet gets the general accounting of ReceiveStats.record."""

    next_sequence = property(lambda self: -1, lambda self, value: None)  # type: ignore[assignment]


_in_order_runs = st.lists(
    st.tuples(
        st.sampled_from([PEER, PEER, PEER, INTRUDER]),
        st.sampled_from([0x1111, 0x1111, 0x1111, 0x2222]),
        st.sampled_from(["audio", "audio", "audio", "dtmf", "dtmf_no_end"]),
        st.integers(1, 30),                    # packets in the run
        st.integers(0, 3),                     # sequence numbers skipped before it (loss)
        st.sampled_from([0.020, 0.020, 0.019, 0.021, 0.3, 0.7]),  # spacing, or a pause
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(runs=_in_order_runs, codec_pt=st.sampled_from([(0, "PCMU"), (8, "PCMA")]),
       seq0=st.integers(0, 0xFFFF))
def test_fast_paths_match_the_general_paths_on_in_order_runs(runs, codec_pt, seq0) -> None:
    """Runs of in-order packets (what a call mostly is) with losses, pauses, key presses whose
    end packets may be lost, a second SSRC and an intruder: the plain session (receive fast path,
    jitter buffer in-order path, DTMF polling skipped while nothing is open) against one that
    parses every packet in full and places and counts it the general way."""
    pt, codec = codec_pt
    # The pure-Python reference's own fast paths (the compiled ones: tests/test_media_native.py).
    fast = RtpSession(pt, codec, ("127.0.0.1", 39000), 101, rng=random.Random(1), native=False)
    full = RtpSession(pt, codec, ("127.0.0.1", 39000), 101, rng=random.Random(1), native=False)
    full._jitter.stats = _GeneralPathStats()
    streams = {0x1111: [seq0, 1000], 0x2222: [(seq0 + 5000) & 0xFFFF, 90000]}
    now, tick_at = 0.0, 0.0
    for addr, ssrc, kind, count, skipped, spacing in runs:
        stream = streams[ssrc]
        stream[0] += skipped
        stream[1] += 160 * skipped
        event_ts = stream[1]
        for i in range(count):
            now += spacing if i else max(spacing, 0.020)
            seq, ts = stream[0] & 0xFFFF, stream[1] & 0xFFFFFFFF
            if kind == "audio":
                payload = bytes([(seq * 7) & 0xFF]) * 160
                data = RtpPacket(pt, seq, ts, ssrc, payload, marker=i == 0).serialize()
            else:
                end = kind == "dtmf" and i == count - 1
                event = TelephoneEvent(seq % 16, end=end, duration=160 * (i + 1)).serialize()
                data = RtpPacket(101, seq, event_ts & 0xFFFFFFFF, ssrc, event, marker=i == 0).serialize()
            stream[0] += 1
            stream[1] += 160
            fast.receive(data, addr, now)
            full.receive(_padded(data), addr, now)
            while tick_at <= now:  # the media clock: one pull and one DTMF poll per 20 ms
                assert fast.pull_frame() == full.pull_frame()
                assert fast.pop_dtmf(tick_at) == full.pop_dtmf(tick_at)
                tick_at += 0.020
    assert fast.pop_dtmf(now + 1.0) == full.pop_dtmf(now + 1.0)
    assert fast.stats() == full.stats()
    assert (fast.latched_addr, fast.remote_ssrc, fast.remote_addr) == (
        full.latched_addr, full.remote_ssrc, full.remote_addr)


def test_a_key_press_without_end_packets_is_polled_until_reported_then_no_longer() -> None:
    session = _session()
    _feed(session, [_audio(i) for i in range(5)])
    assert session.last_dtmf_in is None  # audio alone: nothing to poll
    for i in range(3):  # the end packets are lost
        event = TelephoneEvent(6, False, 10, 160 * (i + 1)).serialize()
        session.receive(RtpPacket(101, 5 + i, 800, 0x1111, event, i == 0).serialize(), PEER, 0.1 + i * 0.02)
    reported = []
    for tick in range(40):  # audio resumes; the clock polls every 20 ms
        now = 0.16 + tick * 0.02
        session.receive(_audio(8 + tick), PEER, now)
        reported += session.pop_dtmf(now)
    assert reported == [("6", 60)]  # once, after the receiver's timeout
    assert session.last_dtmf_in is None  # polled past the timeout: nothing left open


def test_a_key_press_under_a_second_ssrc_without_end_packets_is_reported_after_its_timeout() -> None:
    session = _session()
    _feed(session, [_audio(i) for i in range(5)])
    for i in range(3):  # SIPp-style DTMF stream beside the live audio; its end packets are lost
        event = TelephoneEvent(2, False, 10, 160 * (i + 1)).serialize()
        data = RtpPacket(101, 300 + i, 7000, 0x7777, event, i == 0).serialize()
        session.receive(data, PEER, 0.1 + i * 0.02)
    reported = []
    for tick in range(40):
        now = 0.16 + tick * 0.02
        session.receive(_audio(5 + tick), PEER, now)
        reported += session.pop_dtmf(now)
    assert reported == [("2", 60)] and session.last_dtmf_in is None
    assert session.remote_ssrc == 0x1111
