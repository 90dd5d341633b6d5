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
