"""Per-call RTP/RTCP sockets, and the one reader that takes every call's RTP off the wire.

:class:`RtpSocket` is a call's RTP socket with its RTCP companion on the port above. Received
datagrams go to the call's :class:`~simplesip.core.rtpsession.RtpSession` with their arrival time.

:class:`RtpReader` reads the RTP sockets of all calls. With one event-loop reader per socket,
asyncio goes through its selector, a callback handle, the transport and the protocol for every
packet: at hundreds of calls, 50 packets a second each, that bookkeeping costs about as much as
the media work itself (docs/performance.md, "Receiving: one reader for every call"). The reader
keeps the sockets in an epoll set of its own, and the loop watches that set's one descriptor: one
callback per loop pass reads every ready socket in a plain loop and stamps the packets with that
pass's time, the resolution asyncio gives as well. Where epoll is missing (not Linux), each
socket keeps its own loop reader. With the compiled media path (:mod:`simplesip.core.native`) the
pass is one call into the extension: ``recvmmsg`` on every ready socket, and the latched stream's
plain audio straight into its session's jitter buffer; everything else (RTCP, DTMF, a packet to
latch) comes back to :meth:`RtpSocket._deliver` in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import select
import socket
from typing import TYPE_CHECKING, Any

from simplesip.core import native as _native

if TYPE_CHECKING:
    from simplesip.core.rtpsession import RtpSession

log = logging.getLogger(__name__)

__all__ = ["RtpReader", "RtpSocket", "open_rtp_socket"]

#: Largest datagram read (G.711 at 40 ms is 332 bytes; anything larger is not ours to play).
_MAX_DATAGRAM = 4096
#: Rounds of :meth:`RtpReader.drain` at most: a stall's backlog is one datagram per socket per
#: 20 ms tick, and the media clock catches up at most 100 ticks (2 s).
_MAX_DRAIN_ROUNDS = 200
#: Datagrams the compiled reader takes from one ready socket per pass (one ``recvmmsg``).
_RECV_BATCH = 8


class RtpSocket(asyncio.DatagramProtocol):
    """One call's RTP socket (and its RTCP companion on port + 1): datagrams go to the call's
    RtpSession with their arrival time; the session tells RTP from RTCP itself.

    RTP arrives through :class:`RtpReader` when the socket was opened with one, else through the
    loop (:meth:`datagram_received`). :meth:`drain` reads what is waiting right now, which the
    clock needs after a stall.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._session: RtpSession | None = None  # set once the media is negotiated
        self._core: Any = None  # the session's compiled core, when it has one (sending from C)
        self._time = loop.time
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        self._rtp_sock: socket.socket | None = None
        self._reader: RtpReader | None = None
        self._reader_fd = -1  # the descriptor the reader knows this socket by

    @property
    def session(self) -> "RtpSession | None":
        """The call's RTP session (None until the media is negotiated). A compiled session's core
        is given this socket's descriptor, so that the media tick sends its packets from C."""
        return self._session

    @session.setter
    def session(self, session: "RtpSession | None") -> None:
        self._unbind_core()
        self._session = session
        self._bind_core()

    def _bind_core(self) -> None:
        core = getattr(self._session, "_core", None)
        transport, sock = self.transport, self._rtp_sock
        if core is None or sock is None or transport is None or transport.is_closing():
            return
        self._core = core
        core.send_fd = sock.fileno()
        core.send_blocked = transport.get_write_buffer_size() > 0

    def _unbind_core(self) -> None:
        """Take the descriptor back from the core: before the socket closes (its number could be
        reused by another socket) or the session changes."""
        if self._core is not None:
            self._core.send_fd = -1
            self._core = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._unbind_core()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The RTCP socket shares this protocol and connects second: RTP must keep going out of the
        # RTP port, or a peer that latches (symmetric RTP, RFC 4961) answers to the RTCP port.
        if self.transport is None:
            self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._deliver(data, addr, self._time())

    def _deliver(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        session = self.session
        if session is None:
            return  # media arrived before our answer was processed: nothing to play it into
        try:
            session.receive(data, addr, now)
        except Exception:  # a malformed packet is the peer's problem, not the call's end
            log.debug("dropped RTP packet from %s", addr, exc_info=True)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error: %s", exc)

    @property
    def reader(self) -> "RtpReader | None":
        """The :class:`RtpReader` that reads this socket's RTP, None when the loop does."""
        return self._reader

    def drain(self) -> int:
        """Hand every datagram waiting on the RTP socket to the session now; returns how many.

        A loop pass reads one datagram per socket, so after a stall most of what arrived
        meanwhile is still in the kernel when the clock starts catching up: the clock calls this
        first (for a socket read by an :class:`RtpReader`, :meth:`RtpReader.drain` does it for
        every socket at once, far cheaper). Arrival times are the time of the read, as for
        datagrams read in a loop pass: the session's latching rules compare arrival times, which
        must never run backwards from one packet to the next.
        """
        session, transport, sock = self.session, self.transport, self._rtp_sock
        if session is None or sock is None or transport is None or transport.is_closing():
            return 0
        now = self._time()
        count = 0
        while True:
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return count
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                self.error_received(exc)
                return count
            count += 1
            self._deliver(data, addr, now)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        # Measured (bench/media_bench.py --send-packets): the socket's own sendto would save
        # 5-8 % of a send; the system call is the cost, not the transport's bookkeeping. Not
        # worth a second send path (full kernel buffers, ordering with the transport's queue).
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, addr)
            core = self._core
            if core is not None:  # C sends again once the transport's queue is empty (ordering)
                core.send_blocked = transport.get_write_buffer_size() > 0

    def send_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.rtcp_transport is not None and not self.rtcp_transport.is_closing():
            self.rtcp_transport.sendto(data, addr)

    def close(self) -> None:
        self._unbind_core()
        if self._reader is not None:
            self._reader.remove(self)  # before the socket closes and its number is reused
        for transport in (self.transport, self.rtcp_transport):
            if transport is not None:
                transport.close()


class RtpReader:
    """Reads the RTP sockets of every call of an endpoint (see the module docstring).

    Level-triggered: a pass reads one datagram from each ready socket; a socket with more waiting
    stays ready, so the loop calls again on its next pass, after other work had its turn.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._sockets: dict[int, RtpSocket] = {}
        loop.add_reader(self._epoll.fileno(), self._read_ready)

    @classmethod
    def create(cls, loop: asyncio.AbstractEventLoop) -> "RtpReader | None":
        """A reader on ``loop``, or None where epoll is not available."""
        return cls(loop) if hasattr(select, "epoll") else None

    def __len__(self) -> int:
        return len(self._sockets)

    def add(self, rtp_socket: RtpSocket) -> None:
        """Take over reading ``rtp_socket``'s RTP port from the loop."""
        sock, transport = rtp_socket._rtp_sock, rtp_socket.transport
        assert sock is not None and transport is not None
        transport.pause_reading()  # the loop stops reading it; RTCP stays with the loop
        fd = sock.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._sockets[fd] = rtp_socket
        rtp_socket._reader, rtp_socket._reader_fd = self, fd

    def remove(self, rtp_socket: RtpSocket) -> None:
        """Stop reading ``rtp_socket`` (before it closes: its descriptor number gets reused)."""
        fd = rtp_socket._reader_fd
        rtp_socket._reader, rtp_socket._reader_fd = None, -1
        if self._sockets.get(fd) is not rtp_socket:
            return  # not ours, or its number already belongs to a newer socket
        del self._sockets[fd]
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):  # closed already: the kernel dropped it from the set
            pass

    def close(self) -> None:
        """Stop reading (the sockets themselves belong to their calls)."""
        if self._epoll.closed:
            return
        self._loop.remove_reader(self._epoll.fileno())
        for rtp_socket in list(self._sockets.values()):
            rtp_socket._reader, rtp_socket._reader_fd = None, -1
        self._sockets.clear()
        self._epoll.close()

    def drain(self) -> int:
        """Hand every datagram waiting on any of the sockets to its session now; returns how many.

        What :meth:`RtpSocket.drain` does for one socket, for all of them: rounds of one datagram
        per ready socket until none is ready. The epoll set names the sockets with something
        waiting, so the sockets with nothing to read cost nothing: reading each socket until it
        has nothing left costs a failed read (an exception) per socket, hundreds per catch-up
        tick. Arrival times are the drain's time (see :meth:`RtpSocket.drain`)."""
        now = self._loop.time()
        total = 0
        for _ in range(_MAX_DRAIN_ROUNDS):  # datagrams still arriving cannot keep it going
            count = self._read_pass(now)
            if not count:
                break
            total += count
        return total

    def _read_ready(self) -> None:
        self._read_pass(self._loop.time())

    def _read_pass(self, now: float) -> int:
        """One datagram from every socket that has one (up to :data:`_RECV_BATCH` on the
        compiled path); returns how many were read."""
        sockets = self._sockets
        if _native.ENABLED:
            count, rest = _native.native.read_pass(self._epoll.fileno(), sockets, now, _RECV_BATCH)
            for rtp_socket, data, addr in rest:
                if data is None:  # addr is the errno of a failed read (an ICMP error)
                    rtp_socket.error_received(OSError(addr, os.strerror(addr)))
                else:
                    rtp_socket._deliver(data, addr, now)
            return count
        count = 0
        for fd, _events in self._epoll.poll(0):
            rtp_socket = sockets.get(fd)
            if rtp_socket is None:
                continue
            try:
                data, addr = rtp_socket._rtp_sock.recvfrom(_MAX_DATAGRAM)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                rtp_socket.error_received(exc)
                continue
            count += 1
            rtp_socket._deliver(data, addr, now)
        return count


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            # One family per call (the remote c= line's): an RTP socket on "::" never takes
            # IPv4, so no IPv4-mapped address can latch a stream or be sent to.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def open_rtp_socket(host: str, port_range: tuple[int, int],
                          reader: RtpReader | None = None) -> tuple[RtpSocket, int]:
    """Bind an even RTP port from ``port_range`` and the RTCP port above it (RFC 3550 §11);
    with ``reader``, its RTP is read by that reader instead of the loop.

    The search starts at a random even port so that endpoints in parallel processes rarely race
    for the same one.
    """
    loop = asyncio.get_running_loop()
    low, high = port_range
    low += low % 2
    count = max(1, (high - low) // 2)
    first = random.randrange(count)
    for i in range(count):
        port = low + 2 * ((first + i) % count)
        try:
            rtp_sock = _bound_socket(host, port)
        except OSError:
            continue
        try:
            rtcp_sock = _bound_socket(host, port + 1)
        except OSError:
            rtp_sock.close()
            continue
        protocol = RtpSocket(loop)
        await loop.create_datagram_endpoint(lambda p=protocol: p, sock=rtp_sock)
        rtcp, _ = await loop.create_datagram_endpoint(lambda p=protocol: p, sock=rtcp_sock)
        protocol.rtcp_transport = rtcp  # type: ignore[assignment]
        protocol._rtp_sock = rtp_sock
        protocol._bind_core()
        if reader is not None:
            reader.add(protocol)
        return protocol, port
    raise OSError(f"no free RTP/RTCP port pair in {port_range[0]}-{port_range[1]}")
