"""The transaction layer under the user agent core (private to :mod:`simplesip.core.useragent`).

It owns the transactions, carries out the effects they return (send, timers, deliver, terminate),
and keeps one table of deadlines for everything time-driven in the core. Requests the user agent
sends (with digest retries, RFC 3263 failover and 422 retries) are
:class:`~simplesip.core.outgoing_request.OutgoingRequest`, in their own module.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import TYPE_CHECKING, Callable, Protocol

from simplesip.core.config import Address, UAConfig
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
from simplesip.wire.message import Request, Response

if TYPE_CHECKING:
    pass

__all__ = [
    "TimerOwner",
    "TimerTable",
    "TransactionEntry",
    "TransactionLayer",
]

logger = logging.getLogger(__name__)

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
