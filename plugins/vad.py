"""The ``vad`` plugin: voice activity on the caller's audio, with speech start/end events.

Each 20 ms frame is classified voiced/unvoiced by WebRTC's VAD (``webrtcvad``). Single voiced
frames are common in noise and clicks, so speech *starts* when ``start_frames`` of the last
``start_window`` frames are voiced (default 3 of 5: about 60 ms of voice), and *ends* after
``hangover_ms`` of unvoiced frames (default 600 ms: long enough to bridge the pauses between words
and short enough to answer promptly). Each start and end is reported with
``call.report_speech("start" | "end")``.

The per-call state is public, for barge-in and silence detection by other plugins and flows:
``call.data["vad"]`` is a dict with

* ``speaking`` (bool): inside an utterance now;
* ``speech_start`` (float | None): media-clock time the current (or last) utterance began;
* ``last_speech_end`` (float | None): when the last utterance ended (its last voiced frame);
* ``last_voice`` (float | None): end time of the latest voiced frame.
* ``voiced_ms`` (int): voiced audio in the current (or last) utterance, in ms. Speech barge-in
  waits for enough of it, so that a cough or a short "mm" does not stop a prompt.
* ``utterance`` (numpy int16 array | None): the last finished utterance's audio, from
  ``preroll_ms`` before its start to its last voiced frame (plus ``tail_ms``); set just before
  the ``end`` event is reported, for the flow to hand to ``ivr_stt``. ``utterance_seq`` counts
  them.

Times are the engine's media clock (``AudioBatch.now``: the end of the tick's frame).

Configuration (``plugins.vad``): ``aggressiveness`` (0-3, default 2), ``start_frames`` (3),
``start_window`` (5), ``hangover_ms`` (600), ``min_level_dbfs`` (-55: quieter frames are
unvoiced without asking webrtcvad, which saves its cost on the silent majority of frames),
``preroll_ms`` (300: audio kept from before the start: the start is declared after a few voiced
frames, and a recogniser needs the word's onset and some silence before it), ``tail_ms`` (200),
``max_utterance_ms`` (20000: a longer utterance keeps only its first part, so that a caller who
never stops talking cannot grow the buffer without bound).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np
import webrtcvad

from ivr.call import AudioBatch, CallContext
from ivr.hookspecs import hookimpl

log = logging.getLogger(__name__)

NAME = "vad"
FRAME_SECONDS = 0.02
SAMPLE_RATE = 8000

_DEFAULTS: dict[str, Any] = {
    "aggressiveness": 2,
    "start_frames": 3,
    "start_window": 5,
    "hangover_ms": 600,
    "min_level_dbfs": -55.0,
    "preroll_ms": 300,
    "tail_ms": 200,
    "max_utterance_ms": 20000,
}
_settings: dict[str, Any] = dict(_DEFAULTS)


class _Detector:
    """The webrtcvad instance and smoothing of one call (kept off the public dict)."""

    def __init__(self) -> None:
        self.vad = webrtcvad.Vad(int(_settings["aggressiveness"]))
        self.recent: deque[bool] = deque(maxlen=int(_settings["start_window"]))
        self.unvoiced_run = 0
        # the last preroll frames while silent; every frame of the utterance while speaking
        keep = max(_frames(_settings["preroll_ms"]), int(_settings["start_window"]))
        self.preroll: deque[np.ndarray] = deque(maxlen=keep)
        self.utterance: list[np.ndarray] = []


def _frames(milliseconds: Any) -> int:
    return max(0, int(round(float(milliseconds) / 1000 / FRAME_SECONDS)))


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.vad``; calls already running keep their aggressiveness."""
    section = (config.get("plugins") or {}).get(NAME) or {}
    merged = {**_DEFAULTS, **section}
    aggressiveness = int(merged["aggressiveness"])
    if not 0 <= aggressiveness <= 3:
        raise ValueError(f"plugins.vad.aggressiveness must be 0..3, not {aggressiveness}")
    if not 1 <= int(merged["start_frames"]) <= int(merged["start_window"]):
        raise ValueError("plugins.vad: need 1 <= start_frames <= start_window")
    _settings.update(merged)


def _state(call: CallContext) -> dict[str, Any]:
    state = call.data.get(NAME)
    if state is None:
        state = call.data[NAME] = {
            "speaking": False,
            "speech_start": None,
            "last_speech_end": None,
            "last_voice": None,
            "voiced_ms": 0,
            "utterance": None,
            "utterance_seq": 0,
            "_detector": _Detector(),
        }
    return state


@hookimpl
def ivr_audio_in(batch: AudioBatch) -> None:
    """Classify every call's frame and update its speech state."""
    if not batch.calls:
        return
    # One vectorised level check for the whole batch; webrtcvad only for frames with some sound.
    power = np.mean(batch.pcm.astype(np.float64) ** 2, axis=1)
    floor = (32768.0**2) * 10 ** (float(_settings["min_level_dbfs"]) / 10)
    loud = power >= floor
    hangover_frames = max(1, int(round(float(_settings["hangover_ms"]) / 1000 / FRAME_SECONDS)))
    for i, call in enumerate(batch.calls):
        state = _state(call)
        detector: _Detector = state["_detector"]
        voiced = bool(loud[i]) and detector.vad.is_speech(batch.pcm[i].tobytes(), SAMPLE_RATE)
        _keep_audio(state, detector, batch.pcm[i])
        _update(call, state, detector, voiced, batch.now, hangover_frames)


def _keep_audio(state: dict[str, Any], detector: _Detector, frame: np.ndarray) -> None:
    if not state["speaking"]:
        detector.preroll.append(frame.copy())
    elif len(detector.utterance) < _frames(_settings["max_utterance_ms"]):
        detector.utterance.append(frame.copy())


def _update(call: CallContext, state: dict[str, Any], detector: _Detector, voiced: bool,
            now: float, hangover_frames: int) -> None:
    detector.recent.append(voiced)
    if voiced:
        state["last_voice"] = now
        detector.unvoiced_run = 0
        if state["speaking"]:
            state["voiced_ms"] += int(FRAME_SECONDS * 1000)
    else:
        detector.unvoiced_run += 1
    if not state["speaking"]:
        if voiced and sum(detector.recent) >= int(_settings["start_frames"]):
            # the utterance began at the first voiced frame still in the window
            first = list(detector.recent).index(True)
            state["speaking"] = True
            state["speech_start"] = now - (len(detector.recent) - first) * FRAME_SECONDS
            state["voiced_ms"] = sum(detector.recent) * int(FRAME_SECONDS * 1000)
            # the frames of the start window are in the pre-roll: the utterance starts with them
            detector.utterance = list(detector.preroll)
            detector.preroll.clear()
            log.debug("call %s: speech start at %.2f", call.id, state["speech_start"])
            call.report_speech("start")
    elif detector.unvoiced_run >= hangover_frames:
        state["speaking"] = False
        state["last_speech_end"] = state["last_voice"]
        detector.recent.clear()
        # drop the hang-over silence but a short tail (the decoder wants to hear the word end)
        capped = len(detector.utterance) >= _frames(_settings["max_utterance_ms"])
        trailing = 0 if capped else max(0, detector.unvoiced_run - _frames(_settings["tail_ms"]))
        frames = detector.utterance[: len(detector.utterance) - trailing] if trailing else detector.utterance
        state["utterance"] = np.concatenate(frames) if frames else np.zeros(0, np.int16)
        state["utterance_seq"] += 1
        detector.utterance = []
        log.debug("call %s: speech end at %.2f", call.id, state["last_speech_end"])
        call.report_speech("end")


@hookimpl
def ivr_call_ended(call: CallContext, reason: str) -> None:
    """Release the call's state."""
    call.data.pop(NAME, None)
