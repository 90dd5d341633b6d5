"""The server's admission policy, run by the engine on each INVITE before any plugin sees it:
allow-list of networks (403), digest authentication of INVITEs (401 challenge), new-call rate per
source (token buckets; 503 with Retry-After) and concurrent calls (503 with Retry-After).

The rate is limited per *source*, the transport address (IP and port) the INVITE came from: a
phone, a PBX trunk or a test client each has one, and one of them flooding must not lock out the
others behind the same IP (a NAT, a host running several softphones). So that a flood cannot
escape the limit by changing its source port on every INVITE, a source IP as a whole may admit
:data:`HOST_RATE_FACTOR` times the per-source rate and burst.

Password guessing (with ``limits.auth``) is counted per source *address*, whatever the port:
:class:`AuthGuard` holds back the answer to each failed authentication longer and longer, then bans
the address for a while (403 to all its INVITEs, the digest not even checked). Every failure, ban
and refused attempt is logged on the ``ivr.security`` logger as one ``SECURITY ...`` line that
fail2ban can read (:func:`security_line`; the filter is in docs/security.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol

from ivr.call import CallContext
from ivr.config import InboundAuth, IvrConfig

log = logging.getLogger(__name__)
#: Security events, one ``SECURITY <event> ip=<address> ...`` line each (for fail2ban).
security_log = logging.getLogger("ivr.security")

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


# -- password guessing --------------------------------------------------------------------------


@dataclass
class _Offender:
    """What one source address did: failures since its last success, and a ban."""

    failures: int = 0
    last_failure: float = 0.0
    banned_until: float = 0.0
    blocked: int = 0  # attempts refused during the current ban
    blocked_logged: float = float("-inf")


@dataclass(frozen=True)
class Verdict:
    """What :meth:`AuthGuard.failed` decided: hold the answer ``delay`` s, or ``banned``."""

    failures: int
    delay: float = 0.0
    banned: bool = False


class AuthGuard:
    """Failed authentications per source address: the answer held back longer and longer, then a
    ban; a success clears the address.

    With ``policy`` (:class:`ivr.config.InboundAuth`): the first ``delay_after`` failures are
    answered at once, the next ones after ``delay``, ``2*delay``, ``4*delay``... up to ``max_delay``;
    failure number ``ban_after`` bans the address for ``ban_time`` seconds. After a ban the address
    is one failure from the next ban until it succeeds or stays quiet ``forget_after`` seconds.

    At most ``max_addresses`` addresses are remembered: when full, forgotten ones go first, then
    the least recently seen unbanned ones (down to 90 %, so the sweep is paid once per many new
    addresses), and banned ones only when nothing else is left.
    """

    def __init__(self, policy: InboundAuth, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._table: OrderedDict[str, _Offender] = OrderedDict()  # least recently seen first

    def __len__(self) -> int:
        return len(self._table)

    def delay_for(self, failures: int) -> float:
        """How long the answer to failure number ``failures`` is held back (0: at once)."""
        policy = self.policy
        extra = failures - policy.delay_after
        if extra <= 0 or policy.delay <= 0:
            return 0.0
        return min(policy.max_delay, policy.delay * 2.0 ** min(extra - 1, 30))

    def banned_for(self, address: str) -> float:
        """Seconds left of ``address``'s ban (0: not banned); a refused attempt is counted."""
        entry = self._table.get(address)
        if entry is None:
            return 0.0
        left = entry.banned_until - self.clock()
        if left <= 0:
            return 0.0
        entry.blocked += 1
        return left

    def failed(self, address: str) -> Verdict:
        """Count a failed authentication from ``address``; how to answer it."""
        now = self.clock()
        entry = self._table.get(address)
        if entry is not None and self._forgotten(entry, now):
            del self._table[address]
            entry = None
        if entry is None:
            if len(self._table) >= self.policy.max_addresses:
                self._make_room(now)
            entry = self._table[address] = _Offender()
        self._table.move_to_end(address)
        entry.failures += 1
        entry.last_failure = now
        if entry.failures >= self.policy.ban_after:
            entry.banned_until = now + self.policy.ban_time
            entry.failures = self.policy.ban_after - 1  # when the ban ends: one failure from the next
            entry.blocked, entry.blocked_logged = 0, float("-inf")
            return Verdict(self.policy.ban_after, banned=True)
        return Verdict(entry.failures, self.delay_for(entry.failures))

    def succeeded(self, address: str) -> None:
        """A good authentication from ``address``: its failures are forgotten."""
        self._table.pop(address, None)

    def should_log_blocked(self, address: str, every: float = 1.0) -> int:
        """The count of attempts refused during ``address``'s ban when one is due to be logged
        (at most one line per address every ``every`` s), else 0."""
        entry = self._table.get(address)
        now = self.clock()
        if entry is None or now - entry.blocked_logged < every:
            return 0
        entry.blocked_logged = now
        return entry.blocked

    def _forgotten(self, entry: _Offender, now: float) -> bool:
        return now >= entry.banned_until and now - max(entry.last_failure, entry.banned_until) > \
            self.policy.forget_after

    def _make_room(self, now: float) -> None:
        target = max(1, self.policy.max_addresses * 9 // 10)
        for address in [a for a, e in self._table.items() if self._forgotten(e, now)]:
            del self._table[address]
        for banned_too in (False, True):
            if len(self._table) < target:
                return
            for address in list(self._table):
                if len(self._table) < target:
                    break
                if banned_too or self._table[address].banned_until <= now:
                    del self._table[address]
        log.warning("auth: more than %d source addresses failed to authenticate; forgot the stalest",
                    self.policy.max_addresses)


_SAFE_FIELD = re.compile(r"[^A-Za-z0-9._~+@-]")


def log_field(value: Any, limit: int = 64) -> str:
    """An attacker-chosen value (a user name) as one log field: every byte outside
    ``[A-Za-z0-9._~+@-]`` percent-escaped (no space, ``=``, quote or line break gets through, so
    it cannot forge another field or line), at most ``limit`` characters; ``-`` when absent."""
    if value is None or value == "":
        return "-"
    escaped = _SAFE_FIELD.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), str(value))
    return escaped if len(escaped) <= limit else escaped[:limit - 3] + "..."


def reason_token(reason: str) -> str:
    """A verifier's reason as one log token: ``wrong-password``, ``unknown-user``, ``stale-nonce``..."""
    if reason == "wrong response":
        return "wrong-password"
    token = re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")[:48]
    return token or "refused"


def security_line(event: str, ip: str, port: Any, user: Any, reason: str, **fields: Any) -> str:
    """The text of one security event: ``SECURITY <event> ip=<ip> port=<port> user=<user>
    reason=<reason>`` then ``key=value`` fields. Only ``user`` comes from the peer, escaped by
    :func:`log_field`; the address comes first, so a filter anchored on the prefix reads ours."""
    extra = "".join(f" {key}={value}" for key, value in fields.items())
    return f"SECURITY {event} ip={ip} port={port} user={log_field(user)} reason={reason}{extra}"


def log_security_event(event: str, ip: str, port: Any, user: Any, reason: str, **fields: Any) -> None:
    """Log one security event on ``ivr.security`` (WARNING): the :func:`security_line` text, and
    the same values as fields for ``logging: {format: json}``."""
    values = {"event": event, "ip": ip, "port": port, "user": log_field(user), "reason": reason, **fields}
    security_log.warning(security_line(event, ip, port, user, reason, **fields),
                         extra={"fields": values})


def _address_key(host: Any) -> str | None:
    """The source address as one canonical text (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(str(host))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


# -- the policy -----------------------------------------------------------------------------------


class Admission:
    """Decides on each INVITE: the SIP status to reject with, or ``None`` to go on.

    ``engine`` gives the calls in progress; ``clock`` (monotonic seconds) is injectable. A
    rejection may have to wait: the engine awaits :meth:`hold` before sending it.
    """

    def __init__(self, engine: CallCounter, config: IvrConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self._buckets = TokenBuckets(clock)
        self._verifier: Any = None
        self._secret = secrets.token_bytes(32)  # nonces stay valid across reloads
        self.guard: AuthGuard | None = None
        self._holds: dict[str, float] = {}  # call id -> seconds its rejection waits
        self._stale: set[str] = set()  # call ids whose 401 says stale=true
        self._holding = 0  # rejections waiting now
        self.configure(config)

    def configure(self, config: IvrConfig) -> None:
        """Take the limits of a (re)loaded configuration; failures and bans are kept."""
        self.config = config
        self._verifier = None
        auth = config.limits.auth
        if auth is None:
            self.guard = None
            return
        from simplesip.core.auth_server import DigestVerifier

        self._verifier = DigestVerifier(auth.realm, auth.users.get, secret=self._secret)
        if self.guard is None:
            self.guard = AuthGuard(auth, self.clock)
        else:
            self.guard.policy = auth

    @property
    def held(self) -> int:
        """Rejections decided and not sent yet (they do not count as calls)."""
        return len(self._holds) + self._holding

    def __call__(self, sip_call: Any, call: CallContext) -> int | None:
        limits = self.config.limits
        source = call.source
        host = source[0] if source else None
        if limits.allow and not _allowed(host, limits.allow):
            return 403
        address = _address_key(host) if host is not None else None
        if self.guard is not None and address is not None and self._banned(sip_call, call, address):
            return 403
        if source is not None and not self._take_token(host, source):
            log.info("new-call rate of %s:%s exceeded: 503", source[0], source[1])
            return 503
        if self._verifier is not None:
            status = self._authenticate(sip_call, call, address)
            if status is not None:
                return status
        # calls already admitted, not counting this one (it is in engine.calls already) nor the
        # rejections held back
        if len(self.engine.calls) - 1 - self.held >= limits.max_calls:
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

    def _banned(self, sip_call: Any, call: CallContext, address: str) -> bool:
        assert self.guard is not None
        left = self.guard.banned_for(address)
        if not left:
            return False
        blocked = self.guard.should_log_blocked(address)
        if blocked:
            log_security_event("auth-blocked", address, _port(call), _claimed_user(sip_call), "banned",
                               blocked=blocked, ban_left=f"{left:.0f}",
                               call=log_field(getattr(sip_call, "id", None)))
        return True

    def _authenticate(self, sip_call: Any, call: CallContext, address: str | None) -> int | None:
        """Check the INVITE's Authorization against the configured users (wall clock: the
        nonces carry their issue time): ``None`` when good, else 401 (maybe held back) or 403."""
        header = _header(sip_call, "Authorization")
        if not header:
            return 401  # the usual first step, not a failure
        body = getattr(getattr(sip_call, "request", None), "body", b"") or b""
        result = self._verifier.verify(header, "INVITE", time.time(), body)
        call_id = getattr(sip_call, "id", None) or call.id
        if result.ok:
            if self.guard is not None and address is not None:
                self.guard.succeeded(address)
            return None
        if result.stale:  # the right password on an old nonce: a new one, and no failure
            self._stale.add(call.id)
            return 401
        log.debug("call %s: INVITE authentication refused (%s)", call_id, result.reason)
        if self.guard is None or address is None:
            return 401
        verdict = self.guard.failed(address)
        reason = reason_token(result.reason)
        if verdict.banned:
            log_security_event("auth-ban", address, _port(call), result.username, reason,
                               failures=verdict.failures, ban=f"{self.guard.policy.ban_time:g}",
                               call=log_field(call_id))
            return 403
        log_security_event("auth-failure", address, _port(call), result.username, reason,
                           failures=verdict.failures, delay=f"{verdict.delay:g}", call=log_field(call_id))
        if verdict.delay > 0:
            self._holds[call.id] = verdict.delay
        return 401

    async def hold(self, call: CallContext) -> None:
        """Wait before sending ``call``'s rejection when the policy holds it back (a timer on the
        event loop: every other call goes on meanwhile)."""
        delay = self._holds.pop(call.id, 0.0)
        self._stale.discard(call.id)
        if delay <= 0:
            return
        self._holding += 1
        try:
            await asyncio.sleep(delay)
        finally:
            self._holding -= 1

    def challenge(self, stale: bool = False) -> dict[str, str]:
        """Headers of the 401 that challenges an INVITE."""
        if self._verifier is None:
            return {}
        return {"WWW-Authenticate": self._verifier.challenge(time.time(), stale=stale)}

    def reject_headers(self, status: int, call: CallContext | None = None) -> dict[str, str]:
        """Extra headers for a rejection by this policy (of ``call``, when known)."""
        if status == 503:
            return {"Retry-After": str(self.config.limits.retry_after)}
        if status == 401:
            stale = call is not None and call.id in self._stale
            self._stale.discard(call.id if call is not None else "")
            return self.challenge(stale)
        return {}


def _port(call: CallContext) -> Any:
    source = call.source
    return source[1] if source and len(source) > 1 else "-"


def _claimed_user(sip_call: Any) -> str | None:
    """The user name an Authorization claims, for the log only (never trusted)."""
    header = _header(sip_call, "Authorization")
    match = re.search(r'username\s*=\s*"([^"]*)"', header or "")
    return match.group(1) if match else None


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
