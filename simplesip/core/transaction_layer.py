"""The transaction layer under the user agent core (private to :mod:`simplesip.core.useragent`).

It owns the transactions, carries out the effects they return (send, timers, deliver, terminate),
keeps one table of deadlines for everything time-driven in the core, and re-sends requests with
digest credentials when a 401/407 comes back.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import secrets
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from simplesip.core.auth import Challenge, build_authorization
from simplesip.core.config import Address, Target, UAConfig
from simplesip.core.message_factory import new_branch, replace_top_via
from simplesip.core.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    Deliver,
    Effect,
    Send,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    StartTimer,
    StopTimer,
    Terminate,
    TimedOut,
    TimerConfig,
    TxState,
    client_key,
    server_key,
)
from simplesip.errors import AuthenticationError
from simplesip.wire.message import Request, Response

if TYPE_CHECKING:
    from simplesip.core.dialog import Dialog

__all__ = [
    "DigestCache",
    "OutgoingRequest",
    "TimerOwner",
    "TimerTable",
    "TransactionEntry",
    "TransactionLayer",
]

logger = logging.getLogger(__name__)

ResponseHandler = Callable[["OutgoingRequest", Response, float], None]
TimeoutHandler = Callable[["OutgoingRequest", float], None]


class TimerOwner(Protocol):
    """Anything with timers in the table: a transaction entry, a call, the registration."""

    def fire(self, name: str, now: float) -> None:
        """Timer ``name`` is due."""


class TimerTable:
    """Deadlines keyed by (owner, name), earliest first; re-arming a timer replaces it."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerOwner, str]] = []
        self._live: dict[tuple[int, str], int] = {}  # (id(owner), name) -> sequence of live entry
        self._by_owner: dict[int, set[str]] = {}
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def set(self, owner: TimerOwner, name: str, deadline: float) -> None:
        """Arm (or re-arm) ``owner``'s timer ``name``."""
        seq = next(self._sequence)
        self._live[(id(owner), name)] = seq
        self._by_owner.setdefault(id(owner), set()).add(name)
        heapq.heappush(self._heap, (deadline, seq, owner, name))

    def cancel(self, owner: TimerOwner, name: str) -> None:
        """Disarm one timer (no error if it is not armed)."""
        if self._live.pop((id(owner), name), None) is not None:
            names = self._by_owner.get(id(owner))
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_owner[id(owner)]

    def cancel_all(self, owner: TimerOwner) -> None:
        """Disarm every timer of ``owner``."""
        for name in list(self._by_owner.get(id(owner), ())):
            self.cancel(owner, name)

    def _drop_stale(self) -> None:
        # Cancelled or re-armed timers stay in the heap until they reach the top (lazy deletion).
        while self._heap:
            _, seq, owner, name = self._heap[0]
            if self._live.get((id(owner), name)) == seq:
                return
            heapq.heappop(self._heap)

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> tuple[TimerOwner, str] | None:
        """Remove and return the earliest timer due at ``now``, or None."""
        self._drop_stale()
        if not self._heap or self._heap[0][0] > now:
            return None
        _, _, owner, name = heapq.heappop(self._heap)
        self.cancel(owner, name)
        return owner, name


class TransactionEntry:
    """A transaction plus where its messages go and who hears about it (``on_deliver``, ``on_timeout``)."""

    def __init__(
        self, layer: "TransactionLayer", tx: ClientTransaction | ServerTransaction, dest: Address,
        transport: str,
    ) -> None:
        self.layer = layer
        self.tx = tx
        self.dest = dest
        self.transport = transport
        self.source: Address | None = None  # server side: where the request came from
        self.on_deliver: Callable[[Request | Response, float], None] | None = None
        self.on_timeout: Callable[[str, float], None] | None = None

    def fire(self, name: str, now: float) -> None:
        """One of the transaction's timers is due."""
        self.layer.apply(self, self.tx.on_timer(name), now)


class TransactionLayer:
    """Client and server transactions of one user agent, with their timers and outgoing bytes."""

    def __init__(self, config: UAConfig) -> None:
        self.config = config
        self.timers = TimerTable()
        self.outbox: list[tuple[bytes, Address, str]] = []
        self.clients: dict[tuple, TransactionEntry] = {}
        self.servers: dict[tuple, TransactionEntry] = {}
        # (Call-ID, From tag, CSeq) of requests without a To tag -> server key, to spot merged
        # requests: the same request reaching us twice by different paths (8.2.2.2).
        self.merge_index: dict[tuple, tuple] = {}

    def timer_config(self, transport: str) -> TimerConfig:
        """Timer values for ``transport`` (reliable transports never retransmit)."""
        cfg = self.config
        return TimerConfig(cfg.t1, cfg.t2, cfg.t4, reliable=transport != "udp")

    # --- effects ---------------------------------------------------------------------------------

    def send(self, message: Request | Response, dest: Address, transport: str) -> None:
        """Queue ``message`` for the shell."""
        self.outbox.append((message.serialize(), dest, transport))

    def apply(self, entry: TransactionEntry, effects: list[Effect], now: float) -> None:
        """Carry out what a transaction asked for."""
        for effect in effects:
            if isinstance(effect, Send):
                self.send(effect.message, entry.dest, entry.transport)
            elif isinstance(effect, StartTimer):
                self.timers.set(entry, effect.name, now + effect.delay)
            elif isinstance(effect, StopTimer):
                self.timers.cancel(entry, effect.name)
            elif isinstance(effect, Deliver):
                if entry.on_deliver is not None:
                    entry.on_deliver(effect.message, now)
            elif isinstance(effect, TimedOut):
                if entry.on_timeout is not None:
                    entry.on_timeout(effect.timer, now)
            elif isinstance(effect, Terminate):
                self.forget(entry)

    def forget(self, entry: TransactionEntry) -> None:
        """Drop a transaction and its timers (it terminated, or its owner gave it up)."""
        self.timers.cancel_all(entry)
        key = entry.tx.key
        if self.clients.get(key) is entry:
            del self.clients[key]
        if self.servers.get(key) is entry:
            del self.servers[key]
            request = entry.tx.request
            merge_key = (request.call_id, request.from_tag, request.cseq)
            if self.merge_index.get(merge_key) == key:
                del self.merge_index[merge_key]

    # --- client side -----------------------------------------------------------------------------

    def start_client(self, request: Request, dest: Address, transport: str, now: float) -> TransactionEntry:
        """Create and start the client transaction for ``request``."""
        timers = self.timer_config(transport)
        if request.method == "INVITE":
            tx = ClientInviteTransaction(request, timers)
        else:
            tx = ClientNonInviteTransaction(request, timers)
        entry = TransactionEntry(self, tx, dest, transport)
        self.clients[tx.key] = entry
        self.apply(entry, tx.start(), now)
        return entry

    def on_response(self, response: Response, now: float) -> bool:
        """Route a response to its client transaction; False when none matches."""
        entry = self.clients.get(client_key(response))
        if entry is None:
            return False
        self.apply(entry, entry.tx.on_response(response), now)
        return True

    # --- server side -----------------------------------------------------------------------------

    def find_server(self, request: Request, method: str | None = None) -> TransactionEntry | None:
        """The server transaction ``request`` belongs to (or, with ``method``, a sibling of it)."""
        return self.servers.get(server_key(request, method))

    def is_merged(self, request: Request) -> bool:
        """A request without To tag we already hold under another branch (8.2.2.2: answer 482)."""
        if request.to_tag is not None or request.method in ("ACK", "CANCEL"):
            return False
        known = self.merge_index.get((request.call_id, request.from_tag, request.cseq))
        return known is not None and known != server_key(request)

    def start_server(self, request: Request, reply_to: Address, transport: str) -> TransactionEntry:
        """Create the server transaction for a new request."""
        timers = self.timer_config(transport)
        if request.method == "INVITE":
            tx = ServerInviteTransaction(request, timers)
        else:
            tx = ServerNonInviteTransaction(request, timers)
        entry = TransactionEntry(self, tx, reply_to, transport)
        self.servers[tx.key] = entry
        if request.to_tag is None:
            self.merge_index[(request.call_id, request.from_tag, request.cseq)] = tx.key
        return entry

    def respond(self, entry: TransactionEntry, response: Response, now: float) -> None:
        """Answer through a server transaction."""
        self.apply(entry, entry.tx.send_response(response), now)

    def unreachable(self, addr: Address, now: float) -> int:
        """The network says nothing listens at ``addr`` (ICMP port unreachable): every client
        transaction still waiting there for its first response times out now instead of after
        Timer B/F. Returns how many did."""
        waiting = (TxState.CALLING, TxState.TRYING)
        hit = [entry for entry in self.clients.values()
               if tuple(entry.dest) == tuple(addr) and entry.tx.state in waiting]
        for entry in hit:
            self.forget(entry)
            if entry.on_timeout is not None:
                entry.on_timeout("unreachable", now)
        return len(hit)

    def on_request(self, request: Request, now: float) -> bool:
        """Give a request to the server transaction it retransmits (or ACKs); False if none."""
        entry = self.find_server(request)
        if entry is None:
            return False
        self.apply(entry, entry.tx.on_request(request), now)
        return True


class DigestCache:
    """The last digest challenge a stream of requests answered (REGISTER and its refreshes).

    Reusing it, with the nonce count going up (RFC 7616 3.4), lets a refresh go out with
    credentials and skip the 401 round trip; when the server has moved on to a new nonce it
    challenges again (``stale=true``) and the answer to that becomes the cached one.
    """

    def __init__(self) -> None:
        self.challenge: Challenge | None = None
        self.header = "Authorization"
        self.nc = 0
        self.cnonce: str | None = None

    def remember(self, challenge: Challenge, header: str, cnonce: str | None) -> None:
        """``challenge`` was just answered with nonce count 1 and ``cnonce``."""
        self.challenge, self.header, self.nc, self.cnonce = challenge, header, 1, cnonce

    def clear(self) -> None:
        """Forget the challenge (the server refused what it gave us)."""
        self.challenge = None

    def authorize(self, request: Request, username: str, password: str) -> bool:
        """Add credentials for the cached challenge to ``request``; False when there is none."""
        if self.challenge is None:
            return False
        self.nc += 1
        try:
            value = build_authorization(self.challenge, request.method, request.uri, username,
                                        password, body=request.body, nc=self.nc, cnonce=self.cnonce)
        except AuthenticationError:
            self.challenge = None
            return False
        request.headers.remove(self.header)
        request.headers.add(self.header, value)
        return True


class OutgoingRequest:
    """A request we send, answered by ``on_response`` (every response but the 401/407 we handle).

    On a digest challenge the request is sent again with credentials: once per challenge, and once
    more when the second challenge says ``stale=true`` (the nonce merely expired). The retry has a new
    branch and CSeq + 1 (in a dialog, the dialog's next CSeq).

    ``alternates`` are further targets for the same request (RFC 3263 4.3): when the current one
    times out, is unreachable or answers 503, the request goes to the next in a new transaction
    (same CSeq, new branch). ``failure`` says why the last target failed (``"timeout"`` or
    ``"unreachable"``) when ``on_timeout`` is finally called.
    """

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        dest: Address,
        transport: str,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
        dialog: "Dialog | None" = None,
        digest_cache: DigestCache | None = None,
        alternates: Sequence[Target] = (),
    ) -> None:
        self.layer = layer
        self.request = request
        self.dest = dest
        self.transport = transport
        self.on_response = on_response
        self.on_timeout = on_timeout
        self.dialog = dialog
        self.digest_cache = digest_cache
        self.entry: TransactionEntry | None = None
        self.alternates = list(alternates)
        self.failure = "timeout"
        self.answered = False  # any response (even 1xx) came: no failover past this point
        self._challenges = 0
        self._stale_retry_used = False
        self._resent = False

    def start(self, now: float) -> "OutgoingRequest":
        """Send (or re-send) the current request in a new client transaction."""
        self.entry = self.layer.start_client(self.request, self.dest, self.transport, now)
        self.entry.on_deliver = self._delivered
        self.entry.on_timeout = self._timed_out
        if self.alternates:
            # With somewhere else to go, a silent target is left well before Timer B/F (32 s).
            self.layer.timers.set(self, "failover", now + self.layer.config.failover_timeout)
        return self

    def fire(self, name: str, now: float) -> None:
        """Timer callback: the current target stayed silent for ``failover_timeout``."""
        if name == "failover" and not self.answered and self.alternates:
            self._timed_out("failover", now)

    def resend(self, adjust: Callable[[Request], None], now: float) -> bool:
        """Send the request again, changed by ``adjust``, in a new transaction (new branch, next
        CSeq): what a 422 (RFC 4028) asks for. Once per request; False if already used."""
        if self._resent:
            return False
        self._resent = True
        retry = Request(self.request.method, self.request.uri, self.request.headers.copy(),
                        self.request.body)
        adjust(retry)
        self._renumber(retry)
        self.request = retry
        self.start(now)
        return True

    def _timed_out(self, timer: str, now: float) -> None:
        self.failure = "unreachable" if timer == "unreachable" else "timeout"
        if not self.answered and self._fail_over(now, self.failure):
            return
        self.on_timeout(self, now)

    def _delivered(self, response: Request | Response, now: float) -> None:
        assert isinstance(response, Response)
        if response.status == 503 and not self.answered and self._fail_over(now, "503"):
            return
        self.answered = True
        self.layer.timers.cancel(self, "failover")
        if response.status in (401, 407) and self._retry_with_credentials(response, now):
            return
        self.on_response(self, response, now)

    def _fail_over(self, now: float, why: str) -> bool:
        """Send the request to the next target, if there is one (RFC 3263 4.3)."""
        if not self.alternates:
            return False
        target = self.alternates.pop(0)
        self.layer.timers.cancel(self, "failover")
        logger.info("%s to %s:%d failed (%s): trying %s:%d/%s", self.request.method, *self.dest,
                    why, target.host, target.port, target.transport)
        if self.entry is not None and why != "503":
            self.layer.forget(self.entry)  # a 503's transaction stays to ACK its retransmissions
        retry = Request(self.request.method, self.request.uri, self.request.headers.copy(),
                        self.request.body)
        top = retry.vias[0]
        top.params["branch"] = new_branch()
        top.transport = target.transport.upper()
        retry.headers = replace_top_via(retry.headers, str(top))
        self.request = retry
        self.dest, self.transport = target.address, target.transport
        self.start(now)
        return True

    def _retry_with_credentials(self, response: Response, now: float) -> bool:
        cfg = self.layer.config
        if cfg.password is None:
            return False
        if self._challenges > 0:
            if self._stale_retry_used or not self._any_stale(response):
                return False
            self._stale_retry_used = True
        answered = self._authorization(response)
        if answered is None:
            return False
        authorization, challenge, cnonce = answered
        self._challenges += 1
        header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        if self.digest_cache is not None:
            self.digest_cache.remember(challenge, header, cnonce)
        retry = Request(self.request.method, self.request.uri, self.request.headers.copy(),
                        self.request.body)
        retry.headers.remove(header)
        retry.headers.add(header, authorization)
        self._renumber(retry)
        self.request = retry
        self.start(now)
        return True

    def _challenge_values(self, response: Response) -> list[str]:
        wanted = "www-authenticate" if response.status == 401 else "proxy-authenticate"
        # items() keeps each header line whole: a Digest challenge is itself a comma list.
        return [value for name, value in response.headers.items() if name.lower() == wanted]

    def _any_stale(self, response: Response) -> bool:
        for value in self._challenge_values(response):
            try:
                if getattr(Challenge.parse(value), "stale", False):
                    return True
            except ValueError:
                continue
        return False

    def _authorization(self, response: Response) -> tuple[str, Challenge, str | None] | None:
        """(header value, the challenge it answers, its cnonce) for the first usable challenge."""
        cfg = self.layer.config
        for value in self._challenge_values(response):
            try:
                challenge = Challenge.parse(value)
                # Only qop and the -sess algorithms use a cnonce; some servers refuse a stray one.
                uses_cnonce = bool(challenge.qop) or challenge.algorithm.endswith("-sess")
                cnonce = secrets.token_hex(8) if uses_cnonce else None
                authorization = build_authorization(
                    challenge, self.request.method, self.request.uri,
                    cfg.auth_username or cfg.username, cfg.password or "", body=self.request.body,
                    cnonce=cnonce,
                )
                return authorization, challenge, cnonce
            except (ValueError, AuthenticationError) as exc:  # e.g. an unknown algorithm: next one
                logger.debug("challenge %r not usable: %s", value, exc)
        logger.info("no usable challenge in %d response", response.status)
        return None

    def _renumber(self, request: Request) -> None:
        number, method = request.cseq
        if self.dialog is not None:
            self.dialog.local_seq += 1
            number = self.dialog.local_seq
        else:
            number += 1
        request.headers.set("CSeq", f"{number} {method}")
        top = request.vias[0]
        top.params["branch"] = new_branch()
        request.headers = replace_top_via(request.headers, str(top))
