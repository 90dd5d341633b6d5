"""RTP and RTCP wire formats (RFC 3550), sans-IO.

``RtpPacket.parse``/``serialize`` cover the whole fixed header, the CSRC list, one header
extension and padding. RTCP compound packets are split into sender reports, receiver reports and
opaque other packets; malformed input of either kind raises :class:`RtpParseError` (a
``ValueError``) with a specific message and never any other exception.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "RtpParseError",
    "RtpPacket",
    "ReportBlock",
    "SenderReport",
    "ReceiverReport",
    "RtcpPacket",
    "is_rtcp",
    "parse_rtcp",
    "build_receiver_report",
    "build_sender_report",
    "build_sdes_cname",
    "ntp_from_unix",
    "RTCP_SR",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_BYE",
    "RTCP_APP",
]

logger = logging.getLogger(__name__)

RTP_VERSION: Final = 2
RTP_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
EXTENSION_HEADER = struct.Struct("!HH")  # profile-defined bits, length in 32-bit words
RTCP_HEADER = struct.Struct("!BBH")  # V/P/RC, packet type, length in 32-bit words minus one
SENDER_INFO = struct.Struct("!IIIII")  # NTP msw, NTP lsw, RTP timestamp, packet count, octet count
REPORT_BLOCK = struct.Struct("!IB3sIIII")  # SSRC, fraction lost, cumulative lost (24 bit), ...

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204
SDES_CNAME: Final = 1

NTP_UNIX_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


class RtpParseError(ValueError):
    """A datagram that is not a well-formed RTP or RTCP packet."""


@dataclass
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    ``extension_profile`` is None when the packet has no header extension; ``extension_data`` is
    the extension body (a multiple of 4 bytes). ``padding`` is the number of padding bytes,
    including the final count byte, to append when serialising (0 for none).
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: list[int] = field(default_factory=list)
    extension_profile: int | None = None
    extension_data: bytes = b""
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP datagram. Raises RtpParseError if it is malformed."""
        if len(data) < RTP_HEADER.size:
            raise RtpParseError(f"RTP packet too short ({len(data)} bytes)")
        first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpParseError(f"unsupported RTP version {first >> 6}")
        csrc_count = first & 0x0F
        offset = RTP_HEADER.size + 4 * csrc_count
        if len(data) < offset:
            raise RtpParseError("RTP packet truncated in CSRC list")
        csrcs = list(struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER.size))

        extension_profile: int | None = None
        extension_data = b""
        if first & 0x10:
            if len(data) < offset + EXTENSION_HEADER.size:
                raise RtpParseError("RTP packet truncated in extension header")
            extension_profile, words = EXTENSION_HEADER.unpack_from(data, offset)
            offset += EXTENSION_HEADER.size
            if len(data) < offset + 4 * words:
                raise RtpParseError("RTP header extension longer than packet")
            extension_data = bytes(data[offset : offset + 4 * words])
            offset += 4 * words

        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or end - padding < offset:
                raise RtpParseError(f"invalid RTP padding length {padding}")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrcs=csrcs,
            extension_profile=extension_profile,
            extension_data=extension_data,
            padding=padding,
        )

    def serialize(self) -> bytes:
        """Encode to wire format. Raises ValueError on out-of-range fields."""
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type out of range: {self.payload_type}")
        if len(self.csrcs) > 15:
            raise ValueError("at most 15 CSRCs fit in an RTP header")
        if len(self.extension_data) % 4:
            raise ValueError("RTP header extension must be a multiple of 4 bytes")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"padding out of range: {self.padding}")
        first = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            first |= 0x20
        if self.extension_profile is not None:
            first |= 0x10
        parts = [
            RTP_HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            ),
            struct.pack(f"!{len(self.csrcs)}I", *self.csrcs),
        ]
        if self.extension_profile is not None:
            parts.append(EXTENSION_HEADER.pack(self.extension_profile, len(self.extension_data) // 4))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """True if a datagram on a muxed RTP/RTCP port is RTCP (RFC 5761 §4: second byte 192..223)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


# --- RTCP -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # fixed point, lost/expected * 256 over the last interval
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int  # extended highest sequence number received
    jitter: int  # interarrival jitter in timestamp units
    last_sr: int = 0  # middle 32 bits of the NTP timestamp of the last SR received
    delay_since_last_sr: int = 0  # in units of 1/65536 s

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = REPORT_BLOCK.unpack_from(data, offset)
        cumulative = int.from_bytes(lost, "big", signed=True)
        return cls(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr)

    def serialize(self) -> bytes:
        # Clamp rather than fail: a report must still go out when loss overflows 24 bits.
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost))
        return REPORT_BLOCK.pack(
            self.ssrc,
            max(0, min(255, self.fraction_lost)),
            lost.to_bytes(3, "big", signed=True),
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.last_sr & 0xFFFFFFFF,
            self.delay_since_last_sr & 0xFFFFFFFF,
        )


@dataclass(frozen=True)
class SenderReport:
    """RTCP SR: the sender's clocks and counters, plus its reception reports."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class ReceiverReport:
    """RTCP RR: reception reports from a participant that is not sending."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class RtcpPacket:
    """Any other RTCP packet (SDES, BYE, APP, feedback...), kept opaque."""

    packet_type: int
    count: int
    body: bytes


def parse_rtcp(data: bytes) -> list[SenderReport | ReceiverReport | RtcpPacket]:
    """Split a compound RTCP datagram into its packets.

    Raises RtpParseError for anything malformed (bad version, lengths running past the end,
    report counts that do not fit), so callers can drop the datagram with one ``except``.
    """
    packets: list[SenderReport | ReceiverReport | RtcpPacket] = []
    offset = 0
    if len(data) < RTCP_HEADER.size:
        raise RtpParseError("RTCP packet too short")
    while offset < len(data):
        if len(data) - offset < RTCP_HEADER.size:
            raise RtpParseError("trailing bytes after RTCP packet")
        first, packet_type, words = RTCP_HEADER.unpack_from(data, offset)
        if first >> 6 != RTP_VERSION:
            raise RtpParseError(f"unsupported RTCP version {first >> 6}")
        end = offset + 4 * (words + 1)
        if end > len(data):
            raise RtpParseError("RTCP length runs past the end of the datagram")
        count = first & 0x1F
        body_end = end
        if first & 0x20:
            padding = data[end - 1]
            if padding == 0 or end - padding < offset + RTCP_HEADER.size:
                raise RtpParseError("invalid RTCP padding")
            body_end = end - padding
        body = bytes(data[offset + RTCP_HEADER.size : body_end])
        packets.append(_parse_rtcp_body(packet_type, count, body))
        offset = end
    return packets


def _parse_rtcp_body(packet_type: int, count: int, body: bytes) -> SenderReport | ReceiverReport | RtcpPacket:
    if packet_type == RTCP_SR:
        need = 4 + SENDER_INFO.size + count * REPORT_BLOCK.size
        if len(body) < need:
            raise RtpParseError("RTCP SR shorter than its report count")
        (ssrc,) = struct.unpack_from("!I", body)
        ntp_msw, ntp_lsw, rtp_ts, packets, octets = SENDER_INFO.unpack_from(body, 4)
        blocks = _parse_blocks(body, 4 + SENDER_INFO.size, count)
        return SenderReport(ssrc, (ntp_msw << 32) | ntp_lsw, rtp_ts, packets, octets, blocks)
    if packet_type == RTCP_RR:
        if len(body) < 4 + count * REPORT_BLOCK.size:
            raise RtpParseError("RTCP RR shorter than its report count")
        (ssrc,) = struct.unpack_from("!I", body)
        return ReceiverReport(ssrc, _parse_blocks(body, 4, count))
    return RtcpPacket(packet_type, count, body)


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(ReportBlock.parse(body, offset + i * REPORT_BLOCK.size) for i in range(count))


def _rtcp_header(packet_type: int, count: int, body_len: int) -> bytes:
    return RTCP_HEADER.pack((RTP_VERSION << 6) | count, packet_type, (RTCP_HEADER.size + body_len) // 4 - 1)


def build_receiver_report(ssrc: int, blocks: list[ReportBlock] | tuple[ReportBlock, ...] = ()) -> bytes:
    """One RTCP RR packet from ``ssrc`` carrying up to 31 report blocks."""
    if len(blocks) > 31:
        raise ValueError("at most 31 report blocks fit in one RTCP packet")
    body = struct.pack("!I", ssrc) + b"".join(block.serialize() for block in blocks)
    return _rtcp_header(RTCP_RR, len(blocks), len(body)) + body


def build_sender_report(
    ssrc: int,
    ntp_timestamp: int,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    blocks: list[ReportBlock] | tuple[ReportBlock, ...] = (),
) -> bytes:
    """One RTCP SR packet. ``ntp_timestamp`` is 64-bit NTP (see :func:`ntp_from_unix`)."""
    if len(blocks) > 31:
        raise ValueError("at most 31 report blocks fit in one RTCP packet")
    body = struct.pack("!I", ssrc) + SENDER_INFO.pack(
        (ntp_timestamp >> 32) & 0xFFFFFFFF,
        ntp_timestamp & 0xFFFFFFFF,
        rtp_timestamp & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF,
        octet_count & 0xFFFFFFFF,
    ) + b"".join(block.serialize() for block in blocks)
    return _rtcp_header(RTCP_SR, len(blocks), len(body)) + body


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    """An RTCP SDES packet with one chunk holding the CNAME (required in every compound packet)."""
    # An SDES item holds at most 255 octets of UTF-8 (RFC 3550 §6.5): cut at a character boundary,
    # never inside a multi-byte character.
    text = cname.encode("utf-8")[:255].decode("utf-8", "ignore").encode("utf-8")
    chunk = struct.pack("!IBB", ssrc, SDES_CNAME, len(text)) + text
    # The item list ends with a null item, then pads the chunk to a 32-bit boundary.
    chunk += bytes(4 - len(chunk) % 4)
    return _rtcp_header(RTCP_SDES, 1, len(chunk)) + chunk


def ntp_from_unix(unix_time: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) for a Unix time in seconds."""
    return int((unix_time + NTP_UNIX_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF
