"""The lexical grammar SIP header values share (RFC 3261 §25.1): tokens, quoted strings,
``;name=value`` parameter lists, comma-separated lists, and ``host[:port]``.

Used by :mod:`simplesip.wire.uri` (URIs, name-addr, Via); the public helpers are re-exported there.
"""

from __future__ import annotations

import re
import urllib.parse

from simplesip.errors import SIPParseError

__all__ = [
    "DIGITS_RE", "LWS", "Params", "TOKEN", "find_param", "format_host", "format_params",
    "parse_host", "parse_params", "quote", "read_quoted", "split_list", "unescape",
]

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(TOKEN)
# hostname / IPv4address (same shape, loosened to accept "_" as deployed DNS does) / "[" IPv6 "]"
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*)|\[[0-9A-Fa-f:.]+\]")
# gen-value = token / host / quoted-string; for the unquoted forms anything up to a delimiter.
_PARAM_VALUE_RE = re.compile(r'[^\s;,"<>]+')
LWS = " \t\r\n"
DIGITS_RE = re.compile(r"[0-9]+")
_NEEDS_QUOTED_PAIR_RE = re.compile(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f"\\]')
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
    return [part.strip(LWS) for part in parts if part.strip(LWS)]


def read_quoted(text: str, start: int) -> tuple[str, int]:
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


def quote(text: str) -> str:
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
    text = text.strip(LWS)
    if not text:
        return {}
    pieces = _scan_outside_quotes(text, ";", track_angle=False)
    if pieces[0].strip(LWS):
        raise SIPParseError(f"unexpected text before parameters: {pieces[0].strip()[:40]!r}")
    params: Params = {}
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        name = name.strip(LWS)
        value = value.strip(LWS)
        if not _TOKEN_RE.fullmatch(name):
            raise SIPParseError(f"bad parameter name {name[:40]!r}")
        if not eq:
            params[name] = None
        elif value.startswith('"'):
            _, end = read_quoted(value, 0)
            if end != len(value):
                raise SIPParseError(f"text after quoted value of parameter {name!r}")
            params[name] = value
        elif _PARAM_VALUE_RE.fullmatch(value):
            params[name] = value
        else:
            raise SIPParseError(f"bad value for parameter {name!r}")
    return params


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def find_param(params: Params, name: str) -> str | None:
    """Parameter names are case-insensitive (RFC 3261 §7.3.1); values are returned raw."""
    for key, value in params.items():
        if key.lower() == name:
            return value
    return None


def parse_host(text: str, what: str) -> tuple[str, int | None]:
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
        if not DIGITS_RE.fullmatch(port_text) or len(port_text) > 5 or int(port_text) > 65535:
            raise SIPParseError(f"bad port in {what}")
        port = int(port_text)
    return host_text.strip("[]"), port


def format_host(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"
