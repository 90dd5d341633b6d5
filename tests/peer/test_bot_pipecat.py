"""The voice-bot bridge against real software at both ends: baresip (a softphone) calls
``ivr serve``, whose flow hands the call to a Pipecat bot (tests/bots/pipecat_bots.py: Pipecat's
WebSocket server transport and Twilio serializer) and, once the bot ends the session, plays a
tone that says which way the flow went. Every assertion is on what baresip heard (its recording).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.bot_rig import sound_spans
from tests.helpers.e2e_audio import assert_contains
from tests.helpers.net import free_port
from tests.helpers.paths import PROJECT
from tests.helpers.peers import BaresipRunner, PeerProcess, dominant_frequency, read_wav
from tests.helpers.robust_server import IvrServeProcess
from tests.helpers.speech_corpus import synthesise

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

#: After the bot: 300 Hz when it ended normally, 600 Hz when it also said it was interrupted,
#: 2000 Hz when the bridge failed or broke.
FLOW = """\
flow: bot
start: talk
nodes:
  talk:
    bot: {url: "ws://127.0.0.1:%(port)d/", connect_timeout: 5s}
    on: {done: after, failed: oops, broken: oops}
  after:
    switch: {value: "{{ vars.bot.interrupted | default('no') }}", cases: {"True": said_interrupted}}
    on: {default: plain_end}
  plain_end: {play: {tone: "300", duration: 600ms}, next: bye}
  said_interrupted: {play: {tone: "600", duration: 600ms}, next: bye}
  oops: {play: {tone: "2000", duration: 600ms}, next: bye}
  bye: {hangup: }
"""


class PipecatBot(PeerProcess):
    """``python -m tests.bots.pipecat_bots KIND`` on a free port, ready when it says so."""

    def __init__(self, workdir: Path, kind: str, seconds: float) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        super().__init__(f"pipecat-{kind}", [sys.executable, "-m", "tests.bots.pipecat_bots", kind,
                                              "--port", str(self.port), "--seconds", str(seconds)],
                         workdir, env={"PYTHONPATH": str(PROJECT), "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60  # importing Pipecat and loading Silero on a busy machine
        while "READY" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Pipecat bot did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)


def wait_for_text(read, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in read():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{read()[-3000:]}"
        time.sleep(0.05)


def call_through_serve(tmp_path: Path, kind: str, microphone: np.ndarray, *, bot_seconds: float = 6.0,
                       key: str | None = None, run_seconds: int = 16) -> tuple[np.ndarray, str]:
    """baresip -> ivr serve -> Pipecat bot; returns what baresip heard and the server's log."""
    with PipecatBot(tmp_path / "bot", kind, bot_seconds) as bot, \
            IvrServeProcess(tmp_path / "serve", flow=FLOW % {"port": bot.port}) as serve:
        baresip = BaresipRunner(tmp_path / "baresip", microphone=microphone, run_seconds=run_seconds,
                                commands=[f"/dial sip:bot@127.0.0.1:{serve.port}"])
        with baresip:
            if key is not None:
                wait_for_text(serve.log, "bridged to bot", 30)
                time.sleep(0.5)
                baresip.command("sndcode", key)
            cdr = serve.folder / "cdr.jsonl"
            deadline = time.monotonic() + run_seconds + 15
            while not (cdr.exists() and cdr.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert cdr.exists() and cdr.read_text().strip(), (baresip.log()[-3000:], serve.log()[-3000:])
            time.sleep(0.5)  # baresip writes the last of its recording
        (recording,) = baresip.recordings("dec")
        audio, rate = read_wav(recording)
        assert rate == 8000
        return audio, serve.log() + bot.log()


def spans_with_pitch(audio: np.ndarray) -> list[tuple[float, float, float]]:
    """(start s, end s, dominant Hz) of each loud stretch."""
    return [(start, end, dominant_frequency(audio[int(start * 8000):int(end * 8000)]))
            for start, end in sound_spans(audio) if end - start >= 0.1]


def test_pipecat_echo_bot_says_back_what_the_caller_said(tmp_path):
    t = np.arange(16000) / 8000
    signal = (6000 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.int16)  # a 2 s sweep
    microphone = np.concatenate([np.zeros(8000, np.int16), signal, np.zeros(8000 * 12, np.int16)])
    audio, logs = call_through_serve(tmp_path, "echo", microphone, bot_seconds=5)
    assert_contains(signal, audio)  # the sweep came back, in order, through Pipecat and two G.711 legs
    spans = spans_with_pitch(audio)
    assert abs(spans[-1][2] - 300) < 10, (spans, logs[-3000:])  # outcome done: the flow went on


def test_pipecat_bot_answers_a_key_with_a_tone(tmp_path):
    audio, logs = call_through_serve(tmp_path, "tone", np.zeros(8000 * 16, np.int16), key="3")
    spans = spans_with_pitch(audio)
    pitches = [round(hz) for _, _, hz in spans]
    assert pitches[-2:] == [700, 300], (spans, logs[-3000:])  # key 3: 700 Hz, then the flow's tone
    start, end, _ = spans[-2]
    assert 0.9 <= end - start <= 1.1


def test_pipecat_bot_is_interrupted_by_the_caller_and_clears(tmp_path):
    speech = synthesise("Hello, I would like to talk to somebody about my bill please.")
    lead = 2.5
    microphone = np.concatenate([np.zeros(int(lead * 8000), np.int16), speech, np.zeros(8000 * 12, np.int16)])
    audio, logs = call_through_serve(tmp_path, "talker", microphone, bot_seconds=10)
    spans = spans_with_pitch(audio)
    talk = [s for s in spans if abs(s[2] - 440) < 10]
    assert talk, (spans, logs[-3000:])
    talked = talk[-1][1] - talk[0][0]
    # the bot had 10 s to say; the caller spoke after 2.5 s and Pipecat's VAD stopped it
    assert lead - 0.5 < talked < lead + 3.0, (spans, logs[-3000:])
    assert abs(spans[-1][2] - 600) < 10, (spans, logs[-3000:])  # {"interrupted": true} reached the flow
    assert "clears 1" in logs, logs[-3000:]
