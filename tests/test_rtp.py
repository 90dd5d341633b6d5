"""RTP/RTCP wire formats: round trips, every optional header part, and malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simplesip.wire.rtp import (
    RTCP_SDES,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtpPacket,
    RtpParseError,
    SenderReport,
    build_receiver_report,
    build_sdes_cname,
    build_sender_report,
    is_rtcp,
    ntp_from_unix,
    parse_rtcp,
)
from tests.helpers.media_pcap import SIPP_PCAPS, read_udp


def test_parse_known_bytes() -> None:
    data = bytes.fromhex("80e51f30000033e00e05384e") + bytes.fromhex("010a0000")
    packet = RtpPacket.parse(data)
    assert (packet.marker, packet.payload_type, packet.sequence) == (True, 101, 0x1F30)
    assert (packet.timestamp, packet.ssrc, packet.payload) == (0x33E0, 0x0E05384E, b"\x01\x0a\x00\x00")
    assert packet.serialize() == data


def test_round_trip_with_csrcs_extension_and_padding() -> None:
    packet = RtpPacket(
        payload_type=8, sequence=65535, timestamp=0xFFFFFFFF, ssrc=0xDEADBEEF, payload=b"\xd5" * 160,
        marker=True, csrcs=[1, 2, 0xFFFFFFFF], extension_profile=0xBEDE,
        extension_data=b"\x10\xaa\x00\x00", padding=4,
    )
    data = packet.serialize()
    assert len(data) == 12 + 12 + 4 + 4 + 160 + 4
    assert data[0] == 0x80 | 0x20 | 0x10 | 3 and data[-1] == 4
    assert RtpPacket.parse(data) == packet


@given(
    payload_type=st.integers(0, 127), sequence=st.integers(0, 0xFFFF), timestamp=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1), payload=st.binary(max_size=64), marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=15),
    extension=st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12))),
    padding=st.integers(0, 255),
)
def test_round_trip_property(payload_type, sequence, timestamp, ssrc, payload, marker, csrcs, extension,
                             padding) -> None:
    profile, ext = None, b""
    if extension is not None:
        profile, ext = extension[0], extension[1] + bytes(-len(extension[1]) % 4)
    packet = RtpPacket(payload_type, sequence, timestamp, ssrc, payload, marker, csrcs, profile, ext, padding)
    assert RtpPacket.parse(packet.serialize()) == packet


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "too short"),
    (bytes.fromhex("80000001") + bytes(7), "too short"),
    (bytes.fromhex("40000001") + bytes(8), "version"),
    (bytes.fromhex("83000001") + bytes(8) + bytes(8), "CSRC"),  # says 3 CSRCs, has 2
    (bytes.fromhex("90000001") + bytes(8) + b"\x00\x00", "extension header"),
    (bytes.fromhex("90000001") + bytes(8) + b"\xbe\xde\x00\x02" + bytes(4), "extension longer"),
    (bytes.fromhex("a0000001") + bytes(8) + b"\x00", "padding"),  # zero padding count
    (bytes.fromhex("a0000001") + bytes(8) + b"\x00\x20", "padding"),  # padding beyond header
])
def test_malformed_rtp_raises_specific_error(data: bytes, reason: str) -> None:
    with pytest.raises(RtpParseError, match=reason):
        RtpPacket.parse(data)
    assert issubclass(RtpParseError, ValueError)


@given(st.binary(max_size=80))
def test_garbage_never_raises_anything_but_parse_error(data: bytes) -> None:
    for parse in (RtpPacket.parse, parse_rtcp):
        try:
            parse(data)
        except RtpParseError:
            pass


def test_serialize_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        RtpPacket(128, 0, 0, 0).serialize()
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, csrcs=list(range(16))).serialize()
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, extension_profile=1, extension_data=b"abc").serialize()


def test_sipp_capture_round_trips_byte_for_byte() -> None:
    for datagram in read_udp(SIPP_PCAPS / "g711a.pcap")[:50]:
        assert RtpPacket.parse(datagram.payload).serialize() == datagram.payload


def test_rtcp_demux_by_second_byte() -> None:
    assert is_rtcp(build_receiver_report(1))
    assert not is_rtcp(RtpPacket(0, 1, 2, 3).serialize())
    assert not is_rtcp(RtpPacket(101, 1, 2, 3, marker=True).serialize())  # 0xE5 = 229, outside 192..223


def test_compound_sr_rr_sdes_round_trip() -> None:
    block = ReportBlock(ssrc=0xAABBCCDD, fraction_lost=25, cumulative_lost=-3, highest_sequence=70000,
                        jitter=42, last_sr=0x12345678, delay_since_last_sr=65536)
    ntp = ntp_from_unix(1_700_000_000.5)
    compound = (build_sender_report(7, ntp, 1234, 10, 1600, [block])
                + build_receiver_report(8, [block, block]) + build_sdes_cname(7, "user@host"))
    sr, rr, sdes = parse_rtcp(compound)
    assert sr == SenderReport(7, ntp, 1234, 10, 1600, (block,))
    assert rr == ReceiverReport(8, (block, block))
    assert isinstance(sdes, RtcpPacket) and sdes.packet_type == RTCP_SDES
    assert b"user@host" in sdes.body and len(compound) % 4 == 0
    assert ntp >> 32 == 1_700_000_000 + 2_208_988_800 and (ntp & 0xFFFFFFFF) == 1 << 31


def test_report_block_clamps_loss_to_24_bits() -> None:
    data = build_receiver_report(1, [ReportBlock(2, 300, 10**9, 5, 0)])
    (rr,) = parse_rtcp(data)
    assert isinstance(rr, ReceiverReport)
    assert rr.reports[0].cumulative_lost == 0x7FFFFF and rr.reports[0].fraction_lost == 255


@pytest.mark.parametrize("data", [
    b"\x81",
    struct.pack("!BBH", 0x81, 201, 1) + bytes(4),  # RR claims a block it does not have
    struct.pack("!BBH", 0x80, 200, 1) + bytes(4),  # SR without sender info
    struct.pack("!BBH", 0x80, 201, 9) + bytes(4),  # length past the end
    struct.pack("!BBH", 0x40, 201, 1) + bytes(4),  # version 1
    build_receiver_report(1) + b"\x80",  # trailing byte
    struct.pack("!BBH", 0xA0, 201, 1) + bytes(3) + b"\x09",  # padding longer than packet
])
def test_malformed_rtcp_raises_parse_error(data: bytes) -> None:
    with pytest.raises(RtpParseError):
        parse_rtcp(data)


# --- exact behaviour at the edges (mutation testing, docs/testing.md) ------------------------------

@pytest.mark.parametrize(("data", "message"), [
    (bytes.fromhex("40000001") + bytes(8), "unsupported RTP version 1"),
    (bytes.fromhex("c0000001") + bytes(8), "unsupported RTP version 3"),
    (bytes.fromhex("83000001") + bytes(8) + bytes(8), "RTP packet truncated in CSRC list"),
    (bytes.fromhex("90000001") + bytes(8) + b"\x00\x00", "RTP packet truncated in extension header"),
    (bytes.fromhex("90000001") + bytes(8) + b"\xbe\xde\x00\x02" + bytes(7), "RTP header extension longer than packet"),
    (bytes.fromhex("a0000001") + bytes(8) + b"\x00", "invalid RTP padding length 0"),
    (bytes.fromhex("a0000001") + bytes(8) + b"\x00\x20", "invalid RTP padding length 32"),
])
def test_malformed_rtp_error_messages(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError) as caught:
        RtpPacket.parse(data)
    assert str(caught.value) == message


def test_extension_that_ends_the_packet_exactly() -> None:
    # RFC 3550 §5.3.1: the length counts 32-bit words after the 4-byte extension header.
    data = bytes.fromhex("90000001") + bytes(8) + b"\xbe\xde\x00\x02" + b"\x11\x22\x33\x44\x55\x66\x77\x88"
    packet = RtpPacket.parse(data)
    assert (packet.extension_profile, packet.extension_data, packet.payload) == (
        0xBEDE, b"\x11\x22\x33\x44\x55\x66\x77\x88", b"")


def test_empty_extension_at_the_end_of_the_packet() -> None:
    packet = RtpPacket.parse(bytes.fromhex("90000001") + bytes(8) + b"\x10\x00\x00\x00")
    assert (packet.extension_profile, packet.extension_data, packet.payload) == (0x1000, b"", b"")


def test_field_ranges_at_their_limits() -> None:
    data = RtpPacket(127, 0, 0, 0, padding=255).serialize()
    assert data[1] == 127 and len(data) == 12 + 255 and data[-1] == 255
    assert RtpPacket.parse(data).padding == 255
    for packet, message in [
        (RtpPacket(128, 0, 0, 0), "payload type out of range: 128"),
        (RtpPacket(-1, 0, 0, 0), "payload type out of range: -1"),
        (RtpPacket(0, 0, 0, 0, csrcs=list(range(16))), "at most 15 CSRCs fit in an RTP header"),
        (RtpPacket(0, 0, 0, 0, extension_profile=1, extension_data=b"abc"),
         "RTP header extension must be a multiple of 4 bytes"),
        (RtpPacket(0, 0, 0, 0, padding=256), "padding out of range: 256"),
        (RtpPacket(0, 0, 0, 0, padding=-1), "padding out of range: -1"),
    ]:
        with pytest.raises(ValueError) as caught:
            packet.serialize()
        assert str(caught.value) == message
    assert len(RtpPacket(0, 0, 0, 0, csrcs=list(range(15))).serialize()) == 12 + 60


@pytest.mark.parametrize(("data", "expected"), [
    (b"\x80\xc0", True), (b"\x80\xc8", True), (b"\x80\xdf", True),  # 192, SR 200, 223
    (b"\x80\xbf", False), (b"\x80\xe0", False), (b"\x80", False), (b"", False),  # 191, 224, too short
])
def test_rtcp_demux_boundaries(data: bytes, expected: bool) -> None:
    # RFC 5761 §4: RTCP packet types 192-223 in the second byte; everything else is RTP.
    assert is_rtcp(data) is expected


def test_report_block_clamps_and_keeps_zero() -> None:
    block = ReportBlock(ssrc=0xFFFFFFFF, fraction_lost=0, cumulative_lost=-(10**9), highest_sequence=0,
                        jitter=0)
    data = block.serialize()
    assert data[4] == 0 and data[5:8] == b"\x80\x00\x00"  # -2**23, the most negative 24-bit value
    assert ReportBlock.parse(data, 0) == ReportBlock(0xFFFFFFFF, 0, -0x800000, 0, 0)
    assert ReportBlock(1, -5, -1, 0, 0).serialize()[4:8] == b"\x00\xff\xff\xff"


def test_rtcp_header_only_packet_and_header_only_trailer() -> None:
    bye = struct.pack("!BBH", 0x80, 203, 0)  # an empty BYE: just the 4-byte header
    assert parse_rtcp(bye) == [RtcpPacket(203, 0, b"")]
    rr = build_receiver_report(5)
    assert parse_rtcp(rr + bye) == [ReceiverReport(5), RtcpPacket(203, 0, b"")]
    assert parse_rtcp(bye + rr) == [RtcpPacket(203, 0, b""), ReceiverReport(5)]  # the body ends at its length


@pytest.mark.parametrize(("data", "message"), [
    (b"\x80\xc9\x00", "RTCP packet too short"),
    (build_receiver_report(1) + b"\x80\xc9\x00", "trailing bytes after RTCP packet"),
    (struct.pack("!BBH", 0x40, 201, 1) + bytes(4), "unsupported RTCP version 1"),
    (struct.pack("!BBH", 0xC0, 201, 1) + bytes(4), "unsupported RTCP version 3"),
    (struct.pack("!BBH", 0x80, 201, 2) + bytes(4), "RTCP length runs past the end of the datagram"),
    (struct.pack("!BBH", 0xA0, 203, 1) + bytes(4), "invalid RTCP padding"),  # padding count 0
    (struct.pack("!BBH", 0xA0, 203, 1) + bytes(3) + b"\x05", "invalid RTCP padding"),  # into the header
    (build_receiver_report(1) + struct.pack("!BBH", 0xA0, 203, 1) + bytes(3) + b"\x05", "invalid RTCP padding"),
    (struct.pack("!BBH", 0x81, 200, 6) + bytes(24), "RTCP SR shorter than its report count"),
    (struct.pack("!BBH", 0x81, 200, 11) + bytes(44), "RTCP SR shorter than its report count"),
    (struct.pack("!BBH", 0x81, 201, 1) + bytes(4), "RTCP RR shorter than its report count"),
    (struct.pack("!BBH", 0x82, 201, 12) + bytes(48), "RTCP RR shorter than its report count"),
])
def test_malformed_rtcp_error_messages(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError) as caught:
        parse_rtcp(data)
    assert str(caught.value) == message


def test_rtcp_padding_is_removed_from_the_body() -> None:
    # RFC 3550 §6.4.1: the last octet of a padded packet counts the padding, itself included.
    one = struct.pack("!BBH", 0xA1, 203, 1) + b"\x01\x02\x03" + b"\x01"
    four = struct.pack("!BBH", 0xA1, 203, 2) + b"\x0a\x0b\x0c\x0d" + b"\x00\x00\x00\x04"
    all_padding = struct.pack("!BBH", 0xA0, 203, 1) + b"\x00\x00\x00\x04"
    sdes = build_sdes_cname(9, "x")
    assert parse_rtcp(one + four + all_padding + sdes) == [
        RtcpPacket(203, 1, b"\x01\x02\x03"), RtcpPacket(203, 1, b"\x0a\x0b\x0c\x0d"), RtcpPacket(203, 0, b""),
        RtcpPacket(RTCP_SDES, 1, sdes[4:]),
    ]


def test_unsigned_ssrcs_and_full_reports() -> None:
    block = ReportBlock(0xFFFFFFFE, 1, 2, 3, 4, 5, 6)
    sr = build_sender_report(0xFFFFFFFF, 0xFFFFFFFF_00000001, 0x80000000, 2**32 + 3, 9, [block] * 31)
    rr = build_receiver_report(0x80000000, [block] * 31)
    assert len(sr) == 4 + 24 + 31 * 24 and len(rr) == 8 + 31 * 24
    assert sr[0] == 0x80 | 31 and rr[0] == 0x80 | 31
    assert parse_rtcp(sr + rr) == [
        SenderReport(0xFFFFFFFF, 0xFFFFFFFF_00000001, 0x80000000, 3, 9, (block,) * 31),
        ReceiverReport(0x80000000, (block,) * 31),
    ]
    two = parse_rtcp(build_sender_report(1, 2, 3, 4, 5, [block, ReportBlock(7, 0, 0, 0, 0)]))
    assert two == [SenderReport(1, 2, 3, 4, 5, (block, ReportBlock(7, 0, 0, 0, 0)))]
    for build in (lambda: build_receiver_report(1, [block] * 32), lambda: build_sender_report(1, 0, 0, 0, 0, [block] * 32)):
        with pytest.raises(ValueError) as caught:
            build()
        assert str(caught.value) == "at most 31 report blocks fit in one RTCP packet"


def test_sdes_cname_layout_and_long_names() -> None:
    # RFC 3550 §6.5: SC = 1 chunk; SSRC, CNAME item (type 1, length, text), null item, pad to 32 bits.
    data = build_sdes_cname(0xFFFFFFFF, "ab")
    # "ab" fills the chunk to a 32-bit boundary, so the null item takes a whole word of its own
    assert data == bytes.fromhex("81ca0003") + bytes.fromhex("ffffffff") + b"\x01\x02ab" + bytes(4)
    (sdes,) = parse_rtcp(data)
    assert sdes == RtcpPacket(RTCP_SDES, 1, data[4:])
    ascii_name = build_sdes_cname(1, "x" * 300)  # cut to the 255 octets an item can hold
    assert ascii_name[9] == 255 and ascii_name[10 : 10 + 255] == b"x" * 255
    assert len(ascii_name) == 4 + 264 and ascii_name[10 + 255 :] == bytes(3)
    # 400 octets of UTF-8: cut at a character boundary (254 octets), not inside the 128th "é"
    long = build_sdes_cname(1, "é" * 200)
    assert long[9] == 254 and long[10 : 10 + 254].decode("utf-8") == "é" * 127
    assert len(long) == 4 + 264 and long[10 + 254 :] == bytes(4)
