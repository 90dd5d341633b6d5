"""The engine in the test's own event loop with the real built-in plugins (bot included) and a
flow, plus an observer of the ``ivr_bot_*`` hooks: the rig of the bridge's protocol and fault
tests (tests/test_bot_*.py). The caller is simplesip's own (``ivr.cli.place_call``); the end to
end tests through ``ivr serve`` with SIPp and baresip are in tests/peer/test_bot_e2e.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Self

import numpy as np

from ivr import hookimpl
from ivr.cli import CallReport, place_call
from ivr.config import parse_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.plugins import make_plugin_manager
from tests.helpers.e2e_audio import loud_spans

__all__ = ["BotObserver", "EngineRig", "heard", "sound_spans"]


class BotObserver:
    """Records what the bot hooks and the call's end deliver, per call id."""

    def __init__(self) -> None:
        self.started: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.ended: dict[str, tuple[str, dict[str, int], dict[str, Any]]] = {}
        self.vars: dict[str, dict[str, Any]] = {}
        self.extra_parameters: dict[str, str] = {}
        self.claim: set[str] = set()

    @hookimpl
    def ivr_bot_start(self, call, bridge, message):
        self.started[call.id] = bridge.stream_sid
        message["start"]["customParameters"].update(self.extra_parameters)

    @hookimpl
    def ivr_bot_message(self, call, bridge, message):
        self.messages.append(message)
        if message.get("event") in self.claim:
            bridge.send_event("ack", {"of": message.get("event")})
            return True
        return None

    @hookimpl
    def ivr_bot_ended(self, call, bridge, outcome):
        self.ended[call.id] = (outcome, dict(bridge.stats), dict(bridge.values))

    @hookimpl
    def ivr_call_ended(self, call, reason):
        self.vars[call.id] = dict(call.vars)

    def only(self) -> tuple[str, dict[str, int], dict[str, Any]]:
        assert len(self.ended) == 1, self.ended
        return next(iter(self.ended.values()))


class EngineRig:
    """``async with EngineRig(tmp_path, flow) as rig: report = await rig.call(...)``."""

    def __init__(self, folder: Path, flow: str, config_extra: str = "") -> None:
        self.folder = folder
        (folder / "flows").mkdir(parents=True, exist_ok=True)
        (folder / "flows" / "bot.yaml").write_text(flow)
        self.config = parse_config(
            f"listen: {{port: 0, transports: [udp]}}\nflows: [flows]\nrecordings: {folder / 'rec'}\n"
            f"{config_extra}", base_dir=folder)
        self.pm = make_plugin_manager(entry_points=False, environ={})
        self.observer = BotObserver()
        self.pm.register(self.observer, name="bot-observer")
        self.engine = Engine(self.config, self.pm, flows=FlowStoreRunner(self.config, self.pm))

    def uri(self, user: str = "bot") -> str:
        return f"sip:{user}@127.0.0.1:{self.engine.endpoint.local_address[1]}"

    async def call(self, user: str = "bot", **options: Any) -> CallReport:
        """One call from simplesip's caller to ``user`` (the flow routes every user to the one
        flow); ``options`` go to :func:`ivr.cli.place_call`."""
        options.setdefault("duration", 10)
        return await place_call(self.uri(user), **options)

    async def wait_call_ended(self, count: int = 1, timeout: float = 20) -> None:
        """Until ``count`` calls have ended (their ``ivr_call_ended`` ran)."""
        async def ended() -> None:
            while len(self.observer.vars) < count:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(ended(), timeout)

    async def __aenter__(self) -> Self:
        await self.engine.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.stop(drain_timeout=0)


def heard(report: CallReport) -> np.ndarray:
    """Everything the caller heard, as one int16 array."""
    return np.concatenate(report.heard) if report.heard else np.zeros(0, np.int16)


def sound_spans(audio: np.ndarray, bridge_gap: float = 0.1) -> list[tuple[float, float]]:
    """:func:`loud_spans` with gaps shorter than ``bridge_gap`` seconds closed: a frame the
    caller's jitter buffer concealed on a loaded machine must not split one tone in two."""
    merged: list[tuple[float, float]] = []
    for start, end in loud_spans(audio):
        if merged and start - merged[-1][1] < bridge_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
