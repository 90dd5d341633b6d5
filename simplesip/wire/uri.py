"""SIP URIs, name-addr values, Via values and CSeq (RFC 3261 §19.1, §20, §25).

Values reach these parsers already unfolded (the message parser turns folded lines into one line),
but every parser tolerates the LWS that RFC 3261 allows around ``;``, ``=`` and ``/``.  Anything that
cannot be accepted raises :class:`~simplesip.errors.SIPParseError`.

Escapes are kept exactly as received (``SipURI.user`` is raw) so that a URI serialises back to the
same text; they are undone only for comparison (RFC 3261 §19.1.4) and by :func:`unescape`.

The token, quoting and parameter-list grammar shared by all of these lives in
:mod:`simplesip.wire.grammar`; ``parse_params``, ``split_list`` and ``unescape`` are re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from simplesip.errors import SIPParseError
from simplesip.wire.grammar import (
    DIGITS_RE,
    LWS,
    TOKEN,
    Params,
    find_param,
    format_host,
    format_params,
    parse_host,
    parse_params,
    quote,
    read_quoted,
    split_list,
    unescape,
)

__all__ = ["NameAddr", "SipURI", "Via", "parse_cseq", "parse_params", "split_list", "unescape"]

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
# host [":" port] followed by the end of the URI, its params or its headers
_HOSTPORT_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_\-.]*)(?::[0-9]{1,5})?(?=[;?]|$)")
# Characters never legal inside a URI on the wire: whitespace, controls, and the delimiters that
# name-addr and quoted strings use (RFC 3986 §2 / RFC 3261 §25.1).
_URI_FORBIDDEN_RE = re.compile(r'[\x00-\x20\x7f<>"]')
_DISPLAY_TOKENS_RE = re.compile(rf"{TOKEN}(?:[ \t]+{TOKEN})*")
_CSEQ_RE = re.compile(rf"[ \t]*([0-9]+)[ \t]+({TOKEN})[ \t]*")
_VIA_RE = re.compile(
    rf"[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]+"  # sent-protocol LWS
    r"(\[[^\]]*\]|[^\s:;]+)(?:[ \t]*:[ \t]*([0-9]+))?"  # sent-by = host [ COLON port ]
    r"[ \t]*(.*)",
    re.DOTALL,
)
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31


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
        host, port = parse_host(hostport, "SIP URI")
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
        text = f"{self.scheme}:{userinfo}{format_host(self.host, self.port)}"
        text += format_params(self.params)
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
        value = find_param(self.params, "transport")
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
        text = text.strip(LWS)
        if not text:
            raise SIPParseError("empty address")
        display: str | None = None
        if text.startswith('"'):
            display, end = read_quoted(text, 0)
            rest = text[end:].lstrip(LWS)
            if not rest.startswith("<"):
                raise SIPParseError("quoted display name not followed by <URI>")
            uri_text, rest = cls._take_bracketed(rest)
        else:
            angle, semi = text.find("<"), text.find(";")
            if angle >= 0 and (semi < 0 or angle < semi):
                shown = text[:angle].strip(LWS)
                if shown and not _DISPLAY_TOKENS_RE.fullmatch(shown):
                    raise SIPParseError(f"display name must be tokens or quoted: {shown[:40]!r}")
                display = shown or None
                uri_text, rest = cls._take_bracketed(text[angle:])
            else:
                uri_text, _, tail = text.partition(";")
                uri_text, rest = uri_text.rstrip(LWS), (";" + tail if semi >= 0 else "")
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
        shown = "" if self.display is None else quote(self.display) + " "
        return f"{shown}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), or None."""
        return find_param(self.params, "tag")


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
        m = _VIA_RE.fullmatch(text.strip(LWS))
        if not m:
            raise SIPParseError(f"bad Via {text.strip()[:60]!r}")
        name, version, transport, host_text, port_text, rest = m.groups()
        if port_text is not None:
            host_text = f"{host_text}:{port_text}"
        host, port = parse_host(host_text, "Via")
        if rest and not rest.startswith(";"):
            raise SIPParseError("text after Via sent-by")
        return cls(f"{name.upper()}/{version}", transport.upper(), host, port, parse_params(rest))

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {format_host(self.host, self.port)}" + (
            format_params(self.params)
        )

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter; RFC 3261 branches start with ``z9hG4bK``."""
        return find_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter a server added (RFC 3261 §18.2.1), or None."""
        return find_param(self.params, "received")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value filled in by a server (RFC 3581), or None if absent or empty."""
        value = find_param(self.params, "rport")
        return int(value) if value and DIGITS_RE.fullmatch(value) and len(value) <= 5 else None


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
