"""SIP over a byte stream (TCP, or TLS once the handshake is done): framing and one connection.

:func:`frame_stream` cuts messages off a receive buffer by Content-Length (RFC 3261 §18.3);
:class:`StreamConnection` is the asyncio protocol of one connection, which hands every framed
message, keep-alive pong and the connection's life to its :class:`StreamOwner`
(:class:`~simplesip.aio.transport.SipTransport`, which keeps one connection per transport and
remote address).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Protocol

from simplesip.aio.addresses import peer_address

__all__ = ["MAX_MESSAGE_SIZE", "StreamConnection", "StreamOwner", "frame_stream"]

log = logging.getLogger(__name__)

#: Largest SIP message we accept (§18.1.1 allows up to 65535 octets over UDP; TCP is held to it too).
MAX_MESSAGE_SIZE = 65535

_HEADER_END = b"\r\n\r\n"
# Content-Length or its compact form "l", at the start of a header line (no folding allowed here).
_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.IGNORECASE)


class StreamOwner(Protocol):
    """What a :class:`StreamConnection` reports to (the SipTransport)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def connection_opened(self, conn: "StreamConnection") -> None: ...

    def connection_closed(self, conn: "StreamConnection") -> None: ...

    def deliver(self, data: bytes, addr: tuple[str, int], transport: str) -> None: ...

    def pong_received(self) -> None: ...

    def tls_failed(self, addr: tuple[str, int], exc: BaseException) -> None: ...


def frame_stream(buffer: bytearray) -> list[bytes]:
    """Cut every complete SIP message off the front of a TCP receive buffer (in place).

    RFC 3261 §18.3: on a stream, Content-Length is mandatory and delimits the body; CRLF keep-alives
    (RFC 5626 §3.5.1) before a message are skipped. Raises ValueError when the stream cannot be
    framed (no Content-Length, or a message larger than MAX_MESSAGE_SIZE): the connection must close.
    """
    messages: list[bytes] = []
    while True:
        start = 0
        while buffer[start:start + 2] == b"\r\n":
            start += 2
        if start:
            del buffer[:start]
        end = buffer.find(_HEADER_END)
        if end < 0:
            if len(buffer) > MAX_MESSAGE_SIZE:
                raise ValueError("header section larger than the maximum message size")
            return messages
        head = bytes(buffer[:end + 2])
        match = _CONTENT_LENGTH.search(head)
        if match is None:
            raise ValueError("message on a stream without Content-Length")
        total = end + 4 + int(match.group(1))
        if total > MAX_MESSAGE_SIZE:
            raise ValueError(f"message of {total} octets is too large")
        if len(buffer) < total:
            return messages
        messages.append(bytes(buffer[:total]))
        del buffer[:total]


class StreamConnection(asyncio.Protocol):
    """One SIP-over-TCP (or over TLS: ``kind`` "tls") connection, accepted or opened by its
    owner (a :class:`StreamOwner`, in practice the SipTransport)."""

    def __init__(self, owner: StreamOwner, remote: tuple[str, int] | None = None, kind: str = "tcp"):
        self.owner = owner
        self.kind = kind
        self.outbound = False  # opened by us (set by the owner when it connects)
        self.received_any = False
        self.remote = remote
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: list[bytes] = []  # written before the connection was established
        self.last_activity = owner.loop.time()
        self.message_started: float | None = None  # first byte of the incomplete message, if any
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Unmapped (::ffff:a.b.c.d on a dual-stack listener is a.b.c.d): the key the transport
        # keeps this connection under, and the source the core sees.
        self.remote = peer_address(transport.get_extra_info("peername"))
        self.owner.connection_opened(self)
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        now = self.owner.loop.time()
        self.last_activity = now
        if not self.buffer and data and not data.strip(b"\r\n"):
            if data == b"\r\n\r\n":  # a keep-alive ping (RFC 5626 4.4.1): answer the pong
                self.write(b"\r\n")
            else:
                self.owner.pong_received()  # the answer to one of ours
            return
        self.buffer += data
        try:
            messages = frame_stream(self.buffer)
        except ValueError as exc:
            log.warning("closing %s connection from %s: %s", self.kind.upper(), self.remote, exc)
            self.close()
            return
        if not self.buffer:
            self.message_started = None
        elif messages or self.message_started is None:
            # What is left started in this chunk: the next message's clock starts now.
            self.message_started = now
        assert self.remote is not None
        for message in messages:
            self.owner.deliver(message, self.remote, self.kind)

    def write(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        closed_by_us, self.closed = self.closed, True
        if (self.kind == "tls" and self.outbound and not closed_by_us and not self.received_any
                and self.transport is not None and self.remote is not None):
            # TLS 1.3: the server checks our certificate after our side of the handshake is
            # done; a refusal arrives as an alert or a bare close before any SIP comes back.
            self.owner.tls_failed(self.remote, exc or ConnectionResetError(
                "the server closed the connection after the handshake, before answering "
                "(does it require a client certificate?)"))
        self.owner.connection_closed(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
