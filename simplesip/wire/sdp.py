"""SDP (RFC 4566) parsing and serialisation.

``SessionDescription.parse`` understands origin, session name, timing, connection data at session or
media level (media overrides), and per-stream ``rtpmap`` / ``fmtp`` / ``ptime`` / direction
attributes, and reads RFC 4568 SDES ``a=crypto`` lines on demand (:class:`CryptoAttribute`,
:attr:`MediaDescription.crypto`). Every other line is kept, so a parsed description serialises back without losing
anything a peer sent. The kept lines are put in RFC 4566 order as they are parsed (the order they
are written in), so ``parse(serialize(x)) == x`` for every ``x`` that parses. Broken structure is
refused: a second ``v=``, ``o=`` or ``s=``, any of them inside a media section, a second session
``c=``, NUL or a bare CR inside a line, a ``c=``/``o=`` network or address type that is no token.

Negotiation (RFC 3264 offer/answer) is protocol, not wire format: :mod:`simplesip.core.offeranswer`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass, field

from simplesip.errors import SIPParseError

__all__ = [
    "ANSWERABLE_PROTOS", "Connection", "CryptoAttribute", "DIRECTIONS", "MediaDescription", "Origin",
    "RtpMap", "SDPNegotiationError", "SECURE_PROTOS", "SdesKey", "SessionDescription",
]

logger = logging.getLogger(__name__)

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: The codecs this library can encode/decode, with their RFC 3551 static payload types.
SUPPORTED_CODECS = {"PCMU": 0, "PCMA": 8}
#: RFC 3551 table 4: static audio payload types a peer may list without an a=rtpmap line.
STATIC_PAYLOAD_TYPES = {0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000),
                        9: ("G722", 8000), 18: ("G729", 8000)}
DEFAULT_PTIME = 20
TELEPHONE_EVENT = "telephone-event"
# RTP/AVPF is answerable as plain RTP with the feedback ignored; the SAVP profiles need SRTP
# (RFC 3711), answerable only when SRTP is enabled (simplesip.core.offeranswer).
ANSWERABLE_PROTOS = ("RTP/AVP", "RTP/AVPF")
SECURE_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
# Position of each line type in RFC 4566 section 5 order; unknown types go last (before a=).
_SESSION_ORDER = {"i": 0, "u": 1, "e": 2, "p": 3, "c": 4, "b": 5, "t": 6, "r": 6, "z": 7, "k": 8}
_MEDIA_ORDER = {"i": 0, "c": 1, "b": 2, "k": 3}
# RFC 4566 section 9: token-char = %x21 / %x23-27 / %x2A-2B / %x2D-2E / %x30-39 / %x41-5A / %x5E-7E
_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('"(),/:;<=>?@[\\]')
# Types that identify the session and may appear once, before the first m= line.
_SESSION_ONLY_ONCE = ("v", "o", "s")


def _session_rank(line: tuple[str, str]) -> int:
    return _SESSION_ORDER.get(line[0], 9)


def _media_rank(line: tuple[str, str]) -> int:
    return _MEDIA_ORDER.get(line[0], 4)
_HOLD_ADDRESSES = ("0.0.0.0", "::")


class SDPNegotiationError(SIPParseError):
    """No acceptable media in an offer or answer; a UAS answers ``488 Not Acceptable Here``."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason, status)


def _error(reason: str) -> SIPParseError:
    return SIPParseError(f"bad SDP: {reason}")


def _token(text: str, what: str) -> str:
    if not text or not _TOKEN_CHARS.issuperset(text):
        raise _error(f"{what} is not a token: {text!r}")
    return text


def _int(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise _error(f"{what} is not a number: {text!r}")
    return int(text)


@dataclass(frozen=True)
class RtpMap:
    """One ``a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`` mapping."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        """Parse the value after ``a=rtpmap:``; raises SIPParseError."""
        pt_text, _, spec = value.strip().partition(" ")
        parts = spec.strip().split("/")
        if len(parts) not in (2, 3) or not parts[0]:
            raise _error(f"rtpmap {value!r}")
        channels = _int(parts[2], "rtpmap channels") if len(parts) == 3 else None
        return cls(_int(pt_text, "rtpmap payload type"), parts[0], _int(parts[1], "clock rate"), channels)

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


# RFC 4568 section 9.1 (SDES), the parts we read:
#   crypto-attribute = "crypto:" tag 1*WSP crypto-suite 1*WSP key-params *(1*WSP session-param)
#   tag              = 1*9DIGIT
#   key-params       = key-param *(";" key-param)
#   key-param        = key-method ":" key-info        ; key-method "inline" (section 6.1)
#   key-info         = key-salt ["|" lifetime] ["|" mki ":" mki-length]
#   lifetime         = ["2^"] 1*(DIGIT)
_CRYPTO_TAG = re.compile(r"[0-9]{1,9}\Z")
_LIFETIME = re.compile(r"(2\^)?([0-9]{1,20})\Z")
_MKI = re.compile(r"([0-9]{1,20}):([0-9]{1,3})\Z")


@dataclass(frozen=True)
class SdesKey:
    """One ``inline:`` key-param of an ``a=crypto`` line: master key and salt concatenated, the
    optional lifetime (in packets) and the optional MKI as ``(value, length in bytes)``."""

    key_salt: bytes
    lifetime: int | None = None
    mki: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> SdesKey:
        method, sep, info = text.partition(":")
        if method.lower() != "inline" or not sep:
            raise _error(f"crypto key-param is not inline: {text[:40]!r}")
        parts = info.split("|")
        encoded = parts[0]
        try:  # some peers leave out the base64 padding
            key_salt = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise _error(f"crypto key is not base64: {encoded[:40]!r}") from None
        if not key_salt:
            raise _error("empty crypto key")
        lifetime = mki = None
        for extra in parts[1:]:
            if (match := _MKI.match(extra)) is not None and mki is None:
                mki = (int(match[1]), int(match[2]))
            elif (match := _LIFETIME.match(extra)) is not None and lifetime is None and mki is None:
                lifetime = 2 ** int(match[2]) if match[1] else int(match[2])
            else:
                raise _error(f"crypto key-info {info[:60]!r}")
        return cls(key_salt, lifetime, mki)

    def __str__(self) -> str:
        text = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            power = self.lifetime.bit_length() - 1
            text += f"|2^{power}" if self.lifetime == 1 << power else f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki[0]}:{self.mki[1]}"
        return text


@dataclass(frozen=True)
class CryptoAttribute:
    """One RFC 4568 ``a=crypto:<tag> <suite> <key-params> [<session-params>]`` line.

    ``keys`` holds every key-param (several only with MKIs); which suites and parameters are
    acceptable is negotiation's business (:mod:`simplesip.core.srtp`), not the parser's.
    """

    tag: int
    suite: str
    keys: tuple[SdesKey, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value after ``a=crypto:``; raises SIPParseError."""
        fields = value.split()
        if len(fields) < 3 or not _CRYPTO_TAG.match(fields[0]):
            raise _error(f"crypto {value[:60]!r}")
        keys = tuple(SdesKey.parse(part) for part in fields[2].split(";"))
        return cls(int(fields[0]), _token(fields[1], "crypto suite"), keys, tuple(fields[3:]))

    @property
    def key_salt(self) -> bytes:
        """The first key's master key and salt."""
        return self.keys[0].key_salt

    def __str__(self) -> str:
        keys = ";".join(str(key) for key in self.keys)
        return " ".join([str(self.tag), self.suite, keys, *self.session_params])


@dataclass
class Origin:
    """The ``o=`` line: who made the description, and which version of it this is."""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    net_type: str = "IN"
    addr_type: str = "IP4"
    address: str = "127.0.0.1"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise _error(f"o= needs 6 fields, got {value!r}")
        return cls(parts[0], parts[1], _int(parts[2], "o= version"), _token(parts[3], "o= network type"),
                   _token(parts[4], "o= address type"), parts[5])

    def __str__(self) -> str:
        return (f"{self.username} {self.session_id} {self.session_version} "
                f"{self.net_type} {self.addr_type} {self.address}")


@dataclass
class Connection:
    """A ``c=`` line. ``address`` may carry multicast ``/ttl/count`` suffixes; ``host`` drops them."""

    address: str
    net_type: str = "IN"
    addr_type: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise _error(f"c= needs 3 fields, got {value!r}")
        return cls(parts[2], _token(parts[0], "c= network type"), _token(parts[1], "c= address type"))

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(address, "IN", "IP6" if ":" in address else "IP4")

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """RFC 2543 style hold: a null connection address (RFC 3264 section 8.4)."""
        return self.host in _HOLD_ADDRESSES

    def __str__(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"


@dataclass
class MediaDescription:
    """One ``m=`` section. ``attributes`` holds every a= line not parsed into a field, in order."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    direction: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def payload_types(self) -> list[int]:
        """The formats that are RTP payload type numbers."""
        return [int(f) for f in self.formats if f.isascii() and f.isdigit() and int(f) < 128]

    @property
    def crypto(self) -> list[CryptoAttribute]:
        """The stream's RFC 4568 ``a=crypto`` lines that parse, in order (the lines themselves
        stay in ``attributes``; one that does not parse is skipped, as RFC 4568 §7.1.2 asks)."""
        found = []
        for name, value in self.attributes:
            if name == "crypto" and value is not None:
                try:
                    found.append(CryptoAttribute.parse(value))
                except SIPParseError:
                    logger.debug("ignoring unreadable a=crypto:%s", value[:60])
        return found

    def codec(self, payload_type: int) -> RtpMap | None:
        """The mapping for a payload type: a=rtpmap first, then the RFC 3551 static table."""
        if payload_type in self.rtpmap:
            return self.rtpmap[payload_type]
        if payload_type in STATIC_PAYLOAD_TYPES:
            name, rate = STATIC_PAYLOAD_TYPES[payload_type]
            return RtpMap(payload_type, name, rate)
        return None

    def find_payload_type(self, encoding: str, clock_rate: int = 8000) -> int | None:
        """The first listed payload type carrying ``encoding`` at ``clock_rate``, if any."""
        for pt in self.payload_types:
            mapping = self.codec(pt)
            if mapping and mapping.encoding.upper() == encoding.upper() and mapping.clock_rate == clock_rate:
                return pt
        return None

    def _parse_attribute(self, name: str, value: str | None) -> None:
        if name == "rtpmap" and value is not None:
            try:
                mapping = RtpMap.parse(value)
            except SIPParseError:
                # A mapping we cannot read (RFC 4475's "a=rtpmap:31 LPC", a line cut short) is
                # kept verbatim and leaves its payload type unmapped; the rest of the stream stands.
                self.attributes.append((name, value))
                return
            self.rtpmap[mapping.payload_type] = mapping
        elif name == "fmtp" and value is not None:
            pt_text, _, params = value.strip().partition(" ")
            if pt_text.isascii() and pt_text.isdigit():
                self.fmtp[int(pt_text)] = params.strip()
            else:  # fmtp for a non-RTP format: keep it verbatim
                self.attributes.append((name, value))
        elif name == "ptime" and value is not None:
            try:
                ptime = float(value)  # some peers write "20.0"
            except ValueError:
                ptime = -1.0
            if not 0 < ptime <= 1000:  # also refuses nan and inf
                raise _error(f"ptime {value!r}")
            self.ptime = max(1, round(ptime))
        elif name in DIRECTIONS and value is None:
            self.direction = name
        else:
            self.attributes.append((name, value))

    def _lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        lines = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        others = list(self.other_lines)
        if self.connection is not None:
            others.append(("c", str(self.connection)))
        others.sort(key=_media_rank)
        lines += [f"{kind}={value}" for kind, value in others]
        # Listed formats first, in order; then mappings for unlisted ones, which peers do send.
        listed = self.payload_types
        for pt in listed + sorted((self.rtpmap.keys() | self.fmtp.keys()) - set(listed)):
            if pt in self.rtpmap:
                lines.append(f"a=rtpmap:{self.rtpmap[pt]}")
            if pt in self.fmtp:
                lines.append(f"a=fmtp:{pt} {self.fmtp[pt]}")
        if self.ptime is not None:
            lines.append(f"a=ptime:{self.ptime}")
        lines += [_attribute_line(name, value) for name, value in self.attributes]
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        return lines


def _attribute_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


@dataclass
class SessionDescription:
    """A whole SDP body. ``timing`` is the first t= line; further t=/r=/z= stay in ``other_lines``."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: Connection | None = None
    timing: tuple[int, int] = (0, 0)
    direction: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body; raises :class:`SIPParseError` (status 400) on malformed input."""
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                raise _error("not UTF-8") from None
        lines = [line.rstrip() for line in data.split("\n")]
        lines = [line for line in lines if line]
        if not lines or lines[0] != "v=0":
            raise _error("must start with v=0")
        sdp = cls()
        seen: set[str] = {"v"}
        current: MediaDescription | None = None
        for line in lines[1:]:
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise _error(f"not a <type>=<value> line: {line[:40]!r}")
            if "\x00" in line or "\r" in line:  # outside RFC 4566's byte-string; a CR would split the line
                raise _error(f"NUL or CR inside a line: {line[:40]!r}")
            kind, value = line[0], line[2:]
            if kind in _SESSION_ONLY_ONCE and (kind in seen or current is not None):
                raise _error(f"{kind}= inside a media section" if current else f"repeated {kind}= line")
            if kind == "m":
                current = _parse_media_line(value)
                sdp.media.append(current)
            elif kind == "a":
                name, sep, attr_value = value.partition(":")
                if current is not None:
                    current._parse_attribute(name, attr_value if sep else None)
                elif name in DIRECTIONS and not sep:
                    sdp.direction = name
                else:
                    sdp.attributes.append((name, attr_value if sep else None))
            elif current is not None:
                if kind == "c":
                    current.connection = Connection.parse(value)
                else:
                    current.other_lines.append((kind, value))
            elif kind == "o":
                sdp.origin = Origin.parse(value)
            elif kind == "s":
                sdp.session_name = value or "-"  # RFC 4566 asks for "s= " or "s=-", never empty
            elif kind == "c":
                if sdp.connection is not None:
                    raise _error("repeated session c= line")
                sdp.connection = Connection.parse(value)
            elif kind == "t" and "t" not in seen:
                start, _, stop = value.partition(" ")
                sdp.timing = (_int(start, "t= start"), _int(stop.strip(), "t= stop"))
            else:
                sdp.other_lines.append((kind, value))
            seen.add(kind)
        if "o" not in seen:
            raise _error("no o= line")
        # Stable sorts, the same as serialize() does: the model is what will be written.
        sdp.other_lines.sort(key=_session_rank)
        for media in sdp.media:
            media.other_lines.sort(key=_media_rank)
        for media in sdp.media:
            if media.port != 0 and sdp.connection_for(media) is None:
                raise _error(f"no c= line for the {media.media} stream")
        return sdp

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The connection that applies to ``media``: its own c= line, else the session's."""
        return media.connection or self.connection

    def direction_for(self, media: MediaDescription) -> str:
        """The direction that applies to ``media``: its own, else the session's, else sendrecv."""
        return media.direction or self.direction or "sendrecv"

    def serialize(self) -> bytes:
        """The SDP body as CRLF-terminated UTF-8 lines."""
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name or '-'}"]
        others = list(self.other_lines)
        if self.connection is not None:
            others.append(("c", str(self.connection)))
        # The structured t= line goes before any extra t=/r= lines, which keep their own order.
        others.insert(0, ("t", f"{self.timing[0]} {self.timing[1]}"))
        others.sort(key=_session_rank)
        lines += [f"{kind}={value}" for kind, value in others]
        lines += [_attribute_line(name, value) for name, value in self.attributes]
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        for media in self.media:
            lines += media._lines()
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _parse_media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise _error(f"m= needs media, port and proto: {value!r}")
    port_text, _, count_text = parts[1].partition("/")
    port = _int(port_text, "m= port")
    if port > 65535:
        raise _error(f"m= port {port} out of range")
    count = _int(count_text, "m= port count") if count_text else None
    return MediaDescription(parts[0], port, parts[2], parts[3:], port_count=count)

