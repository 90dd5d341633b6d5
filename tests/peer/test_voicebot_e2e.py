"""The voice bot end to end: baresip (a real softphone) calls the engine, which runs a speech
menu with the real plugins (vad, stt, playback, dtmf); baresip's microphone is an espeak-ng WAV
saying "support". The flow must take the support branch, both when the caller speaks after the
prompt and when they talk over it (speech barge-in: the prompt stops, and the time from the
VAD's speech start to the prompt stop is measured; docs/speech.md reports it)."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ivr import hookimpl
from ivr.config import parse_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.plugins import make_plugin_manager
from tests.helpers.peers import BaresipRunner, read_wav
from tests.helpers.speech_corpus import synthesise

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]
log = logging.getLogger(__name__)

PROMPT_HZ = 440

FLOW = """\
    flow: voicebot
    start: menu
    nodes:
      menu:
        menu:
          prompt: {{tone: "{hz}", duration: {prompt_s}s}}
          input: [dtmf, speech]
          options:
            "1": {{goto: sales, say: [sales, buy something]}}
            "2": {{goto: support, say: [support, help]}}
          timeout: 4s
        barge_in: [dtmf, speech]
        on: {{no_match: missed, no_input: missed}}
      sales: {{set: {{branch: sales}}, next: bye}}
      support: {{set: {{branch: support}}, next: bye}}
      missed: {{set: {{branch: missed}}, next: bye}}
      bye: {{pause: 500ms, next: hang}}
      hang: {{hangup: }}
"""


class Observer:
    """Records, per call, when speech started, when the prompt was told to stop, and the end."""

    def __init__(self) -> None:
        self.speech_start: float | None = None
        self.voice_onset_media: float | None = None
        self.stop_at: float | None = None
        self.stop_speech_span: float | None = None  # onset to latest voiced frame at the stop
        self.ended = asyncio.Event()
        self.vars: dict[str, Any] = {}
        self.stt_last: Any = None

    @hookimpl
    def ivr_speech(self, call, event):
        if event == "start" and self.speech_start is None:
            self.speech_start = time.monotonic()
            self.voice_onset_media = call.data["vad"]["speech_start"]

    @hookimpl
    def ivr_stop_playback(self, call):
        if self.stop_at is None and self.speech_start is not None:
            self.stop_at = time.monotonic()
            state = call.data["vad"]
            self.stop_speech_span = state["last_voice"] - state["speech_start"]

    @hookimpl
    def ivr_call_ended(self, call, reason):
        self.vars = dict(call.vars)
        self.stt_last = call.data.get("stt", {}).get("last")
        self.ended.set()


def caller_audio(lead_seconds: float) -> tuple[np.ndarray, float]:
    """Silence, then "support" (espeak-ng, 8 kHz), then silence; and the speech onset (s)."""
    spoken = synthesise("support", "en-us", 150)
    loud = np.flatnonzero(np.abs(spoken.astype(np.int32)) > 300)
    audio = np.concatenate([np.zeros(int(lead_seconds * 8000), np.int16), spoken, np.zeros(8000 * 8, np.int16)])
    return audio, lead_seconds + loud[0] / 8000


async def run_call(tmp_path: Path, prompt_seconds: float, lead_seconds: float) -> tuple[Observer, BaresipRunner, float]:
    flow = tmp_path / "voicebot.yaml"
    flow.write_text(textwrap.dedent(FLOW.format(hz=PROMPT_HZ, prompt_s=prompt_seconds)))
    config = parse_config(f"listen: {{port: 0, transports: [udp]}}\nflows: [{flow}]\n", base_dir=tmp_path)
    pm = make_plugin_manager(builtins=True, entry_points=False, environ={})
    observer = Observer()
    pm.register(observer, name="voicebot-observer")
    engine = Engine(config, pm, flows=FlowStoreRunner(config, pm))
    await engine.start()
    microphone, onset = caller_audio(lead_seconds)
    port = engine.endpoint.local_address[1]
    baresip = BaresipRunner(tmp_path / "baresip", microphone=microphone,
                            commands=[f"/dial sip:voicebot@127.0.0.1:{port}"], run_seconds=14)
    try:
        with baresip:
            await asyncio.wait_for(observer.ended.wait(), 14)
            await asyncio.sleep(0.5)  # let baresip close its recording
    finally:
        await engine.stop()
    return observer, baresip, onset


def tone_stop(heard: np.ndarray, rate: int) -> float | None:
    """When the prompt tone stops in what baresip heard (seconds), from 20 ms block levels."""
    blocks = heard[: len(heard) // (rate // 50) * (rate // 50)].reshape(-1, rate // 50).astype(np.float64)
    loud = np.flatnonzero(np.sqrt(np.mean(blocks**2, axis=1)) > 1000)
    return (loud[-1] + 1) * 0.02 if len(loud) else None


async def test_caller_says_support_after_the_prompt(tmp_path: Path) -> None:
    observer, baresip, _ = await run_call(tmp_path, prompt_seconds=1.0, lead_seconds=2.0)
    assert observer.vars.get("branch") == "support", (observer.vars, observer.stt_last, baresip.log()[-2000:])
    assert observer.vars["speech"] == "support"
    assert observer.stop_at is None  # the prompt had ended: nothing to barge into


async def test_caller_talks_over_the_prompt_and_it_stops(tmp_path: Path, record_property) -> None:
    observer, baresip, onset = await run_call(tmp_path, prompt_seconds=8.0, lead_seconds=2.0)
    assert observer.vars.get("branch") == "support", (observer.vars, observer.stt_last, baresip.log()[-2000:])
    assert observer.speech_start is not None and observer.stop_at is not None
    latency = observer.stop_at - observer.speech_start
    # barge-in waits for min_speech (120 ms) of voice; the VAD's start event comes after ~60 ms of
    # it, so the prompt must stop well within the 100 ms the product promises
    assert 0.02 <= latency <= 0.1, latency
    from ivr.flows.speech import DEFAULT_MIN_SPEECH

    # a cough shorter than min_speech does not stop it (frame times mark frame starts: one frame of slack)
    assert observer.stop_speech_span >= DEFAULT_MIN_SPEECH - 0.021
    (recording,) = baresip.recordings("dec")
    heard, rate = read_wav(recording)
    stopped = tone_stop(heard, rate)
    assert stopped is not None and stopped < 6.0  # far short of the 8 s prompt
    record_property("barge_in_start_to_stop_ms", round(latency * 1000))
    record_property("barge_in_onset_to_silence_at_caller_ms", round((stopped - onset) * 1000))
    log.info("barge-in: VAD start -> prompt stop %.0f ms (engine clock); caller's speech onset %.2f s -> "
                "tone gone from what baresip heard at %.2f s (%.0f ms, both from the start of the call's audio)",
                latency * 1000, onset, stopped, (stopped - onset) * 1000)
