"""Network impairment for tests: a seeded, loss-injecting UDP relay for SIP and its media.

The machine's kernel has no ``sch_netem`` (``tc qdisc add ... netem`` fails with "qdisc kind is
unknown", checked inside a fresh ``ip netns``), and ``lo`` is shared with other test sessions, so
loss is injected in user space instead: :class:`LossySipRelay` sits between a SIP peer and the
system under test, drops a seeded fraction of datagrams in each direction and rewrites the
``m=audio`` ports of SDP bodies so that RTP (and RFC 4733 DTMF) crosses a lossy relay too.

Every relay socket has one *target*; a datagram from anyone else goes to the target and makes
its sender the *client*, a datagram from the target goes back to the latest client. That is
enough for symmetric RTP and for a UAC that sends every request to one address (SIPp).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Address = tuple[str, int]
_MEDIA_PORT = re.compile(rb"^(m=audio )(\d+)", re.MULTILINE)
# The sent-by of the first Via, unless it already asks for rport (RFC 3581).
_TOP_VIA = re.compile(rb"^((?:Via|v)[ \t]*:[ \t]*SIP/2\.0/UDP[ \t]+[^;,\r\n]+)(?![^\r\n]*rport)",
                      re.MULTILINE | re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"^(Content-Length|l)[ \t]*:[ \t]*\d+", re.MULTILINE | re.IGNORECASE)


@dataclass
class RelayStats:
    """Datagrams seen and dropped, per direction (``up`` = towards the target)."""

    up: int = 0
    down: int = 0
    dropped_up: int = 0
    dropped_down: int = 0
    media_relays: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class _RelaySocket(asyncio.DatagramProtocol):
    """One relayed UDP port: client <-> target, with loss and an optional rewrite."""

    def __init__(self, relay: "LossySipRelay", target: Address, kind: str) -> None:
        self.relay = relay
        self.target = target
        self.kind = kind
        self.client: Address | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        upward = addr != self.target
        if upward:
            self.client = addr
            destination: Address | None = self.target
        else:
            destination = self.client
        stats = self.relay.stats
        if upward:
            stats.up += 1
        else:
            stats.down += 1
        if destination is None or self.transport is None:
            return
        if self.relay.rng.random() < self.relay.loss:
            if upward:
                stats.dropped_up += 1
            else:
                stats.dropped_down += 1
            stats.by_kind[self.kind] = stats.by_kind.get(self.kind, 0) + 1
            return
        if self.kind == "sip" and upward and not data.startswith(b"SIP/2.0"):
            # Without rport the UAS would answer the Via's sent-by port directly (RFC 3261
            # §18.2.2), bypassing the relay and its loss on the way back.
            data = _TOP_VIA.sub(rb"\1;rport", data, count=1)
        if self.kind == "sip" and b"\nm=audio " in data:
            # Opening a media relay is asynchronous: send once the SDP points at it.
            asyncio.get_running_loop().create_task(self._send_rewritten(data, destination))
            return
        self.transport.sendto(data, destination)

    async def _send_rewritten(self, data: bytes, destination: Address) -> None:
        data = await self.relay.rewrite_sdp(data)
        if self.transport is not None:
            self.transport.sendto(data, destination)


class LossySipRelay:
    """A SIP relay on ``127.0.0.1:<port>`` towards ``target`` that loses ``loss`` of all
    datagrams (SIP and RTP) in each direction, reproducibly for a given ``seed``.

    Runs its own event loop in a thread so that it can serve subprocess peers (SIPp) while the
    test blocks; use it as a context manager.
    """

    def __init__(self, target: Address, loss: float = 0.05, seed: int = 4733) -> None:
        self.target = target
        self.loss = loss
        self.rng = random.Random(seed)
        self.stats = RelayStats()
        self.port = 0
        self._media: dict[int, _RelaySocket] = {}  # real media port -> relay socket in front of it
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lossy-relay", daemon=True)
        self._sockets: list[asyncio.DatagramTransport] = []

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.port)

    def start(self) -> "LossySipRelay":
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(self.target, "sip"), self._loop)
        self.port = future.result(5).transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        return self

    async def _open(self, target: Address, kind: str) -> _RelaySocket:
        transport, protocol = await self._loop.create_datagram_endpoint(
            lambda: _RelaySocket(self, target, kind), local_addr=("127.0.0.1", 0))
        self._sockets.append(transport)
        return protocol

    async def rewrite_sdp(self, message: bytes) -> bytes:
        """Point every ``m=audio`` port at a lossy media relay in front of the real port, and fix
        Content-Length (runs on the relay's loop)."""
        head, separator, body = message.partition(b"\r\n\r\n")
        if not separator:
            return message
        for match in _MEDIA_PORT.finditer(body):
            real = int(match.group(2))
            if real not in self._media:
                self._media[real] = await self._open(("127.0.0.1", real), "rtp")
                self.stats.media_relays += 1

        def replace(match: re.Match[bytes]) -> bytes:
            relay = self._media[int(match.group(2))]
            port = relay.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
            return match.group(1) + str(port).encode()

        body = _MEDIA_PORT.sub(replace, body)
        head = _CONTENT_LENGTH.sub(lambda m: m.group(1) + b": " + str(len(body)).encode(), head)
        return head + separator + body

    def close(self) -> None:
        def shut() -> None:
            for transport in self._sockets:
                transport.close()
            self._loop.stop()

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(shut)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> "LossySipRelay":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

