"""An in-memory SIP network for sans-IO tests: user agent cores wired by address, one fake clock.

``net.pump()`` delivers everything queued (and whatever the answers queue) at the current time;
``net.advance(seconds)`` walks the clock from deadline to deadline, firing each core's timers and
pumping in between, so RFC 3261 timers run in microseconds. ``drop`` and ``delay`` rules act on
datagrams matching a predicate; datagrams to an address with no core are kept in ``net.unrouted``.
Every datagram that travels is logged for counting retransmissions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from simplesip.core.config import UAConfig
from simplesip.core.events import Event
from simplesip.core.useragent import UserAgentCore
from simplesip.wire.message import Request, Response, parse_message

Address = tuple[str, int]
Match = Callable[["Datagram"], bool]


@dataclass
class Datagram:
    """One message on the wire."""

    data: bytes
    src: Address
    dst: Address
    transport: str
    sent_at: float

    @property
    def message(self) -> Request | Response:
        return parse_message(self.data)

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode()

    def is_request(self, method: str) -> bool:
        return self.first_line.startswith(method + " ")

    def is_response(self, status: int, method: str | None = None) -> bool:
        if not self.first_line.startswith(f"SIP/2.0 {status} "):
            return False
        return method is None or self.message.cseq[1] == method


#: A minimal SDP offer for calls in memory, and the answer to it (another port).
OFFER = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = OFFER.replace(b"4000", b"4002")


def sip(text: str, body: bytes = b"") -> bytes:
    """A hand-written message: lines joined with CRLF, Content-Length filled in."""
    head = "\r\n".join(line.strip() for line in text.strip().splitlines())
    return f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def request(method: str) -> Match:
    """Match requests with ``method``."""
    return lambda d: d.is_request(method)


def response(status: int, method: str | None = None) -> Match:
    """Match responses with ``status`` (to ``method``)."""
    return lambda d: d.is_response(status, method)


@dataclass
class _Rule:
    match: Match
    remaining: int
    delay: float | None = None  # None: drop


@dataclass
class Network:
    """Cores keyed by their (local_host, local_port), and the clock they share."""

    now: float = 1000.0
    cores: dict[Address, UserAgentCore] = field(default_factory=dict)
    log: list[Datagram] = field(default_factory=list)
    dropped: list[Datagram] = field(default_factory=list)
    unrouted: list[Datagram] = field(default_factory=list)
    _rules: list[_Rule] = field(default_factory=list)
    _in_flight: list[tuple[float, int, Datagram]] = field(default_factory=list)
    _events: dict[Address, list[Event]] = field(default_factory=dict)
    _seq: int = 0
    peers: dict[Address, Callable[[Datagram], list[bytes]]] = field(default_factory=dict)

    def add(self, config: UAConfig) -> UserAgentCore:
        """Create a core and attach it at its configured address."""
        core = UserAgentCore(config)
        address = (config.local_host, config.local_port)
        self.cores[address] = core
        self._events[address] = []
        return core

    def attach(self, address: Address, handler: Callable[[Datagram], list[bytes]]) -> None:
        """A scripted peer at ``address``: it gets each datagram and returns replies to its source."""
        self.peers[address] = handler

    def drop(self, match: Match, count: int = 1) -> None:
        """Lose the next ``count`` datagrams matching ``match``."""
        self._rules.append(_Rule(match, count))

    def delay(self, match: Match, seconds: float, count: int = 1) -> None:
        """Hold the next ``count`` datagrams matching ``match`` for ``seconds``."""
        self._rules.append(_Rule(match, count, seconds))

    def inject(self, data: bytes, src: Address, dst: Address, transport: str = "udp") -> None:
        """Put hand-built bytes on the wire (from a peer that is not a core) and pump."""
        self._route(Datagram(data, src, dst, transport, self.now))
        self.pump()

    # --- moving datagrams --------------------------------------------------------------------

    def _collect(self) -> list[Datagram]:
        out = []
        for address, core in self.cores.items():
            for data, dst, transport in core.datagrams_to_send():
                out.append(Datagram(data, address, dst, transport, self.now))
        return out

    def _route(self, datagram: Datagram) -> None:
        for rule in self._rules:
            if rule.remaining > 0 and rule.match(datagram):
                rule.remaining -= 1
                if rule.delay is None:
                    self.dropped.append(datagram)
                    return
                self._seq += 1
                self._in_flight.append((self.now + rule.delay, self._seq, datagram))
                return
        self._deliver(datagram)

    def _deliver(self, datagram: Datagram) -> None:
        self.log.append(datagram)
        handler = self.peers.get(datagram.dst)
        if handler is not None:
            for reply in handler(datagram):
                self._route(Datagram(reply, datagram.dst, datagram.src, datagram.transport, self.now))
            return
        core = self.cores.get(datagram.dst)
        if core is None:
            self.unrouted.append(datagram)
            return
        core.receive(datagram.data, datagram.src, self.now, datagram.transport)

    def pump(self) -> None:
        """Deliver until nothing is left to send right now."""
        for _ in range(10_000):
            due = [item for item in self._in_flight if item[0] <= self.now]
            for item in sorted(due):
                self._in_flight.remove(item)
                self._deliver(item[2])
            batch = self._collect()
            if not batch and not due:
                break
            for datagram in batch:
                self._route(datagram)
        self._drain_events()

    def _drain_events(self) -> None:
        for address, core in self.cores.items():
            while (event := core.next_event()) is not None:
                self._events[address].append(event)

    def next_deadline(self) -> float | None:
        deadlines = [t for core in self.cores.values() if (t := core.get_timer()) is not None]
        deadlines += [item[0] for item in self._in_flight]
        return min(deadlines) if deadlines else None

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, firing every timer and delayed datagram on the way."""
        end = self.now + seconds
        self.pump()
        while (deadline := self.next_deadline()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            for core in self.cores.values():
                core.handle_timer(self.now)
            self.pump()
        self.now = end
        self.pump()

    def settle(self, limit: float = 600.0) -> None:
        """Run until no timer is left (or ``limit`` seconds pass)."""
        self.advance(limit)

    # --- inspecting --------------------------------------------------------------------------

    def events(self, core: UserAgentCore) -> list[Event]:
        """Events ``core`` produced since the last call (in order)."""
        self._drain_events()
        address = (core.config.local_host, core.config.local_port)
        events, self._events[address] = self._events[address], []
        return events

    def sent(self, match: Match, src: UserAgentCore | None = None) -> list[Datagram]:
        """Datagrams that reached the wire (after drops) matching ``match``, optionally from ``src``."""
        found = [d for d in self.log if match(d)]
        if src is not None:
            address = (src.config.local_host, src.config.local_port)
            found = [d for d in found if d.src == address]
        return found


ALICE = ("127.0.0.1", 15061)
BOB = ("127.0.0.1", 15062)
PEER = ("127.0.0.1", 15090)  # a hand-driven peer on the same host as the server, other port
SERVER = ("127.0.0.1", 15060)


def served_ua(net: Network, **extra: object) -> UserAgentCore:
    """Alice, whose registrar/proxy is SERVER and whose domain is the server's host."""
    return net.add(UAConfig(local_port=ALICE[1], username="alice", password="alicepw",
                            domain=SERVER[0], server=SERVER, **extra))
