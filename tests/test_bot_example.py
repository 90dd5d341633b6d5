"""examples/pipecat_bot.py, the offline Pipecat bot docs/voicebot.md starts from, as a user
runs it: a call bridged to it hears the greeting beep, then its own words said back after it
stops talking; ``#`` makes the bot hand ``{"next": "transfer"}`` back to the flow and hang up."""

from __future__ import annotations

import asyncio
import sys
import time
import wave

import numpy as np
import pytest

from tests.helpers.bot_rig import EngineRig, heard
from tests.helpers.e2e_audio import find_in_pieces, loud_spans, tone_share
from tests.helpers.net import free_port
from tests.helpers.paths import PROJECT
from tests.helpers.peers import PeerProcess
from tests.helpers.speech_corpus import synthesise

pytestmark = pytest.mark.timeout(90)

FLOW = """\
flow: bot
start: talk
nodes:
  talk:
    bot: {url: "ws://127.0.0.1:%d/", connect_timeout: 5s}
    on: {done: after}
  after: {switch: {value: "{{ vars.bot.next | default('none') }}", cases: {transfer: bye}}}
  bye: {hangup: }
"""


async def test_the_example_bot_parrots_the_caller_and_hands_back_the_next_step(tmp_path):
    port = free_port()
    with PeerProcess("example-bot", [sys.executable, str(PROJECT / "examples" / "pipecat_bot.py"),
                                     "--port", str(port), "--calls", "1"], tmp_path) as bot:
        deadline = time.monotonic() + 60
        while "waiting for a call" not in bot.log():
            assert bot.proc.poll() is None and time.monotonic() < deadline, bot.log()[-3000:]
            await asyncio.sleep(0.1)
        speech = synthesise("Please send me a copy of my last invoice.")
        wav = tmp_path / "caller.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes(np.concatenate([np.zeros(8000, np.int16), speech]).astype("<i2").tobytes())
        async with EngineRig(tmp_path, FLOW % port) as rig:
            spoken = len(speech) / 8000
            report = await rig.call(play=str(wav), dtmf=f"+{spoken + 5:.1f}s #", duration=20)
            await rig.wait_call_ended()
    outcome, _, values = rig.observer.only()
    assert outcome == "done" and values == {"next": "transfer"}, bot.log()[-3000:]
    audio = heard(report)
    beep_start, beep_end = loud_spans(audio)[0]
    assert tone_share(audio[int(beep_start * 8000):int(beep_end * 8000)], 880) > 0.9
    # most of what the caller said came back, after the beep (VAD onsets cut a little)
    pieces = find_in_pieces(speech, audio)
    matched = [m for m in pieces if m.correlation > 0.9]
    assert len(matched) >= 0.6 * len(pieces), pieces
    assert all(m.seconds > 1.0 + spoken for m in matched)
