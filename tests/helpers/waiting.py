"""Waiting for a condition with a deadline, instead of sleeping a fixed time and then asserting.

A test that sleeps 0.3 s and then checks "every sample arrived" fails whenever a busy machine
delays the audio by more than the sleep; the check is right, the wait is not. ``wait_for`` polls
the condition and returns as soon as it holds, so a generous deadline costs nothing when the
machine is idle and absorbs scheduling delays when it is not. On the deadline it fails the test
with ``message`` (and the condition's last value when it is not a plain bool).

    await wait_for(lambda: len(frames) == 60, timeout=10, message="frames")   # in a coroutine
    wait_for_sync(lambda: bob.call_state is CallState.STREAMING, timeout=5)  # in a plain test

``message`` may be a callable, called only on failure (say, to append a peer's log).

The deadline is in ``time.monotonic()`` seconds (the event loop's clock): a loop that is not
scheduled for a while still sees the condition checked once more after the deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar, Union

__all__ = ["wait_for", "wait_for_sync", "DEFAULT_TIMEOUT"]

T = TypeVar("T")

#: Long enough for a loaded 2-core machine; the wait ends as soon as the condition holds.
DEFAULT_TIMEOUT = 10.0
_INTERVAL = 0.01

Message = Union[str, Callable[[], str]]


class _Poll:
    """One condition and its deadline: ``done()`` says whether it holds (keeping its value) and
    raises AssertionError once the deadline has passed and it still does not."""

    def __init__(self, condition: Callable[[], T], timeout: float, message: Message) -> None:
        self.condition, self.timeout, self.message = condition, timeout, message
        self.deadline = time.monotonic() + timeout
        self.value: object = None

    def done(self) -> bool:
        self.value = self.condition()
        if self.value:
            return True
        if time.monotonic() < self.deadline:
            return False
        self.value = self.condition()  # the process may have been starved: one last look
        if self.value:
            return True
        message = self.message() if callable(self.message) else self.message
        text = f"{message or 'condition'} not met within {self.timeout} s"
        if self.value is not False and self.value is not None:
            text += f" (last value: {self.value!r})"
        raise AssertionError(text)


async def wait_for(condition: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, message: Message = "",
                   interval: float = _INTERVAL) -> T:
    """Poll ``condition()`` every ``interval`` seconds on the running loop until it is truthy and
    return its value; fail with AssertionError once ``timeout`` seconds have passed."""
    poll = _Poll(condition, timeout, message)
    while not poll.done():
        await asyncio.sleep(interval)
    return poll.value  # type: ignore[return-value]


def wait_for_sync(condition: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, message: Message = "",
                  interval: float = _INTERVAL) -> T:
    """:func:`wait_for` for code without an event loop (the threaded client): blocks the caller."""
    poll = _Poll(condition, timeout, message)
    while not poll.done():
        time.sleep(interval)
    return poll.value  # type: ignore[return-value]
