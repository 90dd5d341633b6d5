"""Stream framing: cutting a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3).

Datagrams are one message each (:func:`simplesip.wire.message.parse_message`); on a stream the message
boundaries come from Content-Length, which :class:`StreamFramer` reads from each header section.
"""

from __future__ import annotations

from collections import deque
from typing import NoReturn

from simplesip.errors import SIPParseError
from simplesip.wire.message import (
    MAX_MESSAGE_SIZE,
    Message,
    content_length,
    find_head_end,
    parse_head,
    parse_message,
)

__all__ = ["StreamFramer"]


class StreamFramer:
    """Cuts a TCP/TLS byte stream into SIP messages by Content-Length (RFC 3261 §18.3).

    CRLFs between messages are keep-alives (RFC 5626 §3.5.1) and are skipped.  Content-Length is
    mandatory on streams.  A framing error (no Content-Length, a message over ``max_size``, an
    unreadable header section) loses the stream: the buffer is dropped, SIPParseError is raised and
    the connection should be closed.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._frames: deque[bytes] = deque()
        self._scanned = 0  # bytes of the buffer already searched for the end of the headers
        self._frame_length: int | None = None  # length of the message being received, once known

    def feed_raw(self, data: bytes) -> list[bytes]:
        """Add stream bytes; return the complete messages framed so far, each as its own bytes.

        Only framing is checked, so each frame can go to ``UserAgentCore.receive`` which answers a
        malformed request with 400 while the stream stays usable.
        """
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if self._frame_length is None:
                self._frame_length = self._next_frame_length()
                if self._frame_length is None:
                    return frames
            if len(self._buffer) < self._frame_length:
                return frames
            frames.append(bytes(self._buffer[: self._frame_length]))
            del self._buffer[: self._frame_length]
            self._frame_length = None
            self._scanned = 0

    def _next_frame_length(self) -> int | None:
        """Length of the message at the head of the buffer once its headers are in, else None."""
        self._skip_keepalives()
        # resume the search where the last one stopped (less 3 bytes of a split CRLFCRLF), so a
        # header arriving in many small reads is scanned once, not once per read
        bounds = find_head_end(self._buffer, max(0, self._scanned - 3))
        if bounds is None:
            self._scanned = len(self._buffer)
            if len(self._buffer) > self.max_size:
                self._fail(SIPParseError("Message Too Large", status=413))
            return None
        head_end, body_start = bounds
        try:
            _, headers = parse_head(bytes(self._buffer[:head_end]))
            length = content_length(headers)
        except SIPParseError as exc:
            self._fail(exc)
        if length is None:
            self._fail(SIPParseError("Content-Length is required on stream transports"))
        if body_start + length > self.max_size:
            self._fail(SIPParseError("Message Too Large", status=413))
        return body_start + length

    def feed(self, data: bytes) -> list[Message]:
        """Add stream bytes; return every complete message, parsed.

        If one framed message is malformed and messages before it were returned in this call, the
        error is raised by the next call (``feed(b"")`` will do; see ``pending``).
        """
        self._frames.extend(self.feed_raw(data))
        messages: list[Message] = []
        while self._frames:
            try:
                message = parse_message(self._frames[0], self.max_size)
            except SIPParseError:
                if messages:
                    return messages
                self._frames.popleft()
                raise
            self._frames.popleft()
            messages.append(message)
        return messages

    @property
    def pending(self) -> bool:
        """True when framed messages (or an error) wait for the next ``feed`` call."""
        return bool(self._frames)

    def _skip_keepalives(self) -> None:
        skipped = 0
        while skipped < len(self._buffer) and self._buffer[skipped] in b"\r\n":
            skipped += 1
        if skipped:
            del self._buffer[:skipped]
            self._scanned = max(0, self._scanned - skipped)

    def _fail(self, error: SIPParseError) -> NoReturn:
        self._buffer.clear()
        self._scanned = 0
        self._frame_length = None
        raise error
