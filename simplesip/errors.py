"""Exceptions raised by simplesip.

The parser raises exactly one type, :class:`SIPParseError`, for anything it cannot accept, so a
transport can wrap every ``parse_message`` call in one ``except`` and answer ``400 <reason>`` (or the
status the error carries) while the endpoint keeps running.
"""

from __future__ import annotations

import builtins

__all__ = ["AuthenticationError", "CallError", "ConnectionError", "LocationError", "SIPParseError"]


class SIPParseError(ValueError):
    """A SIP message, header or URI that cannot be accepted.

    ``reason`` is short and safe to echo as a reason phrase; ``status`` is the response code a UAS
    should send when the bad input was a request: 400 by default, 413 when the message is larger than
    the configured limit, 416 for an unsupported Request-URI scheme, 505 for an unknown SIP version.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __repr__(self) -> str:
        return f"SIPParseError({self.reason!r}, status={self.status})"


class ConnectionError(builtins.ConnectionError):  # the shadowing name is the documented API
    """The transport could not reach the peer or lost its connection."""


class LocationError(ConnectionError):
    """DNS cannot say where a SIP server is (RFC 3263): the domain does not exist, it publishes no
    SIP service we can use, or the lookup failed. The message names the domain."""


class AuthenticationError(Exception):
    """Digest authentication failed (bad credentials, or a challenge we cannot answer)."""


class CallError(Exception):
    """A call could not be set up or failed; ``status`` is the SIP final response code if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
