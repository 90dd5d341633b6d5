"""Server-side HTTP Digest for SIP (RFC 7616, RFC 8760): challenging and verifying requests.

:class:`DigestVerifier` issues stateless nonces (issue time + HMAC) and checks Authorization
values against them, refusing replayed nonce counts. The digest arithmetic and the parsing of
Authorization values are shared with the client side in :mod:`simplesip.core.auth`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from simplesip.core.auth import (
    HASHES,
    DigestCredentials,
    canonical_algorithm,
    digest_response,
    quote,
    wire_bytes,
)
from simplesip.errors import SIPParseError

__all__ = ["DigestVerifier", "VerifyOutcome", "VerifyResult"]

logger = logging.getLogger(__name__)

_NC = re.compile(r"[0-9a-fA-F]{8}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{32,128}")
# Our nonces: <issue time, hex>.<16 hex salt>.<32 hex HMAC>; anything else is not ours.
_OUR_NONCE = re.compile(r"([0-9a-f]{1,12})\.([0-9a-f]{16})\.([0-9a-f]{32})")
# Clocks of the UA and the verifier are the same process, but allow a little skew for shared secrets.
_CLOCK_SKEW = 5.0


class VerifyOutcome(enum.Enum):
    """``STALE`` means the right password on an expired nonce: challenge again with stale=true."""

    OK = "ok"
    STALE = "stale"
    BAD = "bad"


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on one Authorization value; ``reason`` is for logs, never for the peer."""

    outcome: VerifyOutcome
    username: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is VerifyOutcome.OK

    @property
    def stale(self) -> bool:
        return self.outcome is VerifyOutcome.STALE


class DigestVerifier:
    """Server-side Digest checks with stateless nonces: ``<hex time>.<random>.<HMAC>``.

    The nonce carries its own issue time, signed with ``secret`` (random per verifier unless given,
    e.g. shared by instances behind a load balancer), so no nonce table is needed to check age and
    origin. The only state is the highest ``nc`` seen per nonce, pruned once nonces expire.
    """

    def __init__(self, realm: str, lookup_password: Callable[[str], str | None],
                 algorithm: str = "MD5", nonce_ttl: float = 300, secret: bytes | None = None) -> None:
        self.realm = realm
        self.algorithm = canonical_algorithm(algorithm)
        if self.algorithm.removesuffix("-sess") not in HASHES:
            raise ValueError(f"unsupported algorithm {algorithm!r}")
        self.nonce_ttl = nonce_ttl
        self._lookup_password = lookup_password
        self._secret = secret or secrets.token_bytes(32)
        self._decoy = secrets.token_hex(16)  # the password unknown users are checked against
        self._last_nc: dict[str, tuple[int, int]] = {}  # nonce -> (issue time, highest nc)

    def _sign(self, stamp: str, salt: str) -> str:
        message = wire_bytes(f"{stamp}.{salt}.{self.realm}")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def make_nonce(self, now: float) -> str:
        stamp, salt = f"{int(now):x}", secrets.token_hex(8)
        return f"{stamp}.{salt}.{self._sign(stamp, salt)}"

    def _nonce_time(self, nonce: str) -> int | None:
        """The issue time of one of our nonces, or None when it is not ours."""
        # The shape check first: hmac.compare_digest refuses non-ASCII str with TypeError.
        match = _OUR_NONCE.fullmatch(nonce)
        if match is None:
            return None
        stamp, salt, signature = match.groups()
        if not hmac.compare_digest(signature, self._sign(stamp, salt)):
            return None
        return int(stamp, 16)

    def challenge(self, now: float, stale: bool = False) -> str:
        """A WWW-Authenticate / Proxy-Authenticate value with a fresh nonce."""
        value = (f"Digest realm={quote(self.realm)}, nonce={quote(self.make_nonce(now))}, "
                 f'algorithm={self.algorithm}, qop="auth"')
        return value + ", stale=true" if stale else value

    def verify(self, authorization: str, method: str, now: float, body: bytes = b"",
               uri: str | None = None) -> VerifyResult:
        """Check an Authorization value for a request with ``method`` (and ``body`` for auth-int).

        Pass the Request-URI as ``uri`` to also refuse credentials computed for another URI.
        Whatever ``authorization`` holds, the verdict is a :class:`VerifyResult`; never raises.
        """
        if not isinstance(authorization, str):
            return VerifyResult(VerifyOutcome.BAD, None, "authorization is not text")
        try:
            creds = DigestCredentials.parse(authorization)
        except SIPParseError as exc:
            return VerifyResult(VerifyOutcome.BAD, None, exc.reason)
        user = creds.username

        def bad(reason: str) -> VerifyResult:
            logger.debug("digest refused for %r: %s", user, reason)
            return VerifyResult(VerifyOutcome.BAD, user, reason)

        if creds.realm != self.realm:
            return bad("wrong realm")
        if uri is not None and creds.uri != uri:
            return bad("digest uri does not match the request")
        if creds.algorithm != self.algorithm:
            return bad(f"algorithm {creds.algorithm} not offered")
        issued = self._nonce_time(creds.nonce)
        if issued is None or issued > now + _CLOCK_SKEW:
            return bad("nonce not issued by us")
        # We always challenge with qop, so RFC 2069 style answers (no qop) are downgrades.
        if creds.qop not in ("auth", "auth-int") or not _NC.fullmatch(creds.nc) or not creds.cnonce:
            return bad("qop, nc or cnonce missing or malformed")
        if not _HEX_DIGEST.fullmatch(creds.response):  # also keeps compare_digest on ASCII
            return bad("response is not a hex digest")
        # An unknown user costs the same digest and comparison as a known one with a wrong
        # password (against a random password no response can match): the answer and its timing
        # must not tell a guesser which user names exist.
        password = self._lookup_password(user)
        known = password is not None
        expected = digest_response(self.algorithm, user, self.realm, password if known else self._decoy,
                                   method, creds.uri, creds.nonce, creds.nc, creds.cnonce, creds.qop, body)
        matches = hmac.compare_digest(expected, creds.response.lower())
        if not known:
            return bad("unknown user")
        if not matches:
            return bad("wrong response")
        if now - issued > self.nonce_ttl:
            return VerifyResult(VerifyOutcome.STALE, user, "nonce expired")
        self._forget_expired(now)
        nc = int(creds.nc, 16)
        if nc <= self._last_nc.get(creds.nonce, (issued, 0))[1]:
            return bad("nonce count replayed")
        self._last_nc[creds.nonce] = (issued, nc)
        return VerifyResult(VerifyOutcome.OK, user)

    def _forget_expired(self, now: float) -> None:
        # Entries are in first-use order, which is close to issue order: prune from the front.
        while self._last_nc:
            nonce, (issued, _nc) = next(iter(self._last_nc.items()))
            if now - issued <= self.nonce_ttl:
                return
            del self._last_nc[nonce]
