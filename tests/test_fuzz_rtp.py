"""Property tests for the media parsers: RTP, RTCP, RFC 4733 and the per-call RtpSession.

Hostile datagrams reach these parsers straight from the network (any host can send to an RTP
port), so the rule is the same as for SIP: arbitrary bytes either parse or raise the documented
error (:class:`RtpParseError`; :class:`ValueError` for a telephone-event payload), and whatever
parses must serialise back to an equivalent packet.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplesip.core.dtmf import DtmfReceiver
from simplesip.core.rtpsession import RtpSession
from simplesip.wire.dtmf_payloads import DTMF_EVENTS, TelephoneEvent
from simplesip.wire.rtp import (
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    RtpParseError,
    SenderReport,
    build_receiver_report,
    build_sdes_cname,
    build_sender_report,
    parse_rtcp,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

rtp_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=u16,
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(u32, max_size=15),
    extension_profile=st.one_of(st.none(), u16),
    extension_data=st.binary(max_size=40).map(lambda b: b[: len(b) - len(b) % 4]),
    padding=st.integers(0, 255),
).map(lambda p: p if p.extension_profile is not None else _without_extension(p))


def _without_extension(packet: RtpPacket) -> RtpPacket:
    packet.extension_data = b""  # extension bytes only exist on the wire with a profile
    return packet


@st.composite
def rtp_like(draw: st.DrawFn) -> bytes:
    """Bytes that look like RTP (version 2 with random flags and counts) so the fuzzer gets
    past the version check and into the CSRC, extension and padding arithmetic."""
    first = 0x80 | draw(u8) & 0x3F
    return bytes([first]) + draw(st.binary(max_size=120))


@st.composite
def rtcp_like(draw: st.DrawFn) -> bytes:
    """One or more RTCP-shaped headers with random counts and lengths, then random bodies."""
    chunks = []
    for _ in range(draw(st.integers(1, 3))):
        first = 0x80 | draw(u8) & 0x3F
        packet_type = draw(st.sampled_from([200, 201, 202, 203, 204, 205, draw(u8)]))
        chunks.append(struct.pack("!BBH", first, packet_type, draw(st.integers(0, 40))))
        chunks.append(draw(st.binary(max_size=80)))
    return b"".join(chunks)


report_blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=u8,
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=u32,
    jitter=u32,
    last_sr=u32,
    delay_since_last_sr=u32,
)


# --- RTP -----------------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=300), rtp_like()))
def test_rtp_parse_raises_only_rtp_parse_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError as exc:
        assert str(exc)
        return
    # What we accepted must describe the datagram exactly (padding bytes are not kept).
    again = RtpPacket.parse(packet.serialize())
    assert again == packet
    assert len(packet.csrcs) <= 15 and 0 <= packet.payload_type <= 127


@FUZZ
@given(rtp_packets)
def test_rtp_serialize_parse_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet


@FUZZ
@given(rtp_packets, st.integers(1, 60))
def test_rtp_truncated_packet_never_parses_past_its_end(packet: RtpPacket, cut: int) -> None:
    wire = packet.serialize()
    truncated = wire[: max(0, len(wire) - cut)]
    try:
        parsed = RtpPacket.parse(truncated)
    except RtpParseError:
        return
    # A cut that only removed payload (or padding read as payload) still yields a sane packet.
    assert len(parsed.payload) + len(parsed.extension_data) <= len(truncated)


# --- RTCP ----------------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=300), rtcp_like()))
def test_rtcp_parse_raises_only_rtp_parse_error(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except RtpParseError as exc:
        assert str(exc)
        return
    assert packets, "a datagram that parses holds at least one RTCP packet"
    for packet in packets:
        if isinstance(packet, (SenderReport, ReceiverReport)):
            for block in packet.reports:
                assert -0x800000 <= block.cumulative_lost <= 0x7FFFFF


@FUZZ
@given(u32, st.integers(0, 2**64 - 1), u32, u32, u32, st.lists(report_blocks, max_size=31),
       st.text(max_size=40))
def test_rtcp_compound_round_trip(ssrc: int, ntp: int, rtp_ts: int, count: int, octets: int,
                                  blocks: list[ReportBlock], cname: str) -> None:
    compound = (build_sender_report(ssrc, ntp, rtp_ts, count, octets, blocks)
                + build_receiver_report(ssrc, blocks) + build_sdes_cname(ssrc, cname))
    sr, rr, sdes = parse_rtcp(compound)
    assert sr == SenderReport(ssrc, ntp, rtp_ts, count, octets, tuple(blocks))
    assert rr == ReceiverReport(ssrc, tuple(blocks))
    assert sdes.packet_type == 202 and sdes.count == 1


# --- RFC 4733 ------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=16))
def test_telephone_event_parse_raises_only_value_error(payload: bytes) -> None:
    try:
        event = TelephoneEvent.parse(payload)
    except ValueError:
        assert len(payload) < 4
        return
    assert TelephoneEvent.parse(event.serialize()) == event
    assert event.digit is None or event.digit in DTMF_EVENTS


@FUZZ
@given(st.lists(st.tuples(u32, st.booleans(), st.binary(max_size=8), st.floats(0, 100)), max_size=60))
def test_dtmf_receiver_survives_any_packet_stream(packets: list[tuple[int, bool, bytes, float]]) -> None:
    receiver = DtmfReceiver()
    reported = []
    now = 0.0
    for timestamp, marker, payload, step in packets:
        now += step
        reported += receiver.feed(timestamp, marker, payload, now)
        reported += receiver.poll(now)
    reported += receiver.poll(now + 10)
    starts = {ts for ts, _, payload, _ in packets if len(payload) >= 4 and payload[0] < 16}
    # Each key press is a distinct event timestamp: never more reports than events offered...
    assert len(reported) <= len(packets)
    for digit in reported:
        assert digit.digit in DTMF_EVENTS and digit.duration_ms >= 0
    # ...and every DTMF event offered produced at least one report once everything timed out.
    assert (not starts) or reported


@FUZZ
@given(st.sampled_from(DTMF_EVENTS), u32, st.integers(1, 6), st.sets(st.integers(0, 8), max_size=6))
def test_dtmf_digit_survives_any_loss_pattern(digit: str, start: int, updates: int,
                                              lost: set[int]) -> None:
    """A key press is reported exactly once whatever subset of its packets is lost, as long as one
    packet arrives (the end packet x3 may all be gone: the timeout closes the event)."""
    code = DTMF_EVENTS.index(digit)
    stream = [TelephoneEvent(code, duration=160 * (i + 1)) for i in range(updates)]
    stream += [TelephoneEvent(code, end=True, duration=160 * (updates + 1))] * 3
    delivered = [event for index, event in enumerate(stream) if index not in lost]
    receiver = DtmfReceiver()
    reported = []
    for index, event in enumerate(delivered):
        reported += receiver.feed(start, index == 0, event.serialize(), index * 0.02)
    reported += receiver.poll(10.0)
    assert [d.digit for d in reported] == ([digit] if delivered else [])


# --- the per-call session: latching and malformed input ------------------------------------------


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.binary(max_size=200), rtp_like(), rtcp_like()),
                          st.sampled_from([("127.0.0.1", 4000), ("127.0.0.2", 4000), ("127.0.0.1", 4002)])),
                max_size=40))
def test_rtp_session_survives_hostile_datagrams(datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
    session = RtpSession(0, "PCMU", ("127.0.0.1", 4000))
    now = 0.0
    for data, addr in datagrams:
        now += 0.02
        session.receive(data, addr, now)
        frame = session.pull_frame()
        assert len(frame) == 160
        session.pop_dtmf(now)
    stats = session.stats()
    assert isinstance(stats, dict)


@FUZZ
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30))
def test_latched_session_never_takes_foreign_audio(plan: list[tuple[bool, bool]]) -> None:
    """After the first packet latches address+SSRC, injected packets (other address or other
    SSRC) interleaved with the live stream never reach the jitter buffer."""
    peer, injector = ("127.0.0.1", 4000), ("127.0.0.9", 4000)
    session = RtpSession(0, "PCMU", peer, jitter_target_ms=20)
    genuine = b"\x11" * 160
    foreign = b"\x77" * 160
    seq, now = 100, 0.0
    session.receive(RtpPacket(0, seq, seq * 160, 0xAAAA, genuine).serialize(), peer, now)
    rejected_expected = 0
    for other_addr, other_ssrc in plan:
        now += 0.02
        seq += 1
        session.receive(RtpPacket(0, seq, seq * 160, 0xAAAA, genuine).serialize(), peer, now)
        if other_addr or other_ssrc:
            addr = injector if other_addr else peer
            ssrc = 0xBBBB if other_ssrc else 0xAAAA
            session.receive(RtpPacket(0, seq + 1000, seq * 160, ssrc, foreign).serialize(), addr, now)
            rejected_expected += 1
    frames = [session.pull_frame() for _ in range(len(plan) + 4)]
    assert all(frame != foreign for frame in frames)
    assert session.rejected == rejected_expected
    assert session.latched_addr == peer
