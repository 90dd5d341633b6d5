"""SIP messages on the wire: parsing, validation and serialisation (RFC 3261 §7, §18.3).

``parse_message`` takes one datagram (or one frame cut by :class:`StreamFramer`) and returns a
:class:`Request` or :class:`Response`, or raises :class:`~simplesip.errors.SIPParseError` - never any
other exception, whatever the bytes.  Parsing is eager for the headers every layer above relies on
(Via, From, To, Call-ID, CSeq, Max-Forwards, Contact, Route, Record-Route, Content-Length), so a message
that parses is safe to hand to the transaction layer; the convenience properties re-parse on access so
they always reflect the current ``headers``.

Accepted leniently (RFC 4475 §3.1.1): folded lines, LWS around ``:``/``;``/``=``/``/``, compact header
names, any header-name case, CRLFs before the start line, bare-LF line ends.  Rejected: any other
malformed start line (one SP between elements, RFC 3261 §7.1), duplicated single-value headers, CSeq
and Max-Forwards out of range, a CSeq method that differs from the request method, a body shorter than
Content-Length, a Request-URI that is not a URI or that carries SIP URI headers.  Any Request-URI
scheme is accepted (RFC 4475 §3.3.2); ``Request.require_supported_scheme`` gives the UAS its 416.

:class:`Headers` and the reason-phrase table live in :mod:`simplesip.wire.headers`, and :class:`StreamFramer`
(TCP/TLS framing) in :mod:`simplesip.wire.framing`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TypeAlias

from simplesip.errors import SIPParseError
from simplesip.wire.headers import Headers, default_reason
from simplesip.wire.uri import NameAddr, SipURI, Via, parse_cseq

__all__ = [
    "MAX_MESSAGE_SIZE", "Message", "Request", "Response", "SUPPORTED_URI_SCHEMES", "content_length",
    "find_head_end", "parse_head", "parse_message",
]

logger = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 64 * 1024
SUPPORTED_URI_SCHEMES = frozenset({"sip", "sips", "tel"})
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_METHOD_RE = re.compile(_TOKEN)
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_STATUS_LINE_RE = re.compile(r"(\S+) ([0-9]+)(?: (.*))?", re.DOTALL)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\x7f<>\"]+")
_DIGITS_RE = re.compile(r"[0-9]+")
_WHITESPACE_RE = re.compile(r"\s")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # Reason-Phrase allows SP and HTAB only
# RFC 3261 §7.3.1 / §20: headers that may appear only once (RFC 4475 §3.3.8, §3.3.9)
_SINGLE_VALUE_HEADERS = (
    "Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type",
)  # fmt: skip
_MAX_FORWARDS_LIMIT = 255  # RFC 3261 §20.22 allows 0-255



class _MessageBase:
    """Properties and serialisation shared by requests and responses."""

    headers: Headers
    body: bytes

    def _start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Start line, headers in order, then the body; Content-Length is set from ``body``."""
        start_line = self._start_line()
        if "\r" in start_line or "\n" in start_line:  # would let a caller inject header lines
            raise ValueError(f"CR or LF in start line {start_line!r}")
        lines = [start_line]
        wrote_length = False
        for name, value in self.headers.items():
            if name == "Content-Length":
                if wrote_length:
                    continue
                value, wrote_length = str(len(self.body)), True
            lines.append(f"{name}: {value}" if value else f"{name}:")
        if not wrote_length:
            lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SIPParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        """The Call-ID value."""
        return self._required("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        """CSeq as (sequence number, method)."""
        return parse_cseq(self._required("CSeq"))

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top (most recent hop) first."""
        return [Via.parse(value) for value in self.headers.get_all("Via")]

    @property
    def branch(self) -> str | None:
        """The top Via's branch parameter (the transaction key of RFC 3261 §17.2.3)."""
        values = self.headers.get_all("Via")
        return Via.parse(values[0]).branch if values else None

    @property
    def from_(self) -> NameAddr:
        """The From header as a NameAddr."""
        return NameAddr.parse(self._required("From"))

    @property
    def to(self) -> NameAddr:
        """The To header as a NameAddr."""
        return NameAddr.parse(self._required("To"))

    @property
    def from_tag(self) -> str | None:
        """The From tag, or None (RFC 2543 peers may omit it)."""
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        """The To tag, or None outside a dialog."""
        return self.to.tag

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact value in order; empty when absent or when the value is ``*``."""
        return [NameAddr.parse(v) for v in self.headers.get_all("Contact") if v != "*"]

    @property
    def content_type(self) -> str | None:
        """The Content-Type value (media type with its parameters), or None."""
        return self.headers.get("Content-Type")

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards as an int, or None when absent (RFC 2543 peers)."""
        value = self.headers.get("Max-Forwards")
        return None if value is None else _parse_max_forwards(value)


@dataclass
class Request(_MessageBase):
    """A SIP request; ``uri`` is the Request-URI text exactly as received or given."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    @property
    def request_uri(self) -> SipURI:
        """The Request-URI parsed (other schemes than sip/sips come back opaque)."""
        return SipURI.parse(self.uri)

    def require_supported_scheme(self, schemes: frozenset[str] = SUPPORTED_URI_SCHEMES) -> None:
        """Raise SIPParseError(status=416) unless the Request-URI scheme is one of ``schemes``.

        The parser accepts any scheme (RFC 4475 §3.3.2 says such a request is well-formed); the
        UAS calls this before processing and answers 416 Unsupported URI Scheme.
        """
        scheme = self.request_uri.scheme
        if scheme not in schemes:
            raise SIPParseError(f"Unsupported URI Scheme {scheme}", status=416)


@dataclass
class Response(_MessageBase):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    @classmethod
    def for_request(
        cls, request: Request, status: int, reason: str | None = None, to_tag: str | None = None
    ) -> Response:
        """A response to ``request`` per RFC 3261 §8.2.6.2: Via (all, in order), From, To, Call-ID, CSeq.

        ``to_tag`` is added to To unless To already has a tag.  Record-Route, Contact and a body are
        the caller's job (they depend on the dialog, not on the request alone).
        """
        headers = Headers()
        for name, value in request.headers.items():
            if name == "Via":
                headers.add(name, value)
        to_value = request.headers.get("To")
        if to_value is not None and to_tag and NameAddr.parse(to_value).tag is None:
            to_value = f"{to_value};tag={to_tag}"
        copied: list[tuple[str, str | None]] = [
            ("From", request.headers.get("From")),
            ("To", to_value),
            ("Call-ID", request.headers.get("Call-ID")),
            ("CSeq", request.headers.get("CSeq")),
        ]
        if status == 100:  # §8.2.6.1: a 100 echoes Timestamp so the UAC can measure the round trip
            copied.append(("Timestamp", request.headers.get("Timestamp")))
        for name, copied_value in copied:
            if copied_value is not None:
                headers.add(name, copied_value)
        return cls(status, reason if reason is not None else default_reason(status), headers)

    @property
    def is_provisional(self) -> bool:
        """True for 1xx."""
        return 100 <= self.status < 200


Message: TypeAlias = Request | Response


def _parse_max_forwards(value: str) -> int:
    value = value.strip()
    if not _DIGITS_RE.fullmatch(value) or len(value.lstrip("0")) > 3:
        raise SIPParseError("bad Max-Forwards")
    number = int(value)
    if number > _MAX_FORWARDS_LIMIT:
        raise SIPParseError("Max-Forwards out of range")
    return number


def find_head_end(data: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(end of header section, start of body), accepting bare-LF line ends; None if incomplete."""
    crlf, lf = data.find(b"\r\n\r\n", start), data.find(b"\n\n", start)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, crlf + 4
    if lf >= 0:
        return lf, lf + 2
    return None


def parse_head(head: bytes) -> tuple[str, Headers]:
    """Decode the start line and headers; folded lines are joined with one SP (RFC 3261 §7.3.1)."""
    # surrogateescape: any byte sequence decodes, and re-encodes to the same bytes
    lines = [line.rstrip("\r") for line in head.decode("utf-8", "surrogateescape").split("\n")]
    start_line, header_lines = lines[0], lines[1:]
    logical: list[str] = []
    for line in header_lines:
        if line[:1] in (" ", "\t"):
            if not logical:
                raise SIPParseError("continuation line before any header")
            logical[-1] += " " + line.strip(" \t")
        else:
            logical.append(line)
    headers = Headers()
    for line in logical:
        name, colon, value = line.partition(":")
        if not colon:
            raise SIPParseError(f"header line without ':': {line[:40]!r}")
        headers.add(name.rstrip(" \t"), value)
    return start_line, headers


def content_length(headers: Headers) -> int | None:
    values = [v for n, v in headers.items() if n == "Content-Length"]
    if not values:
        return None
    if len(values) > 1:
        raise SIPParseError("duplicate Content-Length header")
    value = values[0].strip()
    if not _DIGITS_RE.fullmatch(value) or len(value.lstrip("0")) > 9:
        raise SIPParseError("bad Content-Length")
    return int(value)


def _check_version(version: str) -> None:
    if version.upper() != "SIP/2.0":
        if _VERSION_RE.fullmatch(version):
            raise SIPParseError("SIP Version Not Supported", status=505)
        raise SIPParseError("malformed SIP version")


def _build(start_line: str, headers: Headers, body: bytes) -> Message:
    message: Message
    if start_line[:4].upper() == "SIP/":
        m = _STATUS_LINE_RE.fullmatch(start_line)
        if not m:
            raise SIPParseError("malformed Status-Line")
        version, status_text, reason = m.groups()
        _check_version(version)
        if len(status_text) != 3 or not 100 <= int(status_text) <= 699:
            raise SIPParseError("status code out of range")
        reason = (reason or "").strip(" \t")
        if _CONTROL_RE.search(reason):
            raise SIPParseError("control character in Reason-Phrase")
        message = Response(int(status_text), reason, headers, body, version)
    else:
        parts = start_line.split(" ")
        if len(parts) != 3 or not all(parts):
            raise SIPParseError("malformed Request-Line")
        method, uri, version = parts
        _check_version(version)
        if not _METHOD_RE.fullmatch(method):
            raise SIPParseError("bad method")
        _check_request_uri(uri)
        message = Request(method, uri, headers, body, version)
    _validate_headers(message)
    return message


def _check_request_uri(uri: str) -> None:
    """Syntax only: any scheme is accepted here and the endpoint answers 416 (RFC 4475 §3.3.2)."""
    if not _SCHEME_RE.fullmatch(uri):
        raise SIPParseError("malformed Request-URI")
    parsed = SipURI.parse(uri)
    if parsed.headers:  # RFC 3261 §19.1.5: headers are not allowed in a Request-URI
        raise SIPParseError("Request-URI must not contain headers")


def _validate_headers(message: Message) -> None:
    """Check the headers every layer relies on, so a parsed message is safe to route and match."""
    headers = message.headers
    for name in _SINGLE_VALUE_HEADERS:
        if sum(1 for n, _ in headers.items() if n == name) > 1:
            raise SIPParseError(f"duplicate {name} header")
    for name in ("Call-ID", "CSeq", "From", "To", "Via"):
        if name not in headers:
            raise SIPParseError(f"missing {name} header")
    call_id = headers.get("Call-ID") or ""
    if not call_id or _WHITESPACE_RE.search(call_id):
        raise SIPParseError("bad Call-ID")
    _, cseq_method = message.cseq
    if isinstance(message, Request) and cseq_method != message.method:
        raise SIPParseError("CSeq method does not match the request method")
    if not message.vias:
        raise SIPParseError("empty Via header")
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None:  # optional: RFC 2543 peers leave it out (RFC 4475 §3.4.1)
        _parse_max_forwards(max_forwards)
    contacts = headers.get_all("Contact")
    if "*" in contacts and len(contacts) > 1:
        raise SIPParseError("Contact '*' mixed with addresses")
    addresses = [headers.get("From") or "", headers.get("To") or ""]
    addresses += [value for value in contacts if value != "*"]
    addresses += headers.get_all("Route") + headers.get_all("Record-Route")
    for value in addresses:
        NameAddr.parse(value)


def parse_message(data: bytes, max_size: int = MAX_MESSAGE_SIZE) -> Message:
    """Parse one SIP message from a datagram (RFC 3261 §18.3 framing).

    Without Content-Length the body is the rest of the datagram; octets past Content-Length are
    discarded; a body shorter than Content-Length is an error.  Raises SIPParseError only.
    """
    if len(data) > max_size:
        raise SIPParseError("Message Too Large", status=413)
    data = bytes(data).lstrip(b"\r\n")  # RFC 3261 §7.5: CRLFs before the start line are ignored
    if not data:
        raise SIPParseError("empty message")
    bounds = find_head_end(data)
    if bounds is None:
        raise SIPParseError("no empty line after the headers")
    head_end, body_start = bounds
    start_line, headers = parse_head(data[:head_end])
    length = content_length(headers)
    rest = data[body_start:]
    if length is None:
        body = rest
    elif length > len(rest):
        raise SIPParseError("body shorter than Content-Length")
    else:
        if length < len(rest):
            logger.debug("discarding %d octets after Content-Length", len(rest) - length)
        body = rest[:length]
    return _build(start_line, headers, body)

