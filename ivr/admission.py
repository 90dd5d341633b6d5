"""The server's admission policy, run by the engine on each INVITE before any plugin sees it:
allow-list of networks (403), digest authentication of INVITEs (401 challenge), new-call rate per
source (token buckets; 503 with Retry-After) and concurrent calls (503 with Retry-After).

The rate is limited per *source*, the transport address (IP and port) the INVITE came from: a
phone, a PBX trunk or a test client each has one, and one of them flooding must not lock out the
others behind the same IP (a NAT, a host running several softphones). So that a flood cannot
escape the limit by changing its source port on every INVITE, a source IP as a whole may admit
:data:`HOST_RATE_FACTOR` times the per-source rate and burst.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol

from ivr.call import CallContext
from ivr.config import IvrConfig

log = logging.getLogger(__name__)

#: A source IP may admit this many times the per-source rate and burst (all its ports together).
HOST_RATE_FACTOR = 5
#: Buckets idle this long are forgotten once there are more than :data:`MAX_BUCKETS`.
BUCKET_IDLE_SECONDS = 60.0
MAX_BUCKETS = 10000


class CallCounter(Protocol):
    """What admission reads of the engine: the calls not yet ended (``Engine.calls``)."""

    calls: dict[str, Any]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """Token buckets by key: ``rate`` tokens a second up to ``burst``; :meth:`available` checks,
    :meth:`take` spends one."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}

    def available(self, key: Hashable, rate: float, burst: float) -> bool:
        """Refill ``key``'s bucket to now; whether it holds a whole token."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:  # forget idle sources so a scan cannot grow this
                self._buckets = {k: b for k, b in self._buckets.items() if now - b.stamp < BUCKET_IDLE_SECONDS}
            bucket = self._buckets[key] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        return bucket.tokens >= 1.0

    def take(self, key: Hashable) -> None:
        """Spend one token of ``key`` (after :meth:`available` said yes)."""
        self._buckets[key].tokens -= 1.0


class Admission:
    """Decides on each INVITE: the SIP status to reject with, or ``None`` to go on.

    ``engine`` gives the calls in progress; ``clock`` (monotonic seconds) is injectable.
    """

    def __init__(self, engine: CallCounter, config: IvrConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self._buckets = TokenBuckets(clock)
        self._verifier: Any = None
        self.configure(config)

    def configure(self, config: IvrConfig) -> None:
        """Take the limits of a (re)loaded configuration."""
        self.config = config
        self._verifier = None
        auth = config.limits.auth
        if auth is not None:
            from simplesip.core.auth_server import DigestVerifier

            self._verifier = DigestVerifier(auth.realm, auth.users.get)

    def __call__(self, sip_call: Any, call: CallContext) -> int | None:
        limits = self.config.limits
        source = call.source
        host = source[0] if source else None
        if limits.allow and not _allowed(host, limits.allow):
            return 403
        if self._verifier is not None and not self._authorised(sip_call):
            return 401
        if source is not None and not self._take_token(host, source):
            log.info("new-call rate of %s:%s exceeded: 503", source[0], source[1])
            return 503
        # calls already admitted, not counting this one (it is in engine.calls already)
        if len(self.engine.calls) - 1 >= limits.max_calls:
            return 503
        return None

    def _take_token(self, host: Any, source: tuple[str, int]) -> bool:
        rate = self.config.limits.rate
        per_source = self._buckets.available(("source", tuple(source)), rate.per_source, rate.burst)
        per_host = self._buckets.available(("host", host), rate.per_source * HOST_RATE_FACTOR,
                                           rate.burst * HOST_RATE_FACTOR)
        if not (per_source and per_host):
            return False
        self._buckets.take(("source", tuple(source)))
        self._buckets.take(("host", host))
        return True

    def _authorised(self, sip_call: Any) -> bool:
        """Check the INVITE's Authorization against the configured users (wall clock: the
        nonces carry their issue time)."""
        header = _header(sip_call, "Authorization")
        if not header:
            return False
        body = getattr(getattr(sip_call, "request", None), "body", b"") or b""
        result = self._verifier.verify(header, "INVITE", time.time(), body)
        if not result.ok:
            log.info("call %s: INVITE authentication refused (%s)", getattr(sip_call, "id", "?"),
                     result.reason)
        return result.ok

    def challenge(self) -> dict[str, str]:
        """Headers of the 401 that challenges an INVITE."""
        if self._verifier is None:
            return {}
        return {"WWW-Authenticate": self._verifier.challenge(time.time())}

    def reject_headers(self, status: int) -> dict[str, str]:
        """Extra headers for a rejection by this policy."""
        if status == 503:
            return {"Retry-After": str(self.config.limits.retry_after)}
        if status == 401:
            return self.challenge()
        return {}


def _allowed(host: str | None, networks: list[Any]) -> bool:
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _header(sip_call: Any, name: str) -> str | None:
    headers = getattr(sip_call, "headers", None) or {}
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None and isinstance(headers, dict):
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value
