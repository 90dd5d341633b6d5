"""A fake simplesip endpoint and flow runner for engine tests that need no sockets."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Callable

import numpy as np

from ivr.call import CallContext, DtmfEvent, HangupEvent
from ivr.config import IvrConfig

_ids = itertools.count(1)


class FakeCall:
    """Stands in for ``simplesip.aio.call.Call``: records what the engine asked of it."""

    def __init__(self, to_user: str = "attendant", from_user: str = "alice",
                 source: tuple[str, int] = ("127.0.0.1", 5070), refer_status: int = 200) -> None:
        self.id = f"fake-{next(_ids)}"
        self.from_user, self.to_user = from_user, to_user
        self.from_uri, self.to_uri = f"sip:{from_user}@127.0.0.1", f"sip:{to_user}@127.0.0.1"
        self.headers = {"User-Agent": "fake"}
        self.source = source
        self.refer_status = refer_status
        self.answered = False
        self.rejected: int | None = None
        self.hung_up = False
        self.referred_to: str | None = None
        self.on_dtmf: Callable[..., None] | None = None
        self.on_ended: Callable[..., None] | None = None
        self.ended = asyncio.Event()

    async def answer(self) -> None:
        self.answered = True

    async def reject(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.rejected = status
        self.reject_headers = headers or {}
        self._end("rejected")

    async def hangup(self) -> None:
        self.hung_up = True
        self._end("local")

    async def refer(self, target: str) -> int:
        self.referred_to = target
        return self.refer_status

    def remote_bye(self) -> None:
        self._end("bye")

    def _end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.ended.set()
            if self.on_ended:
                self.on_ended(reason)


class FakeEndpoint:
    """Stands in for ``simplesip.aio.endpoint.Endpoint``; tests drive ``ring`` and ``tick``."""

    def __init__(self, config: IvrConfig | None = None) -> None:
        self.config = config
        self.on_incoming_call: Callable[[Any], Any] | None = None
        self.on_tick: Callable[..., Any] | None = None
        self.calls: list[FakeCall] = []
        self.started = self.stopped = self.registered = False
        self.tick_number = 0

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def register(self) -> None:
        self.registered = True

    def ring(self, call: FakeCall) -> FakeCall:
        self.calls.append(call)
        assert self.on_incoming_call is not None
        self.on_incoming_call(call)
        return call

    def tick(self, pcm: np.ndarray | None = None) -> tuple[list[FakeCall], np.ndarray | None]:
        """One media tick over every live answered call (as the real media clock does)."""
        live = [c for c in self.calls if c.answered and not c.ended.is_set()]
        if pcm is None:
            pcm = np.zeros((len(live), 160), dtype=np.int16)
        self.tick_number += 1
        return live, self.on_tick(live, pcm, time.monotonic(), self.tick_number)


class ScriptedFlows:
    """A flow runner: every flow answers, collects digits until ``#`` and stores them in
    ``call.vars["digits"]``; returns ``hangup`` on a HangupEvent."""

    def __init__(self, names: tuple[str, ...] = ("attendant", "sales"), answer: bool = True) -> None:
        self.names = list(names)
        self.answer = answer
        self.started: list[tuple[str, CallContext]] = []

    def flow_names(self) -> list[str]:
        return self.names

    async def run(self, name: str, call: CallContext) -> str:
        self.started.append((name, call))
        if not self.answer:
            return "no_answer"
        await call.controller.answer()
        collected = ""
        while True:
            event = await call.events.get()
            if isinstance(event, HangupEvent):
                call.vars["digits"] = collected
                return "hangup"
            if isinstance(event, DtmfEvent):
                if event.digit == "#":
                    call.vars["digits"] = collected
                    return "done"
                collected += event.digit


async def settle(rounds: int = 5) -> None:
    """Let the engine's tasks run."""
    for _ in range(rounds):
        await asyncio.sleep(0)
