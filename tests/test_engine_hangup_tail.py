"""The flow's BYE waits for its last prompt to reach the caller: the whole final prompt is heard
by our own caller (``ivr call``'s ``place_call``) over loopback, followed by ``hangup_tail`` of
silence; a BYE sent right after the last frame (the old behaviour) loses the end still in the
caller's jitter buffer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from ivr.cli import place_call
from ivr.config import parse_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.plugins import make_plugin_manager

PROMPT_SECONDS = 1.0
GOODBYE_FLOW = f"""\
flow: goodbye
start: bye_prompt
nodes:
  bye_prompt: {{play: {{tone: "600", duration: {PROMPT_SECONDS}s}}, next: bye}}
  bye: {{hangup: }}
"""


def tone_seconds(heard: np.ndarray) -> tuple[float, float]:
    """How long the caller heard the tone (20 ms frames well above silence), and how much
    silence came after it before the call ended."""
    frames = heard[: len(heard) // 160 * 160].reshape(-1, 160).astype(np.float64)
    loud = np.sqrt(np.mean(frames**2, axis=1)) > 300
    after = len(loud) - 1 - int(np.flatnonzero(loud)[-1]) if loud.any() else 0
    return float(loud.sum()) * 0.02, after * 0.02


async def heard_tone(tmp_path: Path, hangup_tail: float) -> tuple[float, float]:
    (tmp_path / "goodbye.yaml").write_text(GOODBYE_FLOW)
    config = parse_config(f"listen: {{port: 0, transports: [udp]}}\nflows: [goodbye.yaml]\n"
                          f"hangup_tail: {hangup_tail}\n", base_dir=tmp_path)
    pm = make_plugin_manager(builtins=True, entry_points=False, environ={"IVR_PLUGINS": "playback"})
    engine = Engine(config, pm, flows=FlowStoreRunner(config, pm))
    await engine.start()
    try:
        port = engine.endpoint.local_address[1]
        report = await asyncio.wait_for(place_call(f"sip:goodbye@127.0.0.1:{port}", duration=6), 10)
    finally:
        await engine.stop()
    assert report.answered and report.end_reason == "remote_hangup"
    return tone_seconds(np.concatenate(report.heard))


async def test_the_whole_final_prompt_is_heard_then_the_tail(tmp_path: Path) -> None:
    tone, silence_after = await heard_tone(tmp_path, 0.3)
    assert tone >= PROMPT_SECONDS - 0.02, tone  # at most one frame short
    assert 0.2 <= silence_after < 1.0, silence_after  # hangup_tail, heard as silence


async def test_a_bye_right_after_the_last_frame_loses_the_end(tmp_path: Path, monkeypatch) -> None:
    """What the wait is for: without it (as before) the caller's jitter buffer is cut."""

    async def no_wait(self: Engine, call: object) -> None:
        return None

    monkeypatch.setattr(Engine, "drain_playback", no_wait)
    tone, _ = await heard_tone(tmp_path, 0.3)
    assert tone <= PROMPT_SECONDS - 0.04, tone
