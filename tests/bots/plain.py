"""A scriptable Twilio Media Streams bot on the ``websockets`` library, in the test's own loop.

``ScriptedBot(script)`` serves on a free port of 127.0.0.1; each connection runs
``await script(conn)`` with a :class:`BotConnection` that records every message we (the bridge)
sent, with its arrival time, and sends what the test wants back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from simplesip.wire.g711 import encode

__all__ = ["BotConnection", "ScriptedBot", "ulaw_tone"]


def ulaw_tone(hz: float, seconds: float, level: float = 8000.0) -> bytes:
    """A sine tone as µ-law bytes (8 kHz)."""
    t = np.arange(int(seconds * 8000)) / 8000
    return encode((level * np.sin(2 * np.pi * hz * t)).astype(np.int16), "PCMU").tobytes()


class BotConnection:
    """One bridged call as the bot sees it."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.received: list[tuple[float, dict[str, Any]]] = []  # (monotonic time, message)
        self.request_headers = ws.request.headers if ws.request is not None else {}
        self.path = ws.request.path if ws.request is not None else ""
        self._new = asyncio.Event()
        self.closed = asyncio.Event()

    @property
    def stream_sid(self) -> str:
        return self.first("start")["streamSid"]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for _, m in self.received if m.get("event") == name]

    def first(self, name: str) -> dict[str, Any]:
        return self.events(name)[0]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 20.0,
                       where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Wait until ``count`` messages of event ``name`` (matching ``where``) have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.events(name) if where is None or where(m)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed.is_set():
                raise AssertionError(f"{count} {name!r} wanted, got {len(found)}; events: "
                                     f"{[m.get('event') for _, m in self.received][-20:]}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass

    def time_of(self, name: str, where: Callable[[dict[str, Any]], bool] | None = None) -> float:
        for at, message in self.received:
            if message.get("event") == name and (where is None or where(message)):
                return at
        raise KeyError(name)

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def send_media(self, ulaw: bytes, chunk: int | None = None) -> None:
        """Send ``ulaw`` as media messages of ``chunk`` bytes (all at once by default)."""
        step = chunk or len(ulaw)
        for start in range(0, len(ulaw), step):
            payload = base64.b64encode(ulaw[start:start + step]).decode()
            await self.send({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})

    async def mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def reader(self) -> None:
        try:
            async for text in self.ws:
                self.received.append((time.monotonic(), json.loads(text)))
                self._new.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._new.set()


Script = Callable[[BotConnection], Awaitable[None]]


class ScriptedBot:
    """``async with ScriptedBot(script) as bot:`` -- ``bot.url``, ``bot.connections``."""

    def __init__(self, script: Script, *, read: bool = True, **serve_options: Any) -> None:
        self.script = script
        self.read = read
        self.serve_options = serve_options
        self.connections: list[BotConnection] = []
        self.errors: list[BaseException] = []
        self.server: Server | None = None
        self.url = ""

    async def _handler(self, ws: ServerConnection) -> None:
        conn = BotConnection(ws)
        self.connections.append(conn)
        reader = asyncio.create_task(conn.reader()) if self.read else None
        try:
            await self.script(conn)
        except ConnectionClosed:
            pass
        except Exception as exc:  # reported by the test through bot.errors
            self.errors.append(exc)
            raise
        finally:
            if reader is not None:
                await asyncio.wait([reader], timeout=5)

    async def __aenter__(self) -> Self:
        where = {} if "sock" in self.serve_options else {"host": "127.0.0.1", "port": 0}
        self.server = await serve(self._handler, **where, **self.serve_options)
        port = next(iter(self.server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/twilio"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
