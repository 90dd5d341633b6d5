"""asyncio SIP transports: one UDP socket and one TCP listener on the same port (RFC 3261 §18),
and a TLS listener on its own port (§26.2, 5061 by default).

The transport layer moves bytes and nothing else: every datagram (UDP) or framed message (TCP,
TLS) goes to one callback as ``(data, source_addr, "udp" | "tcp" | "tls")``, and
:meth:`SipTransport.send` writes bytes to an address over the transport the user agent core chose.
The core fills ``received``/``rport`` (RFC 3581) from the source address handed to it here.

TLS: messages are framed as on TCP, inside a TLS connection. The listener accepts a plain TCP
connection and then runs the server handshake itself (``loop.start_tls``), so that a handshake
that fails (plain TCP bytes sent to the TLS port, a client certificate refused) is logged and
counted (``tls_handshake_failures``) and only that connection closes. Outbound connections verify
the server's certificate and its name (see :mod:`simplesip.aio.tls`): the name is the one set
with :meth:`SipTransport.set_tls_server_name` for that address, else the address itself. A
handshake that fails is reported to ``on_tls_failure(addr, reason)`` (and then, like any
connection failure, to ``on_unreachable``), so a call fails at once with the reason.

TCP: a connection is kept per remote address, whichever side opened it, so that responses go back
over the connection their request came on (§18.2.2) and our own requests reuse a connection to the
same destination. Messages on a stream are framed by Content-Length. Connections idle for longer
than ``tcp_idle_timeout`` are closed, and so are connections where a message started arriving more
than ``tcp_message_timeout`` ago and is still incomplete: a peer trickling one byte at a time
(slowloris) is never idle, so the idle timer alone would keep it forever.

Dual stack: on ``::`` every listener (UDP, TCP, TLS) takes IPv4 as well as IPv6 (``IPV6_V6ONLY``
off). The kernel names IPv4 peers of such a socket by IPv4-mapped addresses (``::ffff:a.b.c.d``);
every address is unmapped here, before the core, connections or logs see it, and mapped again for
a UDP ``sendto``, so the layers above only ever see plain IPv4 and IPv6 addresses. On any other
IPv6 address a listener is IPv6 only.

ICMP errors: the UDP socket has ``IP_RECVERR`` set, so a "port unreachable" for a datagram we
sent is reported with the address it was sent to (``on_unreachable``), letting a REGISTER to a
dead server fail at once instead of after Timer F (32 s).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import sys
from typing import Callable

from simplesip.aio.addresses import is_dual_stack, peer_address, socket_address
from simplesip.aio.stream import MAX_MESSAGE_SIZE, StreamConnection, frame_stream
from simplesip.aio.tls import client_context, describe_tls_error
from simplesip.wire.grammar import format_host

log = logging.getLogger(__name__)

__all__ = ["MAX_MESSAGE_SIZE", "SipTransport", "frame_stream"]

_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # Linux values; Python 3.11 does not export them
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)

MessageHandler = Callable[[bytes, tuple[str, int], str], None]
UnreachableHandler = Callable[[tuple[str, int]], None]
TlsFailureHandler = Callable[[tuple[str, int], str], None]
#: Connections are kept per (transport, remote address): "tcp" and "tls" to one address differ.
ConnectionKey = tuple[str, tuple[str, int]]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: "SipTransport"):
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > MAX_MESSAGE_SIZE:
            return
        self.owner.deliver(data, peer_address(addr), "udp")

    def error_received(self, exc: Exception) -> None:
        # With IP_RECVERR the kernel queues the ICMP error with the original destination address.
        self.owner._drain_icmp_errors(exc)


class _TlsAccept(asyncio.Protocol):
    """An accepted TCP connection on the TLS port, until our server handshake is done."""

    def __init__(self, owner: "SipTransport"):
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.owner._accept_tls(transport)  # type: ignore[arg-type]


class SipTransport:
    """UDP and TCP SIP transports sharing one local address, and TLS on ``tls_port``.

    ``on_message(data, addr, transport)`` receives every inbound message; ``on_unreachable(addr)``
    is told when a datagram we sent to ``addr`` bounced (ICMP port/host unreachable) or a
    connection to it failed. With "tls" in ``transports``: ``tls_server_context`` (see
    :func:`simplesip.aio.tls.server_context`) opens the TLS listener; without one we only
    connect out over TLS. ``tls_client_context`` verifies servers (default: the system CAs).
    """

    def __init__(self, host: str, port: int, on_message: MessageHandler, *,
                 transports: tuple[str, ...] = ("udp", "tcp"), tcp_idle_timeout: float = 64.0,
                 tcp_message_timeout: float = 10.0,
                 on_unreachable: UnreachableHandler | None = None,
                 tls_port: int = 5061, tls_server_context: ssl.SSLContext | None = None,
                 tls_client_context: ssl.SSLContext | None = None,
                 tls_handshake_timeout: float = 10.0,
                 on_tls_failure: TlsFailureHandler | None = None):
        unknown = set(transports) - {"udp", "tcp", "tls"}
        if unknown or not transports:
            raise ValueError(f"unsupported transports: {sorted(unknown) or 'none given'}")
        if tls_server_context is not None and "tls" not in transports:
            raise ValueError("a TLS server context needs 'tls' among the transports")
        self.host = host
        self.port = port
        #: Listening on "::" for IPv6 and IPv4 alike (see the module docstring).
        self.dual_stack = is_dual_stack(host)
        self._udp_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.transports = tuple(transports)
        self.tcp_idle_timeout = tcp_idle_timeout
        # A message may take no longer than an idle connection may stay open.
        self.tcp_message_timeout = min(tcp_message_timeout, tcp_idle_timeout)
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        #: CRLF pongs received (RFC 5626 4.4.1): the answers to our keep-alive pings over TCP.
        self.keepalive_pongs = 0
        self.tls_port = tls_port
        self.tls_server_context = tls_server_context
        self.tls_client_context = tls_client_context
        self.tls_handshake_timeout = tls_handshake_timeout
        self.on_tls_failure = on_tls_failure
        #: TLS handshakes that failed, accepted (``inbound``) and opened by us (``outbound``).
        self.tls_handshake_failures = {"inbound": 0, "outbound": 0}
        self._tls_server: asyncio.Server | None = None
        self._tls_names: dict[tuple[str, int], str] = {}
        self._loop: asyncio.AbstractEventLoop  # set by start()
        self._udp_sock: socket.socket | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[ConnectionKey, StreamConnection] = {}
        self._connecting: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None

    @property
    def local_address(self) -> tuple[str, int]:
        """The (host, port) UDP and TCP listen on."""
        return (self.host, self.port)

    @property
    def tls_listening(self) -> bool:
        """Whether the TLS listener is open (its port: :attr:`tls_port`)."""
        return self._tls_server is not None

    async def start(self) -> None:
        """Bind the sockets; with port 0, find one port free for both UDP and TCP."""
        self._loop = asyncio.get_running_loop()
        for _attempt in range(20):
            udp_sock = self._bind_udp() if "udp" in self.transports else None
            port = udp_sock.getsockname()[1] if udp_sock else self.port
            try:
                if "tcp" in self.transports:
                    self._server = await self._listen(lambda: StreamConnection(self), port)
                    port = self._server.sockets[0].getsockname()[1]
            except OSError:
                if udp_sock:
                    udp_sock.close()
                if self.port != 0:
                    raise
                continue  # the ephemeral UDP port was taken for TCP: try another one
            break
        else:
            raise OSError("no port free for both UDP and TCP")
        self.port = port
        if udp_sock is not None:
            self._udp_sock = udp_sock
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), sock=udp_sock)
            self._udp = transport  # type: ignore[assignment]
        if self.tls_server_context is not None:
            await self._start_tls_listener()
        if self._server is not None or "tls" in self.transports:
            self._sweeper = self._loop.create_task(self._sweep_idle_connections())
        log.info("SIP transports %s listening on %s", "/".join(t for t in self.transports if t != "tls"),
                 format_host(self.host, port))

    async def _listen(self, factory: Callable[[], asyncio.Protocol], port: int) -> asyncio.Server:
        """A TCP listener on our host and ``port``; on ``::`` one dual-stack socket (asyncio's
        own would be IPv6 only)."""
        if not self.dual_stack:
            return await self._loop.create_server(factory, self.host, port, reuse_address=True)
        sock = socket.create_server((self.host.strip("[]"), port), family=socket.AF_INET6,
                                    dualstack_ipv6=True, backlog=128)
        sock.setblocking(False)
        try:
            return await self._loop.create_server(factory, sock=sock)
        except BaseException:
            sock.close()
            raise

    async def _start_tls_listener(self) -> None:
        try:
            self._tls_server = await self._listen(lambda: _TlsAccept(self), self.tls_port)
        except OSError:
            await self.close()
            raise
        self.tls_port = self._tls_server.sockets[0].getsockname()[1]
        log.info("SIP over TLS listening on %s", format_host(self.host, self.tls_port))

    def _accept_tls(self, raw: asyncio.Transport) -> None:
        raw.pause_reading()  # nothing is read before the handshake starts
        peer = raw.get_extra_info("peername")
        task = self._loop.create_task(self._server_handshake(raw, peer_address(peer)))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _server_handshake(self, raw: asyncio.Transport, remote: tuple[str, int]) -> None:
        # The remote is known before the handshake: data decrypted together with its last
        # flight is delivered before start_tls returns.
        conn = StreamConnection(self, remote, "tls")
        try:
            secure = await self._loop.start_tls(raw, conn, self.tls_server_context, server_side=True,
                                                ssl_handshake_timeout=self.tls_handshake_timeout)
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            self.tls_handshake_failures["inbound"] += 1
            log.warning("TLS handshake with %s failed, connection closed: %s",
                        format_host(*remote), describe_tls_error(exc))
            raw.close()
            return
        conn.connection_made(secure)

    def _bind_udp(self) -> socket.socket:
        v6 = ":" in self.host
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if sys.platform.startswith("linux"):
                if v6:
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
            if v6:  # "::": IPv6 and IPv4 (dual stack); another IPv6 address: IPv6 only
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if self.dual_stack else 1)
            sock.bind((self.host, self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def set_tls_contexts(self, server: ssl.SSLContext | None = None,
                         client: ssl.SSLContext | None = None) -> None:
        """Contexts for the TLS connections made from now on (a renewed certificate): the
        listener's next handshakes use ``server``, our next outbound connections ``client``
        (None: keep the current one). Connections already open keep theirs."""
        if server is not None:
            self.tls_server_context = server
        if client is not None:
            self.tls_client_context = client

    def set_tls_server_name(self, addr: tuple[str, int], name: str) -> None:
        """The name the certificate of the TLS server at ``addr`` must carry (and the SNI we
        send): the host name the address was looked up from (RFC 5922 7.2). Unset: the host
        part of ``addr`` itself (an IP literal, or a name when ``addr`` holds one)."""
        self._tls_names[(addr[0], int(addr[1]))] = name

    def send(self, data: bytes, addr: tuple[str, int], transport: str = "udp") -> None:
        """Send one message; over TCP or TLS, reuse the connection to ``addr`` or open one."""
        if transport in ("tcp", "tls"):
            self._send_stream(data, (addr[0], int(addr[1])), transport)
        elif self._udp is not None:
            self._udp.sendto(data, socket_address(addr[0], int(addr[1]), self._udp_family))
        else:
            log.warning("no UDP transport: dropped %d octets to %s", len(data), addr)

    def _send_stream(self, data: bytes, addr: tuple[str, int], kind: str) -> None:
        conn = self._connections.get((kind, addr))
        if conn is None or conn.closed:
            conn = StreamConnection(self, addr, kind)
            conn.outbound = True
            self._connections[(kind, addr)] = conn
            task = self._loop.create_task(self._connect(conn, addr))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)
        conn.write(data)

    async def _connect(self, conn: StreamConnection, addr: tuple[str, int]) -> None:
        tls: dict = {}
        if conn.kind == "tls":
            if self.tls_client_context is None:
                self.tls_client_context = client_context()
            tls = {"ssl": self.tls_client_context, "ssl_handshake_timeout": self.tls_handshake_timeout,
                   "server_hostname": self._tls_names.get(addr, addr[0].strip("[]"))}
        try:
            await self._loop.create_connection(lambda: conn, addr[0], addr[1], **tls)
        except (OSError, asyncio.TimeoutError) as exc:
            conn.closed = True
            if self._connections.get((conn.kind, addr)) is conn:
                del self._connections[(conn.kind, addr)]
            # Refused or unreachable is a TCP failure; what breaks once connected is the handshake.
            if conn.kind == "tls" and isinstance(exc, (ssl.SSLError, ConnectionResetError,
                                                       ConnectionAbortedError, asyncio.TimeoutError)):
                self.tls_failed(addr, exc)
                return
            log.info("%s connection to %s failed: %s", conn.kind.upper(), format_host(*addr), exc)
            if self.on_unreachable is not None:
                self.on_unreachable(addr)

    # --- what our StreamConnections report (simplesip.aio.stream.StreamOwner) ---------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the transport runs in (from start())."""
        return self._loop

    def connection_opened(self, conn: StreamConnection) -> None:
        """``conn`` is established: later messages to its remote address go over it."""
        assert conn.remote is not None
        self._connections[(conn.kind, conn.remote)] = conn

    def connection_closed(self, conn: StreamConnection) -> None:
        """``conn`` is gone: forget it (unless a newer connection took its place)."""
        key = (conn.kind, conn.remote) if conn.remote is not None else None
        if key is not None and self._connections.get(key) is conn:
            del self._connections[key]

    def pong_received(self) -> None:
        """A CRLF pong, the answer to one of our keep-alive pings."""
        self.keepalive_pongs += 1

    def tls_failed(self, addr: tuple[str, int], exc: BaseException) -> None:
        """A TLS connection we opened failed its handshake: count, log, tell the owner why, then
        that ``addr`` cannot be reached (what waited there fails over or fails)."""
        reason = describe_tls_error(exc)
        self.tls_handshake_failures["outbound"] += 1
        log.warning("TLS connection to %s failed: %s", format_host(*addr), reason)
        if self.on_tls_failure is not None:
            self.on_tls_failure(addr, reason)
        if self.on_unreachable is not None:
            self.on_unreachable(addr)

    def deliver(self, data: bytes, addr: tuple[str, int], transport: str) -> None:
        """Hand one received message to ``on_message`` (an exception there is logged, not raised)."""
        try:
            self.on_message(data, addr, transport)
        except Exception:  # one bad message must never stop the receive loop
            log.exception("error handling a %s message from %s", transport, addr)

    def _drain_icmp_errors(self, exc: Exception) -> None:
        sock = self._udp_sock
        if sock is None or not isinstance(exc, OSError):
            return
        while True:
            try:
                _data, _anc, _flags, addr = sock.recvmsg(MAX_MESSAGE_SIZE, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError, OSError):
                return
            log.info("ICMP error for datagrams to %s: %s", addr, exc)
            if self.on_unreachable is not None and addr:
                self.on_unreachable(peer_address(addr))

    async def _sweep_idle_connections(self) -> None:
        interval = max(0.05, min(self.tcp_message_timeout / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            self.close_stale_connections(self._loop.time())

    def close_stale_connections(self, now: float) -> int:
        """Close connections idle for ``tcp_idle_timeout`` or stuck in one message for
        ``tcp_message_timeout``; return how many were closed (run periodically by start())."""
        idle_limit = now - self.tcp_idle_timeout
        message_limit = now - self.tcp_message_timeout
        closed = 0
        for conn in list(self._connections.values()):
            if conn.closed:
                continue
            if conn.last_activity < idle_limit:
                log.debug("closing idle %s connection to %s", conn.kind.upper(), conn.remote)
            elif conn.message_started is not None and conn.message_started < message_limit:
                log.info("closing %s connection from %s: a message took longer than %.1f s",
                         conn.kind.upper(), conn.remote, self.tcp_message_timeout)
            else:
                continue
            conn.close()
            closed += 1
        return closed

    @property
    def tcp_connection_count(self) -> int:
        """How many TCP connections are open (for tests and metrics)."""
        return sum(1 for c in self._connections.values() if not c.closed and c.kind == "tcp")

    def close_connections(self, transport: str | None = None) -> int:
        """Close every TCP/TLS connection (only those of ``transport`` if given); how many.
        The next message to a peer opens a new one (a fresh TLS handshake: a certificate
        renewed on either side is used from then on)."""
        conns = [c for c in self._connections.values()
                 if not c.closed and (transport is None or c.kind == transport)]
        for conn in conns:
            conn.close()
        return len(conns)

    @property
    def tls_connection_count(self) -> int:
        """How many TLS connections are open (handshake done or under way, opened by us)."""
        return sum(1 for c in self._connections.values() if not c.closed and c.kind == "tls")

    async def close(self) -> None:
        """Close every socket and connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._connecting):
            task.cancel()
        for conn in list(self._connections.values()):
            conn.close()
        self._connections.clear()
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
                await server.wait_closed()
        self._server = self._tls_server = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
            self._udp_sock = None
        await asyncio.sleep(0)  # let the transports run their connection_lost callbacks
