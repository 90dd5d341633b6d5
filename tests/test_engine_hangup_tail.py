"""The flow's BYE waits for its last prompt to reach the caller: the whole final prompt is heard
by our own caller (``ivr call``'s ``place_call``) over loopback, followed by ``hangup_tail`` of
silence; a BYE sent right after the last frame (the old behaviour) loses the end still in the
caller's jitter buffer."""

from __future__ import annotations

import asyncio
import time
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


async def heard_tone(tmp_path: Path, hangup_tail: float, stall_at_loud_tick: int = 0,
                     sent_after_prompt: list[int] | None = None) -> tuple[float, float]:
    """What ``ivr call`` heard of the goodbye flow; with ``stall_at_loud_tick``, the engine's
    tick that sends that many-th frame of the prompt blocks the event loop for 0.2 s; into
    ``sent_after_prompt`` goes how many packets the engine sent after the prompt's last frame
    before it hung up."""
    (tmp_path / "goodbye.yaml").write_text(GOODBYE_FLOW)
    config = parse_config(f"listen: {{port: 0, transports: [udp]}}\nflows: [goodbye.yaml]\n"
                          f"hangup_tail: {hangup_tail}\n", base_dir=tmp_path)
    pm = make_plugin_manager(builtins=True, entry_points=False, environ={"IVR_PLUGINS": "playback"})
    engine = Engine(config, pm, flows=FlowStoreRunner(config, pm))
    on_tick, drain_playback = engine.on_tick, engine.drain_playback
    loud, quiet_sent = 0, 0  # prompt frames so far; packets sent since the last of them

    def watching_on_tick(calls, pcm_in, now, tick):
        nonlocal loud, quiet_sent
        outbound = on_tick(calls, pcm_in, now, tick)
        if outbound is not None and outbound.any():
            loud, quiet_sent = loud + 1, 0
            if loud == stall_at_loud_tick:
                time.sleep(0.2)  # ten ticks overdue: the next firing catches up
        elif loud and engine.endpoint.media_clock.sending:
            quiet_sent += 1
        return outbound

    async def watching_drain_playback(call):
        await drain_playback(call)
        if sent_after_prompt is not None:
            sent_after_prompt.append(quiet_sent)  # the flow hangs up now

    engine.on_tick = watching_on_tick  # type: ignore[method-assign]
    engine.drain_playback = watching_drain_playback  # type: ignore[method-assign]
    await engine.start()
    try:
        port = engine.endpoint.local_address[1]
        report = await asyncio.wait_for(place_call(f"sip:goodbye@127.0.0.1:{port}", duration=6), 10)
    finally:
        catch_up_ticks = engine.endpoint.media_clock.catch_up_ticks
        await engine.stop()
    if stall_at_loud_tick:
        assert catch_up_ticks >= 8, catch_up_ticks  # the stall made the clock catch up
    assert report.answered and report.end_reason == "remote_hangup"
    return tone_seconds(np.concatenate(report.heard))


async def test_the_whole_final_prompt_is_heard_then_the_tail(tmp_path: Path) -> None:
    sent_after_prompt: list[int] = []
    tone, silence_after = await heard_tone(tmp_path, 0.3, sent_after_prompt=sent_after_prompt)
    assert tone >= PROMPT_SECONDS - 0.02, tone  # at most one frame short
    assert 0.2 <= silence_after < 1.0, silence_after  # hangup_tail, heard as silence
    assert sent_after_prompt[0] >= 0.3 / 0.020, sent_after_prompt  # the BYE after the tail's packets


async def test_a_stall_in_the_middle_of_the_prompt_delays_it_and_loses_none_of_it(tmp_path: Path) -> None:
    """After a loop stall the media clock runs the overdue ticks without sending (a gap, not a
    burst); the prompt holds its place through them (AudioBatch.send) and resumes after the gap.
    It used to go on playing into ticks that were never sent: a 0.2 s stall cut 0.1 s or more
    out of the prompt, and a loaded machine (the process not scheduled for a while) did the same
    to this file's first test now and then."""
    tone, silence_after = await heard_tone(tmp_path, 0.3, stall_at_loud_tick=20)
    assert tone >= PROMPT_SECONDS - 0.02, tone
    assert 0.2 <= silence_after < 1.0, silence_after


async def test_without_the_wait_the_bye_leaves_with_the_last_frame(tmp_path: Path, monkeypatch) -> None:
    """What the wait is for: without it (as before) the BYE follows the prompt's last frame with
    fewer packets than the caller's jitter buffer holds (60 ms, three), so the caller hangs up
    with the end of the prompt unplayed. How much a caller then misses depends on when its own
    loop runs (on a loaded machine it may play it all): `python -m bench.hangup_tail` measures
    it; this test checks the order of things on our side, which does not depend on the load."""

    async def no_wait(self: Engine, call: object) -> None:
        return None

    monkeypatch.setattr(Engine, "drain_playback", no_wait)
    sent_after_prompt: list[int] = []
    await heard_tone(tmp_path, 0.3, sent_after_prompt=sent_after_prompt)
    assert sent_after_prompt[0] < 3, sent_after_prompt
