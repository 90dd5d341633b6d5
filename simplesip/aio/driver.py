"""Drive a sans-IO :class:`~simplesip.core.useragent.UserAgentCore` from asyncio.

The whole contract between the protocol core and the outside world, in one place: every inbound
message goes to ``core.receive(data, addr, now, transport)`` (the core fills ``received``/``rport``
from ``addr``, RFC 3581); after that, after every command and after every timer, the driver sends
``core.datagrams_to_send()``, hands each ``core.next_event()`` to the owner, and re-arms one
``loop.call_at`` for ``core.get_timer()``. ``now`` is always ``loop.time()``, the clock the timer
handle runs on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from simplesip.aio.transport import SipTransport
from simplesip.core.events import Event
from simplesip.core.useragent import UserAgentCore

log = logging.getLogger(__name__)

__all__ = ["CoreDriver"]


class CoreDriver:
    """Connects one UserAgentCore to one SipTransport and one event callback."""

    def __init__(self, core: UserAgentCore, transport: SipTransport,
                 on_event: Callable[[Event], None]):
        self.core = core
        self.transport = transport
        self.on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self.closed = False

    def now(self) -> float:
        return self._loop.time()

    def receive(self, data: bytes, addr: tuple[str, int], transport: str) -> None:
        """One framed message from the network."""
        if self.closed:
            return
        self.core.receive(data, addr, self._loop.time(), transport)
        self.pump()

    def command(self, fn: Callable[[UserAgentCore, float], Any]) -> Any:
        """Run ``fn(core, now)`` (a core command), then flush what it produced."""
        result = fn(self.core, self._loop.time())
        self.pump()
        return result

    def pump(self) -> None:
        """Send what the core wants sent, hand out its events, re-arm its timer."""
        if self._pumping or self.closed:
            return  # an event handler issued a command: the running loop below flushes it
        self._pumping = True
        try:
            while True:
                for data, addr, transport in self.core.datagrams_to_send():
                    self.transport.send(data, addr, transport)
                event = self.core.next_event()
                if event is None:
                    break
                try:
                    self.on_event(event)
                except Exception:  # one bad handler must not stall the SIP stack
                    log.exception("error handling %r", event)
        finally:
            self._pumping = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.core.get_timer()
        if deadline == self._timer_at and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        if self.closed:
            return
        self.core.handle_timer(self._loop.time())
        self.pump()

    def close(self) -> None:
        """Stop the timer; later input is ignored."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
