"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760 for SHA-256 in SIP).

Client side: :meth:`Challenge.parse` reads a WWW-Authenticate / Proxy-Authenticate value,
:func:`build_authorization` answers it, and :class:`DigestSession` remembers challenges across
requests, counting ``nc`` per nonce. Server side (in :mod:`simplesip.core.auth_server`, importable from
here too): :class:`DigestVerifier` issues stateless nonces (timestamp + HMAC) and checks
Authorization values, refusing replayed nonce counts.

Note for header handling: a Digest value contains commas, so read these headers whole
(``Headers.get``), never through a comma-splitting accessor.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from simplesip.errors import AuthenticationError, SIPParseError

__all__ = [
    "Challenge", "DigestCredentials", "DigestSession", "HASHES", "build_authorization",
    "canonical_algorithm", "digest_response", "quote", "wire_bytes",
]

logger = logging.getLogger(__name__)

# RFC 7616 section 6.1 / RFC 8760: algorithm name -> hashlib name.
HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
# Strongest first; a 401 may offer several challenges (RFC 8760 section 2.4).
_STRENGTH = ["SHA-512-256", "SHA-256", "MD5"]
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNQUOTED_VALUE = re.compile(r"[^\s,\"]*")


def canonical_algorithm(name: str) -> str:
    """``md5-SESS`` -> ``MD5-sess``; unknown names are returned unchanged."""
    if not name.isascii():  # str.upper() maps some non-ASCII letters to ASCII ones ("ſ" -> "S")
        return name
    base, sess = (name[:-5], "-sess") if name.lower().endswith("-sess") else (name, "")
    return base.upper() + sess if base.upper() in HASHES else name


def _parse_params(text: str) -> dict[str, str]:
    """An auth-param list (``a=b, c="d"``), tolerant of odd spacing, stray commas and quoting."""
    params: dict[str, str] = {}
    pos, end = 0, len(text)
    while True:
        while pos < end and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos >= end:
            return params
        name_match = _TOKEN.match(text, pos)
        if not name_match:
            raise SIPParseError(f"bad auth parameter at {text[pos:pos + 20]!r}")
        name, pos = name_match.group().lower(), name_match.end()
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end or text[pos] != "=":
            raise SIPParseError(f"auth parameter {name!r} has no value")
        pos += 1
        while pos < end and text[pos].isspace():
            pos += 1
        if pos < end and text[pos] == '"':
            value, pos = _read_quoted(text, pos + 1)
        else:
            value_match = _UNQUOTED_VALUE.match(text, pos)
            assert value_match is not None  # the pattern matches the empty string
            value, pos = value_match.group(), value_match.end()
        if name in params:
            raise SIPParseError(f"auth parameter {name!r} repeated")
        params[name] = value


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    chars: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            chars.append(text[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(chars), pos + 1
        else:
            chars.append(char)
            pos += 1
    raise SIPParseError("unterminated quoted string in auth header")


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split_scheme(header_value: str) -> tuple[str, str]:
    text = header_value.strip()
    match = _TOKEN.match(text)
    if not match or (match.end() < len(text) and not text[match.end()].isspace()):
        raise SIPParseError(f"no auth scheme in {header_value[:40]!r}")
    return match.group(), text[match.end():]


@dataclass(frozen=True)
class Challenge:
    """A Digest challenge from a WWW-Authenticate (401) or Proxy-Authenticate (407) header."""

    scheme: str
    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    stale: bool = False
    params: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, header_value: str) -> Challenge:
        """Parse one challenge; raises :class:`SIPParseError` on anything malformed."""
        scheme, rest = _split_scheme(header_value)
        params = _parse_params(rest)
        if scheme.lower() == "digest" and ("realm" not in params or "nonce" not in params):
            raise SIPParseError("digest challenge without realm or nonce")
        qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
        return cls(scheme=scheme, realm=params.get("realm", ""), nonce=params.get("nonce", ""),
                   opaque=params.get("opaque"),
                   algorithm=canonical_algorithm(params.get("algorithm", "MD5")),
                   qop=qop, stale=params.get("stale", "").lower() == "true", params=params)

    @property
    def supported(self) -> bool:
        """True when :func:`build_authorization` can answer this challenge."""
        base = self.algorithm.removesuffix("-sess")
        qop_ok = not self.qop or "auth" in self.qop or "auth-int" in self.qop
        return self.scheme.lower() == "digest" and base in HASHES and qop_ok


def wire_bytes(text: str) -> bytes:
    """``text`` as the bytes a peer sent. The message parser decodes with ``surrogateescape``,
    so non-UTF-8 bytes in a nonce, username or URI come back as they were on the wire and the
    digest covers what the peer hashed; other lone surrogates (never from our parser) are
    encoded deterministically instead of raising."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _hash(algorithm: str, text: str | bytes) -> str:
    data = wire_bytes(text) if isinstance(text, str) else text
    return hashlib.new(HASHES[algorithm.removesuffix("-sess")], data).hexdigest()


def digest_response(algorithm: str, username: str, realm: str, password: str, method: str,
                    uri: str, nonce: str, nc: str = "", cnonce: str = "", qop: str = "",
                    body: bytes = b"") -> str:
    """The ``response`` value of RFC 7616 section 3.4.1 (and RFC 2069 when ``qop`` is empty)."""
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.endswith("-sess"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}:{_hash(algorithm, body)}" if qop == "auth-int" else f"{method}:{uri}"
    ha2 = _hash(algorithm, a2)
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")


def build_authorization(challenge: Challenge, method: str, uri: str, username: str, password: str,
                        body: bytes = b"", nc: int = 1, cnonce: str | None = None) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge``.

    qop=auth is used when offered; auth-int only when it is the only one offered (it covers the
    body). Quoting follows RFC 7616: ``algorithm``, ``qop`` and ``nc`` are tokens, the rest quoted.
    Raises :class:`AuthenticationError` for a scheme, algorithm or qop we cannot answer.
    """
    if not challenge.supported:
        raise AuthenticationError(f"cannot answer {challenge.scheme} challenge with algorithm "
                                  f"{challenge.algorithm} and qop {','.join(challenge.qop) or '-'}")
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if challenge.qop else "")
    if cnonce is None and (qop or challenge.algorithm.endswith("-sess")):
        cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}" if qop else ""
    response = digest_response(challenge.algorithm, username, challenge.realm, password, method,
                               uri, challenge.nonce, nc_text, cnonce or "", qop, body)
    parts = [f"username={quote(username)}", f"realm={quote(challenge.realm)}",
             f"nonce={quote(challenge.nonce)}", f"uri={quote(uri)}",
             f"response={quote(response)}", f"algorithm={challenge.algorithm}"]
    if cnonce is not None:
        parts.append(f"cnonce={quote(cnonce)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={quote(challenge.opaque)}")
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}"]
    return "Digest " + ", ".join(parts)


@dataclass(frozen=True)
class DigestCredentials:
    """The fields of an Authorization / Proxy-Authorization value, as the server reads them."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str = ""
    nc: str = ""
    cnonce: str = ""
    opaque: str | None = None

    @classmethod
    def parse(cls, header_value: str) -> DigestCredentials:
        """Parse a Digest Authorization value; raises :class:`SIPParseError`."""
        scheme, rest = _split_scheme(header_value)
        if scheme.lower() != "digest":
            raise SIPParseError(f"unsupported auth scheme {scheme!r}")
        params = _parse_params(rest)
        missing = [name for name in ("username", "realm", "nonce", "uri", "response")
                   if name not in params]
        if missing:
            raise SIPParseError(f"authorization without {', '.join(missing)}")
        return cls(params["username"], params["realm"], params["nonce"], params["uri"],
                   params["response"], canonical_algorithm(params.get("algorithm", "MD5")),
                   params.get("qop", "").lower(), params.get("nc", ""), params.get("cnonce", ""),
                   params.get("opaque"))


class DigestSession:
    """Client-side memory of challenges, so later requests carry credentials up front.

    One instance per account. Challenges are kept per (header, realm), so a proxy's 407 and a
    registrar's 401 can both be answered on the same request; ``nc`` counts up per nonce.
    """

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._challenges: dict[tuple[str, str], Challenge] = {}
        self._nonce_counts: dict[str, int] = {}

    def handle_challenge(self, header_values: str | Sequence[str], proxy: bool = False,
                         had_credentials: bool = False) -> bool:
        """Record the challenge(s) of a 401 (or a 407 with ``proxy``); return whether to retry.

        Of several challenges for one realm the strongest supported algorithm wins. When the
        failed request already carried our credentials and a realm is challenged again without
        ``stale=true``, the password was refused: returns False (do not loop). Malformed or
        unsupported challenges are skipped; False when none is left.
        """
        values = [header_values] if isinstance(header_values, str) else list(header_values)
        header = "Proxy-Authorization" if proxy else "Authorization"
        best: dict[str, Challenge] = {}
        for value in values:
            try:
                challenge = Challenge.parse(value)
            except SIPParseError as exc:  # one bad header must not hide a good one beside it
                logger.warning("ignoring malformed challenge %r: %s", value[:80], exc.reason)
                continue
            if not challenge.supported:
                logger.debug("ignoring unsupported challenge %s", challenge.algorithm)
                continue
            current = best.get(challenge.realm)
            if current is None or _rank(challenge) < _rank(current):
                best[challenge.realm] = challenge
        retry = bool(best)
        for realm, challenge in best.items():
            if had_credentials and (header, realm) in self._challenges and not challenge.stale:
                logger.info("credentials for realm %r were refused", realm)
                retry = False
            self._challenges[(header, realm)] = challenge
        return retry

    def authorize(self, method: str, uri: str, body: bytes = b"") -> list[tuple[str, str]]:
        """(header name, value) pairs to add to a request, one per remembered challenge."""
        headers = []
        for (header, _realm), challenge in self._challenges.items():
            count = self._nonce_counts.get(challenge.nonce, 0) + 1
            self._nonce_counts[challenge.nonce] = count
            headers.append((header, build_authorization(challenge, method, uri, self.username,
                                                        self._password, body, nc=count)))
        return headers

    def clear(self) -> None:
        """Forget every challenge (e.g. after the account's password changed)."""
        self._challenges.clear()
        self._nonce_counts.clear()


def _rank(challenge: Challenge) -> int:
    return _STRENGTH.index(challenge.algorithm.removesuffix("-sess"))

