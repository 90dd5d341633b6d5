"""SIP URIs, name-addr values, Via values and CSeq (RFC 3261 §19.1, §20, §25).

Values reach these parsers already unfolded (the message parser turns folded lines into one line),
but every parser tolerates the LWS that RFC 3261 allows around ``;``, ``=`` and ``/``.  Anything that
cannot be accepted raises :class:`~simplesip.errors.SIPParseError`.

Escapes are kept exactly as received (``SipURI.user`` is raw) so that a URI serialises back to the
same text; they are undone only for comparison (RFC 3261 §19.1.4) and by :func:`unescape`.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from .errors import SIPParseError

__all__ = ["NameAddr", "SipURI", "Via", "parse_cseq", "parse_params", "split_list", "unescape"]

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(TOKEN)
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
# hostname / IPv4address (same shape, loosened to accept "_" as deployed DNS does) / "[" IPv6 "]"
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*)|\[[0-9A-Fa-f:.]+\]")
# Characters never legal inside a URI on the wire: whitespace, controls, and the delimiters that
# name-addr and quoted strings use (RFC 3986 §2 / RFC 3261 §25.1).
# host [":" port] followed by the end of the URI, its params or its headers
_HOSTPORT_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_\-.]*)(?::[0-9]{1,5})?(?=[;?]|$)")
_URI_FORBIDDEN_RE = re.compile(r'[\x00-\x20\x7f<>"]')
# gen-value = token / host / quoted-string; for the unquoted forms anything up to a delimiter.
_PARAM_VALUE_RE = re.compile(r'[^\s;,"<>]+')
_DISPLAY_TOKENS_RE = re.compile(rf"{TOKEN}(?:[ \t]+{TOKEN})*")
_CSEQ_RE = re.compile(rf"[ \t]*([0-9]+)[ \t]+({TOKEN})[ \t]*")
_VIA_RE = re.compile(
    rf"[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]+"  # sent-protocol LWS
    r"(\[[^\]]*\]|[^\s:;]+)(?:[ \t]*:[ \t]*([0-9]+))?"  # sent-by = host [ COLON port ]
    r"[ \t]*(.*)",
    re.DOTALL,
)
_LWS = " \t\r\n"
_DIGITS_RE = re.compile(r"[0-9]+")
_NEEDS_QUOTED_PAIR_RE = re.compile(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f"\\]')
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31
Params = dict[str, str | None]


def unescape(text: str) -> str:
    """Undo %-escapes (RFC 3261 §19.1.2); a ``%`` not followed by two hex digits stays as it is."""
    return urllib.parse.unquote(text, encoding="utf-8", errors="surrogateescape")


def _scan_outside_quotes(text: str, separators: str, track_angle: bool, strict: bool = True) -> list[str]:
    """Split ``text`` at ``separators`` outside quoted strings (and outside <> if asked).

    ``strict`` makes an unterminated quoted string an error; otherwise it runs to the end of text.
    """
    parts: list[str] = []
    start = 0
    in_quotes = in_angle = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_quotes:
            if ch == "\\":
                i += 1  # quoted-pair: the next character is literal, even a quote
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif track_angle and ch == "<":
            in_angle = True
        elif track_angle and ch == ">":
            in_angle = False
        elif ch in separators and not in_angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quotes and strict:
        raise SIPParseError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value (outside quotes and <>); empty elements are dropped.

    Never raises: an unterminated quote or "<" keeps the rest as one element, and parsing that
    element (Via.parse, NameAddr.parse) reports the error where it matters.
    """
    parts = _scan_outside_quotes(value, ",", track_angle=True, strict=False)
    return [part.strip(_LWS) for part in parts if part.strip(_LWS)]


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted-string at ``text[start]``; return its unescaped content and the end index."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                break
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise SIPParseError("unterminated quoted string")


def _quote(text: str) -> str:
    """Write ``text`` as a quoted-string.

    qdtext excludes controls, '"' and '\\', so those go out as quoted-pairs; CR and LF cannot be
    quoted-pairs at all (RFC 3261 §25.1), so they become spaces.
    """
    cleaned = text.replace("\r", " ").replace("\n", " ")
    return '"' + _NEEDS_QUOTED_PAIR_RE.sub(lambda m: "\\" + m.group(0), cleaned) + '"'


def parse_params(text: str) -> Params:
    """Parse header parameters ``*( SEMI name [ EQUAL value ] )`` with optional LWS around ``;``/``=``.

    Values are kept raw: a quoted-string keeps its quotes, so serialising gives the same text back.
    """
    text = text.strip(_LWS)
    if not text:
        return {}
    pieces = _scan_outside_quotes(text, ";", track_angle=False)
    if pieces[0].strip(_LWS):
        raise SIPParseError(f"unexpected text before parameters: {pieces[0].strip()[:40]!r}")
    params: Params = {}
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        name = name.strip(_LWS)
        value = value.strip(_LWS)
        if not _TOKEN_RE.fullmatch(name):
            raise SIPParseError(f"bad parameter name {name[:40]!r}")
        if not eq:
            params[name] = None
        elif value.startswith('"'):
            _, end = _read_quoted(value, 0)
            if end != len(value):
                raise SIPParseError(f"text after quoted value of parameter {name!r}")
            params[name] = value
        elif _PARAM_VALUE_RE.fullmatch(value):
            params[name] = value
        else:
            raise SIPParseError(f"bad value for parameter {name!r}")
    return params


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _find_param(params: Params, name: str) -> str | None:
    """Parameter names are case-insensitive (RFC 3261 §7.3.1); values are returned raw."""
    for key, value in params.items():
        if key.lower() == name:
            return value
    return None


def _parse_host(text: str, what: str) -> tuple[str, int | None]:
    """Parse ``host [":" port]``; IPv6 brackets are removed from the returned host."""
    if text.startswith("["):
        close = text.find("]")
        host_text, port_text = text[: close + 1], text[close + 1 :]
        if close < 0 or (port_text and not port_text.startswith(":")):
            raise SIPParseError(f"bad IPv6 reference in {what}")
        port_text = port_text[1:] if port_text else ""
        has_port = bool(text[close + 1 :])
    else:
        host_text, has_colon, port_text = text.partition(":")
        has_port = bool(has_colon)
    if not _HOST_RE.fullmatch(host_text):
        raise SIPParseError(f"bad host in {what}: {host_text[:60]!r}")
    port: int | None = None
    if has_port:
        if not _DIGITS_RE.fullmatch(port_text) or len(port_text) > 5 or int(port_text) > 65535:
            raise SIPParseError(f"bad port in {what}")
        port = int(port_text)
    return host_text.strip("[]"), port


def _userinfo_end(text: str) -> int:
    """Index of the "@" that ends the userinfo of ``text`` (a SIP URI after its scheme), or -1.

    The grammar allows no raw "@" anywhere else, but deployed peers put one in URI headers (a
    Call-ID in ``?Replaces=``) or in the user part, while userinfo may hold ";", "?" and ":"
    (RFC 4475 §3.1.1.2).  So take the first "@" that is followed by a valid host[:port].
    """
    at = text.find("@")
    while at >= 0:
        # match in place (no slicing) so a value full of "@" stays linear
        if _HOSTPORT_RE.match(text, at + 1):
            return at
        at = text.find("@", at + 1)
    return text.rfind("@")  # no good candidate: the host check then reports the error


def _format_host(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


@dataclass(eq=False)
class SipURI:
    """A URI as found in a Request-URI or a name-addr.

    For ``sip:``/``sips:`` every component is parsed (``user``/``password``/params/headers kept
    escaped as received). Any other scheme (``tel:``, ``http:``...) is kept whole in ``opaque``.
    Equality follows RFC 3261 §19.1.4 for SIP URIs and is textual for opaque ones.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipURI:
        """Parse a URI (no surrounding LWS or <>); raise SIPParseError if it is malformed."""
        if _URI_FORBIDDEN_RE.search(text):
            raise SIPParseError(f"illegal character in URI {text[:60]!r}")
        m = _SCHEME_RE.match(text)
        if not m:
            raise SIPParseError(f"URI has no scheme: {text[:60]!r}")
        scheme, rest = m.group(1).lower(), text[m.end() :]
        if not rest:
            raise SIPParseError("empty URI after scheme")
        if scheme not in ("sip", "sips"):
            return cls(scheme=scheme, opaque=rest)
        user = password = None
        at = _userinfo_end(rest)
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, colon, pw = userinfo.partition(":")
            password = pw if colon else None
            if not user:
                raise SIPParseError("empty user part in SIP URI")
        rest, question, header_text = rest.partition("?")
        hostport, *param_texts = rest.split(";")
        host, port = _parse_host(hostport, "SIP URI")
        params: Params = {}
        for piece in param_texts:
            name, eq, value = piece.partition("=")
            if not name or (eq and not value):
                raise SIPParseError("empty URI parameter")
            params[name] = value if eq else None
        headers: dict[str, str] = {}
        if question:
            for piece in header_text.split("&"):
                name, eq, value = piece.partition("=")
                if not name or not eq:
                    raise SIPParseError("bad URI header")
                headers[name] = value
        return cls(scheme, user, password, host, port, params, headers)

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user if self.password is None else f"{self.user}:{self.password}"
            userinfo += "@"
        text = f"{self.scheme}:{userinfo}{_format_host(self.host, self.port)}"
        text += _format_params(self.params)
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return text

    @property
    def unescaped_user(self) -> str | None:
        """The user part with %-escapes undone (what RFC 3261 compares)."""
        return None if self.user is None else unescape(self.user)

    @property
    def transport(self) -> str | None:
        """The ``transport`` URI parameter, lower-cased, or None."""
        value = _find_param(self.params, "transport")
        return value.lower() if value else None

    def _comparable_params(self) -> dict[str, str | None]:
        return {
            unescape(k).lower(): None if v is None else unescape(v).lower() for k, v in self.params.items()
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipURI):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if (
            self.unescaped_user != other.unescaped_user
            or (None if self.password is None else unescape(self.password))
            != (None if other.password is None else unescape(other.password))
            or self.host.lower() != other.host.lower()
            or self.port != other.port  # §19.1.4: an omitted port does not equal an explicit 5060
        ):
            return False
        mine, theirs = self._comparable_params(), other._comparable_params()
        for name in set(mine) | set(theirs):
            both = name in mine and name in theirs
            if both and mine[name] != theirs[name]:
                return False
            # these five must match even when only one side has them
            if not both and name in ("user", "ttl", "method", "maddr", "transport"):
                return False
        unescaped = {unescape(k).lower(): unescape(v) for k, v in self.headers.items()}
        return unescaped == {unescape(k).lower(): unescape(v) for k, v in other.headers.items()}

    def __hash__(self) -> int:
        if self.opaque is not None:
            return hash((self.scheme, self.opaque))
        return hash((self.scheme, self.unescaped_user, self.host.lower(), self.port))


@dataclass
class NameAddr:
    """``[display-name] <URI> *(;param)`` or a bare addr-spec, as in From, To, Contact, Route.

    ``display`` is unquoted and unescaped (None when absent); ``params`` are the header parameters
    (``tag``, ``expires``, ``q`` ...), raw values. ``str()`` always writes the <> form.
    """

    display: str | None
    uri: SipURI
    params: Params = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse one name-addr / addr-spec value; raise SIPParseError if it is malformed."""
        text = text.strip(_LWS)
        if not text:
            raise SIPParseError("empty address")
        display: str | None = None
        if text.startswith('"'):
            display, end = _read_quoted(text, 0)
            rest = text[end:].lstrip(_LWS)
            if not rest.startswith("<"):
                raise SIPParseError("quoted display name not followed by <URI>")
            uri_text, rest = cls._take_bracketed(rest)
        else:
            angle, semi = text.find("<"), text.find(";")
            if angle >= 0 and (semi < 0 or angle < semi):
                shown = text[:angle].strip(_LWS)
                if shown and not _DISPLAY_TOKENS_RE.fullmatch(shown):
                    raise SIPParseError(f"display name must be tokens or quoted: {shown[:40]!r}")
                display = shown or None
                uri_text, rest = cls._take_bracketed(text[angle:])
            else:
                uri_text, _, tail = text.partition(";")
                uri_text, rest = uri_text.rstrip(_LWS), (";" + tail if semi >= 0 else "")
                # RFC 3261 §20.10: a URI with "," or "?" must be enclosed in <>.
                if "," in uri_text or "?" in uri_text:
                    raise SIPParseError("URI with ',' or '?' must be enclosed in <>")
        return cls(display, SipURI.parse(uri_text), parse_params(rest))

    @staticmethod
    def _take_bracketed(text: str) -> tuple[str, str]:
        close = text.find(">")
        if close < 0:
            raise SIPParseError("missing '>' after URI")
        return text[1:close], text[close + 1 :]

    def __str__(self) -> str:
        shown = "" if self.display is None else _quote(self.display) + " "
        return f"{shown}<{self.uri}>{_format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), or None."""
        return _find_param(self.params, "tag")


@dataclass
class Via:
    """One Via value: ``SIP/2.0/UDP host[:port];params`` (RFC 3261 §20.42)."""

    protocol: str = "SIP/2.0"
    transport: str = "UDP"
    host: str = ""
    port: int | None = None
    params: Params = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse a single Via value (split comma lists first); raise SIPParseError if malformed."""
        m = _VIA_RE.fullmatch(text.strip(_LWS))
        if not m:
            raise SIPParseError(f"bad Via {text.strip()[:60]!r}")
        name, version, transport, host_text, port_text, rest = m.groups()
        if port_text is not None:
            host_text = f"{host_text}:{port_text}"
        host, port = _parse_host(host_text, "Via")
        if rest and not rest.startswith(";"):
            raise SIPParseError("text after Via sent-by")
        return cls(f"{name.upper()}/{version}", transport.upper(), host, port, parse_params(rest))

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {_format_host(self.host, self.port)}" + (
            _format_params(self.params)
        )

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter; RFC 3261 branches start with ``z9hG4bK``."""
        return _find_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter a server added (RFC 3261 §18.2.1), or None."""
        return _find_param(self.params, "received")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value filled in by a server (RFC 3581), or None if absent or empty."""
        value = _find_param(self.params, "rport")
        return int(value) if value and _DIGITS_RE.fullmatch(value) and len(value) <= 5 else None


def parse_cseq(value: str) -> tuple[int, str]:
    """Parse ``CSeq: 1*DIGIT LWS Method`` into (number, method); numbers must be below 2**31."""
    m = _CSEQ_RE.fullmatch(value)
    if not m:
        raise SIPParseError(f"bad CSeq {value.strip()[:40]!r}")
    digits = m.group(1)
    # check the length before int(): Python refuses to convert very long digit strings
    if len(digits.lstrip("0")) > 10 or int(digits) > MAX_CSEQ:
        raise SIPParseError("CSeq number out of range")
    return int(digits), m.group(2)
