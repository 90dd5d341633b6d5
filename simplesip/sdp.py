"""SDP (RFC 4566) parsing and serialisation, and RFC 3264 offer/answer for G.711 audio.

``SessionDescription.parse`` understands origin, session name, timing, connection data at session or
media level (media overrides), and per-stream ``rtpmap`` / ``fmtp`` / ``ptime`` / direction
attributes. Every other line is kept, so a parsed description serialises back without losing
anything a peer sent (lines are written in RFC 4566 order).

Negotiation only produces one audio stream (PCMU or PCMA, plus RFC 4733 telephone-event); any other
stream in an offer is rejected with port 0, as RFC 3264 section 6 asks.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from .errors import SIPParseError

__all__ = [
    "DIRECTIONS", "Connection", "MediaDescription", "MediaParams", "Origin", "RtpMap",
    "SDPNegotiationError", "SdpSession", "SessionDescription", "make_answer", "make_offer",
    "media_params_from_answer",
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
# RTP/AVPF is answerable as plain RTP with the feedback ignored; SAVP needs SRTP, which we lack.
_ANSWERABLE_PROTOS = ("RTP/AVP", "RTP/AVPF")
# Position of each line type in RFC 4566 section 5 order; unknown types go last (before a=).
_SESSION_ORDER = {"i": 0, "u": 1, "e": 2, "p": 3, "c": 4, "b": 5, "t": 6, "r": 6, "z": 7, "k": 8}
_MEDIA_ORDER = {"i": 0, "c": 1, "b": 2, "k": 3}
_HOLD_ADDRESSES = ("0.0.0.0", "::")


class SDPNegotiationError(SIPParseError):
    """No acceptable media in an offer or answer; a UAS answers ``488 Not Acceptable Here``."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason, status)


def _error(reason: str) -> SIPParseError:
    return SIPParseError(f"bad SDP: {reason}")


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
        return cls(parts[0], parts[1], _int(parts[2], "o= version"), parts[3], parts[4], parts[5])

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
        return cls(parts[2], parts[0], parts[1])

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
            mapping = RtpMap.parse(value)
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
        others.sort(key=lambda item: _MEDIA_ORDER.get(item[0], 4))
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
        seen: set[str] = set()
        current: MediaDescription | None = None
        for line in lines[1:]:
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise _error(f"not a <type>=<value> line: {line[:40]!r}")
            kind, value = line[0], line[2:]
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
            elif kind in ("o", "s", "v") and kind in seen:
                raise _error(f"repeated {kind}= line")
            elif kind == "o":
                sdp.origin = Origin.parse(value)
            elif kind == "s":
                sdp.session_name = value or "-"  # RFC 4566 asks for "s= " or "s=-", never empty
            elif kind == "c":
                sdp.connection = Connection.parse(value)
            elif kind == "t" and "t" not in seen:
                start, _, stop = value.partition(" ")
                sdp.timing = (_int(start, "t= start"), _int(stop.strip(), "t= stop"))
            else:
                sdp.other_lines.append((kind, value))
            seen.add(kind)
        if "o" not in seen:
            raise _error("no o= line")
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
        others.sort(key=lambda item: _SESSION_ORDER.get(item[0], 9))
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


# --- RFC 3264 offer/answer -------------------------------------------------------------------
# (Same module as the model because docs/architecture.md names sdp.py for both; this line is
# the natural split point should the module be divided.)


@dataclass(frozen=True)
class MediaParams:
    """What the media layer needs once offer/answer is done.

    ``direction`` is OUR direction (what we may do: send, receive, both, neither). ``on_hold`` is true
    when media does not flow both ways because one side holds the call (a=sendonly, a=recvonly,
    a=inactive, or the legacy c=0.0.0.0 of RFC 3264 section 8.4).
    """

    remote_address: tuple[str, int]
    payload_type: int
    codec: str
    clock_rate: int
    dtmf_payload_type: int | None
    ptime: int
    direction: str
    on_hold: bool

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}")
        if self.codec not in SUPPORTED_CODECS:
            raise ValueError(f"unsupported codec {self.codec!r}")


# A direction as (send, receive) flags, so reversing and intersecting stay one-liners.
_FLAGS = {"sendrecv": (True, True), "sendonly": (True, False), "recvonly": (False, True),
          "inactive": (False, False)}
_FROM_FLAGS = {flags: name for name, flags in _FLAGS.items()}


def _reverse(direction: str) -> str:
    send, recv = _FLAGS[direction]
    return _FROM_FLAGS[(recv, send)]


def _intersect(first: str, second: str) -> str:
    (send1, recv1), (send2, recv2) = _FLAGS[first], _FLAGS[second]
    return _FROM_FLAGS[(send1 and send2, recv1 and recv2)]


def _check_direction(direction: str) -> None:
    if direction not in _FLAGS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")


def _new_session_id() -> str:
    return str(secrets.randbelow(2**62) + 1)


def _audio_description(address: str, port: int, session_id: str | None,
                       version: int) -> SessionDescription:
    origin = Origin("-", session_id or _new_session_id(), version, "IN",
                    "IP6" if ":" in address else "IP4", address)
    return SessionDescription(origin=origin, session_name="simplesip",
                              connection=Connection.for_address(address))


def make_offer(address: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
               dtmf_payload_type: int | None = 101, ptime: int = DEFAULT_PTIME,
               direction: str = "sendrecv", session_id: str | None = None,
               version: int = 1) -> SessionDescription:
    """An offer of one RTP/AVP audio stream with ``codecs`` in our order of preference.

    ``dtmf_payload_type`` adds RFC 4733 telephone-event (None leaves it out). For a hold re-offer,
    pass ``direction="sendonly"`` and the same ``session_id`` with ``version`` bumped (or use
    :class:`SdpSession`, which does the bookkeeping).
    """
    _check_direction(direction)
    stream = MediaDescription("audio", port, "RTP/AVP", [], ptime=ptime, direction=direction)
    for name in codecs:
        if name.upper() not in SUPPORTED_CODECS:
            raise ValueError(f"unsupported codec {name!r}; choose from {tuple(SUPPORTED_CODECS)}")
        pt = SUPPORTED_CODECS[name.upper()]
        stream.formats.append(str(pt))
        stream.rtpmap[pt] = RtpMap(pt, name.upper(), 8000)
    if dtmf_payload_type is not None:
        if not 96 <= dtmf_payload_type <= 127:
            raise ValueError("telephone-event needs a dynamic payload type (96-127)")
        stream.formats.append(str(dtmf_payload_type))
        stream.rtpmap[dtmf_payload_type] = RtpMap(dtmf_payload_type, TELEPHONE_EVENT, 8000)
        stream.fmtp[dtmf_payload_type] = "0-16"
    sdp = _audio_description(address, port, session_id, version)
    sdp.media.append(stream)
    return sdp


def _choose_codec(stream: MediaDescription, preferences: tuple[str, ...]) -> tuple[int, str] | None:
    for name in preferences:
        pt = stream.find_payload_type(name)
        if pt is not None and name.upper() in SUPPORTED_CODECS:
            return pt, name.upper()
    return None


def _as_description(sdp: SessionDescription | bytes | str) -> SessionDescription:
    return sdp if isinstance(sdp, SessionDescription) else SessionDescription.parse(sdp)


def _is_hold_address(sdp: SessionDescription, media: MediaDescription) -> bool:
    connection = sdp.connection_for(media)
    return connection is not None and connection.is_hold


def make_answer(offer: SessionDescription | bytes | str, address: str, port: int,
                preferences: tuple[str, ...] = ("PCMU", "PCMA"), ptime: int = DEFAULT_PTIME,
                direction: str | None = None, session_id: str | None = None,
                version: int = 1) -> tuple[SessionDescription, MediaParams]:
    """Answer ``offer`` (RFC 3264 section 6) and say how to run the media.

    The first audio stream with a codec in ``preferences`` is accepted with exactly one codec, the
    first of ours the offer has (one codec, so the offerer cannot switch codecs mid-call), plus
    telephone-event with the offerer's payload type when offered. Every other stream is rejected
    with port 0. ``direction`` is what we want (e.g. "sendonly" to answer on hold); the answer is
    that intersected with the mirror of the offer's direction. Raises :class:`SDPNegotiationError`
    (488) when no audio codec matches.
    """
    offer = _as_description(offer)
    if direction is not None:
        _check_direction(direction)
    answer = _audio_description(address, port, session_id, version)
    params: MediaParams | None = None
    offered_codecs: list[str] = []
    for stream in offer.media:
        chosen = None
        if params is None and stream.media == "audio" and stream.port != 0 \
                and stream.proto.upper() in _ANSWERABLE_PROTOS:
            chosen = _choose_codec(stream, preferences)
            offered_codecs += [m.encoding for pt in stream.payload_types if (m := stream.codec(pt))]
        if chosen is None:
            # RFC 3264 section 6: a rejected stream keeps its m= line, port 0, and the formats.
            answer.media.append(MediaDescription(stream.media, 0, stream.proto, stream.formats or ["0"]))
            continue
        pt, codec = chosen
        held = _is_hold_address(offer, stream)
        offer_direction = offer.direction_for(stream)
        if held:  # c=0.0.0.0: the offerer will not receive, whatever its attribute says
            offer_direction = _intersect(offer_direction, "sendonly")
        ours = _intersect(_reverse(offer_direction), direction or "sendrecv")
        reply = MediaDescription("audio", port, stream.proto, [str(pt)], ptime=ptime, direction=ours)
        reply.rtpmap[pt] = stream.codec(pt) or RtpMap(pt, codec, 8000)
        dtmf_pt = stream.find_payload_type(TELEPHONE_EVENT)
        if dtmf_pt is not None:
            reply.formats.append(str(dtmf_pt))
            reply.rtpmap[dtmf_pt] = RtpMap(dtmf_pt, TELEPHONE_EVENT, 8000)
            reply.fmtp[dtmf_pt] = stream.fmtp.get(dtmf_pt, "0-15")
        answer.media.append(reply)
        connection = offer.connection_for(stream)
        assert connection is not None  # parse() guarantees one for every stream with a port
        params = MediaParams((connection.host, stream.port), pt, codec, 8000, dtmf_pt,
                             stream.ptime or DEFAULT_PTIME, ours, held or ours != "sendrecv")
    if params is None:
        if not offered_codecs:
            raise SDPNegotiationError("no usable audio stream in the offer")
        raise SDPNegotiationError(f"no common audio codec (offered {', '.join(offered_codecs)}; "
                                  f"we accept {', '.join(preferences)})")
    logger.debug("answered with %s pt %d, direction %s", params.codec, params.payload_type,
                 params.direction)
    return answer, params


def media_params_from_answer(offer: SessionDescription | bytes | str,
                             answer: SessionDescription | bytes | str) -> MediaParams:
    """The offerer's side: the media to run, from our ``offer`` and the peer's ``answer``.

    We send with the payload types of the answer (RFC 3264 section 5.1), using the first codec of
    the answer that we offered. Raises :class:`SDPNegotiationError` when the answer rejected or
    changed every audio stream into something we did not offer.
    """
    offer, answer = _as_description(offer), _as_description(answer)
    if len(answer.media) != len(offer.media):
        raise SDPNegotiationError(f"answer has {len(answer.media)} m= lines, offer had "
                                  f"{len(offer.media)}")
    offered = {m.encoding.upper() for stream in offer.media for pt in stream.payload_types
               if (m := stream.codec(pt)) is not None} & SUPPORTED_CODECS.keys()
    for ours, theirs in zip(offer.media, answer.media):
        if ours.media != "audio" or ours.port == 0 or theirs.port == 0:
            continue
        # The answerer's order, not ours: its first listed codec is the one it will send.
        usable = [(pt, m.encoding.upper()) for pt in theirs.payload_types
                  if (m := theirs.codec(pt)) and m.encoding.upper() in offered and m.clock_rate == 8000]
        if not usable:
            continue
        pt, codec = usable[0]
        connection = answer.connection_for(theirs)
        assert connection is not None
        held = connection.is_hold or _is_hold_address(offer, ours)
        answer_direction = answer.direction_for(theirs)
        if connection.is_hold:  # never send to a null address
            answer_direction = _intersect(answer_direction, "sendonly")
        direction = _intersect(offer.direction_for(ours), _reverse(answer_direction))
        return MediaParams((connection.host, theirs.port), pt, codec, 8000,
                           theirs.find_payload_type(TELEPHONE_EVENT), theirs.ptime or DEFAULT_PTIME,
                           direction, held or direction != "sendrecv")
    raise SDPNegotiationError("the answer accepted no audio stream with a codec we offered")


class SdpSession:
    """Our side of one SDP session across a call: same o= session id, version bumped as needed.

    RFC 3264 section 8: every new offer in the session carries the next o= version; an answer bumps
    it only when its content differs from what we last sent (an unchanged re-answer keeps it).
    """

    def __init__(self, address: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
                 dtmf_payload_type: int | None = 101, ptime: int = DEFAULT_PTIME,
                 session_id: str | None = None) -> None:
        self.address, self.port, self.codecs = address, port, codecs
        self.dtmf_payload_type, self.ptime = dtmf_payload_type, ptime
        self.session_id = session_id or _new_session_id()
        self.version = 1
        self._last_sent: bytes | None = None  # the last body we produced, minus v= and o=

    def _stamp(self, sdp: SessionDescription, always_bump: bool) -> SessionDescription:
        body = sdp.serialize().split(b"\r\n", 2)[2]
        if self._last_sent is not None and (always_bump or body != self._last_sent):
            self.version += 1
        self._last_sent = body
        sdp.origin.session_version = self.version
        return sdp

    def offer(self, direction: str = "sendrecv") -> SessionDescription:
        """A new offer (initial, hold with "sendonly", unhold with "sendrecv")."""
        sdp = make_offer(self.address, self.port, self.codecs, self.dtmf_payload_type, self.ptime,
                         direction, self.session_id, self.version)
        return self._stamp(sdp, always_bump=True)

    def answer(self, offer: SessionDescription | bytes | str,
               direction: str | None = None) -> tuple[SessionDescription, MediaParams]:
        """Answer a (re-)offer with our codec preferences; see :func:`make_answer`."""
        sdp, params = make_answer(offer, self.address, self.port, self.codecs, self.ptime,
                                  direction, self.session_id, self.version)
        return self._stamp(sdp, always_bump=False), params
