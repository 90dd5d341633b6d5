"""Spoken input for ``ivr simulate``: utterances given as text or as WAV files.

* ``--say "support@2.0, sales@9"``: the caller says "support" at 2 s. The recogniser is
  bypassed: the text is matched against the node's grammar as if heard perfectly (confidence
  1.0), so a flow's speech routing can be tested without audio.
* ``--speech-wav "menu.wav@2.0"``: the WAV's audio is the utterance, run through the real
  recogniser (the ``ivr_stt`` plugins: pocketsphinx by default).

Either way the caller's voice activity is simulated as a VAD plugin reports it: ``start`` at
the given time, ``call.voice["voiced_ms"]`` growing every frame, and ``end`` with the utterance's
audio when it is over (the VAD's hang-over is left out: the simulated ``end`` comes when the
speech ends).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from ivr.audio import FRAME_SECONDS, SAMPLE_RATE, parse_duration, read_wav
from ivr.call import CallContext, VoiceActivity
from ivr.flows.speech import match_text

#: How long a ``--say`` utterance lasts: a word takes about this long at a calm pace.
SECONDS_PER_WORD = 0.45


@dataclass(frozen=True)
class ScriptedUtterance:
    """One thing the simulated caller says: at ``at`` seconds, ``text`` (``--say``) or the
    audio of a WAV file (``--speech-wav``)."""

    at: float
    duration: float
    text: str | None = None
    pcm: np.ndarray | None = None


def _timed(token: str, what: str) -> tuple[str, float]:
    value, sep, at = token.rpartition("@")
    if not sep or not value.strip():
        raise ValueError(f"bad {what} token {token!r} (write e.g. support@2.0)")
    return value.strip(), parse_duration(at.strip())


def parse_say_script(script: str) -> list[ScriptedUtterance]:
    """``"support@2.0, buy something@9"`` -> two utterances, as text."""
    said = []
    for token in filter(None, (t.strip() for t in script.split(","))):
        text, at = _timed(token, "--say")
        said.append(ScriptedUtterance(at, max(0.3, SECONDS_PER_WORD * len(text.split())), text=text))
    return said


def parse_wav_script(script: str) -> list[ScriptedUtterance]:
    """``"hello.wav@2.0, no.wav@8"`` -> utterances with each file's audio."""
    said = []
    for token in filter(None, (t.strip() for t in script.split(","))):
        name, at = _timed(token, "--speech-wav")
        pcm = read_wav(name)
        said.append(ScriptedUtterance(at, len(pcm) / SAMPLE_RATE, pcm=pcm))
    return said


class SimulatedSpeech:
    """Plays scripted utterances into a virtual call as a VAD plugin would report them, and
    answers ``ivr_stt`` for them (the simulated media's hook delegates here). WAV utterances go
    to the ``ivr_stt`` of ``recogniser`` (a plugin manager's ``hook``; by default the plugins
    the engine would load)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, call: CallContext, recogniser: Any = None) -> None:
        self.loop = loop
        self.call = call
        self._text_of: dict[int, str | None] = {}  # utterance number -> scripted text
        self._ended = 0  # utterances ended so far
        self._engine: Any = recogniser

    def schedule(self, t0: float, utterances: list[ScriptedUtterance]) -> None:
        for utterance in utterances:
            self.loop.call_at(t0 + utterance.at, self._start, utterance)

    def _state(self) -> VoiceActivity:
        if self.call.voice is None:
            self.call.voice = VoiceActivity(speaking=False, speech_start=None, last_voice=None, voiced_ms=0)
        return self.call.voice

    def _start(self, utterance: ScriptedUtterance) -> None:
        state = self._state()
        state.update(speaking=True, speech_start=self.loop.time(), voiced_ms=0)
        self.call.report_speech("start")
        self.loop.call_later(FRAME_SECONDS, self._frame, utterance, 1)

    def _frame(self, utterance: ScriptedUtterance, frames: int) -> None:
        state = self._state()
        state["voiced_ms"] = int(frames * FRAME_SECONDS * 1000)
        state["last_voice"] = self.loop.time()
        if frames * FRAME_SECONDS < utterance.duration - 1e-9:
            self.loop.call_later(FRAME_SECONDS, self._frame, utterance, frames + 1)
            return
        pcm = utterance.pcm if utterance.pcm is not None else np.zeros(int(utterance.duration * SAMPLE_RATE), np.int16)
        state["speaking"] = False
        self._ended += 1
        self._text_of[self._ended] = utterance.text
        self.call.report_speech("end", pcm)

    def ivr_stt(self, call: CallContext, pcm: Any, options: dict[str, Any]) -> tuple[str, float] | None:
        """The scripted text matched against ``options["grammar"]``, or the real recogniser
        for WAV utterances."""
        text = self._text_of.get(self._ended)
        if text is not None:
            matched = match_text(text, options.get("grammar"))
            return (matched, 1.0) if matched is not None else None
        return self._real_engine().ivr_stt(call=call, pcm=pcm, options=options)

    def _real_engine(self) -> Any:
        if self._engine is None:
            from ivr.plugins import make_plugin_manager  # loads the stt plugin by name

            self._engine = make_plugin_manager().hook
        return self._engine
