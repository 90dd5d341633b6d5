"""The ``vad`` plugin: voice activity on the caller's audio, with speech start/end events.

Each 20 ms frame is classified voiced/unvoiced by WebRTC's VAD (``webrtcvad``). Single voiced
frames are common in noise and clicks, so speech *starts* when ``start_frames`` of the last
``start_window`` frames are voiced (default 3 of 5: about 60 ms of voice), and *ends* after
``hangover_ms`` of unvoiced frames (default 600 ms: long enough to bridge the pauses between words
and short enough to answer promptly). Each start and end is reported with
``call.report_speech("start")`` and ``call.report_speech("end", utterance)``, the utterance being
the audio from ``preroll_ms`` before the start to the last voiced frame (plus ``tail_ms``): the
engine's speech contract (``ivr_speech``, :class:`~ivr.call.SpeechEvent`).

The per-call state, ``call.data["vad"]``, is also the call's :class:`~ivr.call.VoiceActivity`
(``call.voice``, the same dict): ``speaking``, ``speech_start``, ``last_voice`` and ``voiced_ms``
as that contract says (speech barge-in waits for enough ``voiced_ms``, so that a cough or a short
"mm" does not stop a prompt), and this plugin's own ``last_speech_end`` (when the last utterance
ended: its last voiced frame), ``utterance`` (the last finished utterance, as reported) and
``utterance_seq`` (how many there were). Times are the engine's media clock (``AudioBatch.now``:
the end of the tick's frame).

Configuration (``plugins.vad``): ``aggressiveness`` (0-3, default 2), ``start_frames`` (3),
``start_window`` (5), ``hangover_ms`` (600), ``min_level_dbfs`` (-55: quieter frames are
unvoiced without asking webrtcvad, which saves its cost on the silent majority of frames),
``preroll_ms`` (300: audio kept from before the start: the start is declared after a few voiced
frames, and a recogniser needs the word's onset and some silence before it), ``tail_ms`` (200),
``max_utterance_ms`` (20000: a longer utterance keeps only its first part, so that a caller who
never stops talking cannot grow the buffer without bound).

Cost: this runs for every call every 20 ms, so the per-call work is kept to a few dict and
attribute look-ups. The level check is one vectorised pass over the batch; frames are kept as
``bytes`` sliced from one ``tobytes()`` of the batch (the form webrtcvad takes) and become a numpy
array only when an utterance is assembled; the smoothing window is a bit mask; and a quiet frame
on a call that is not speaking only goes into the pre-roll.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import webrtcvad

from ivr import hookimpl
from ivr.audio import FRAME_BYTES, FRAME_MS, FRAME_SECONDS, SAMPLE_RATE
from ivr.call import AudioBatch, CallContext

log = logging.getLogger(__name__)

NAME = "vad"

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


def _frames(milliseconds: Any) -> int:
    return max(0, int(round(float(milliseconds) / 1000 / FRAME_SECONDS)))


@dataclass(frozen=True)
class _Tuning:
    """The settings in the units the per-frame code uses, derived once per configuration."""

    aggressiveness: int
    start_frames: int
    start_window: int
    hangover_frames: int
    level_floor: float  # mean power (int16 units squared) of ``min_level_dbfs``
    preroll_frames: int  # pre-roll kept; at least the start window, whose frames begin the utterance
    tail_frames: int
    max_utterance_frames: int

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "_Tuning":
        start_window = int(settings["start_window"])
        return cls(
            aggressiveness=int(settings["aggressiveness"]),
            start_frames=int(settings["start_frames"]),
            start_window=start_window,
            hangover_frames=max(1, _frames(settings["hangover_ms"])),
            level_floor=(32768.0**2) * 10 ** (float(settings["min_level_dbfs"]) / 10),
            preroll_frames=max(_frames(settings["preroll_ms"]), start_window),
            tail_frames=_frames(settings["tail_ms"]),
            max_utterance_frames=_frames(settings["max_utterance_ms"]),
        )


_tuning = _Tuning.from_settings(_settings)


class _Detector:
    """The webrtcvad instance and smoothing of one call (kept off the public dict).

    Aggressiveness, window length and pre-roll length are fixed when the call's detector is made:
    a call keeps them across a reconfiguration.
    """

    __slots__ = ("is_speech", "window_bits", "window_mask", "unvoiced_run", "preroll", "utterance")

    def __init__(self, tuning: _Tuning) -> None:
        self.is_speech = webrtcvad.Vad(tuning.aggressiveness).is_speech
        # bit k set: the frame k ticks ago was voiced; only the last start_window frames are kept.
        # The start rule needs just how many are voiced and how long ago the oldest of them was.
        self.window_bits = 0
        self.window_mask = (1 << tuning.start_window) - 1
        self.unvoiced_run = 0  # only counted while speaking: the hang-over
        # the last pre-roll frames while silent; every frame of the utterance while speaking
        self.preroll: deque[bytes] = deque(maxlen=tuning.preroll_frames)
        self.utterance: list[bytes] = []


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.vad``; calls already running keep their aggressiveness."""
    global _tuning
    section = (config.get("plugins") or {}).get(NAME) or {}
    merged = {**_DEFAULTS, **section}
    aggressiveness = int(merged["aggressiveness"])
    if not 0 <= aggressiveness <= 3:
        raise ValueError(f"plugins.vad.aggressiveness must be 0..3, not {aggressiveness}")
    if not 1 <= int(merged["start_frames"]) <= int(merged["start_window"]):
        raise ValueError("plugins.vad: need 1 <= start_frames <= start_window")
    _settings.update(merged)
    _tuning = _Tuning.from_settings(_settings)


def _attach(call: CallContext) -> tuple[dict[str, Any], _Detector]:
    """The call's public state and detector, made on its first frame."""
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
        }
    detector = state["_detector"] = _Detector(_tuning)
    call.voice = state  # the VoiceActivity keys, with this plugin's own besides
    return state, detector


@hookimpl
def ivr_audio_in(batch: AudioBatch) -> None:
    """Classify every call's frame and update its speech state."""
    if not batch.calls:
        return
    tuning = _tuning
    now = batch.now
    pcm = batch.pcm
    # One vectorised level check for the whole batch; webrtcvad only for frames with some sound.
    # The sums of squares of int16 samples are exact in float64, so the order of summation
    # cannot move a frame across the floor.
    samples = pcm.astype(np.float64)
    loud = (np.einsum("ij,ij->i", samples, samples) / pcm.shape[1] >= tuning.level_floor).tolist()
    frames = pcm.tobytes()  # one copy for the batch; each call's frame is a slice of it
    offset = 0
    for call, is_loud in zip(batch.calls, loud):
        frame = frames[offset : offset + FRAME_BYTES]
        offset += FRAME_BYTES
        state = call.data.get(NAME)
        detector = state.get("_detector") if state is not None else None
        if detector is None:
            state, detector = _attach(call)
        if not state["speaking"]:
            detector.preroll.append(frame)
            if not is_loud:
                # unvoiced: cannot start speech; only the window moves (nothing to do when empty)
                if detector.window_bits:
                    detector.window_bits = (detector.window_bits << 1) & detector.window_mask
                continue
            voiced = detector.is_speech(frame, SAMPLE_RATE)
            bits = detector.window_bits = ((detector.window_bits << 1) | voiced) & detector.window_mask
            if voiced:
                state["last_voice"] = now
                if bits.bit_count() >= tuning.start_frames:
                    _start_speech(call, state, detector, bits, now)
            continue
        if len(detector.utterance) < tuning.max_utterance_frames:
            detector.utterance.append(frame)
        if is_loud and detector.is_speech(frame, SAMPLE_RATE):
            state["last_voice"] = now
            state["voiced_ms"] += FRAME_MS
            detector.unvoiced_run = 0
        else:
            detector.unvoiced_run += 1
            if detector.unvoiced_run >= tuning.hangover_frames:
                _end_speech(call, state, detector, tuning)


def _start_speech(call: CallContext, state: dict[str, Any], detector: _Detector, window_bits: int,
                  now: float) -> None:
    # the utterance began at the oldest voiced frame still in the window
    state["speaking"] = True
    state["speech_start"] = now - window_bits.bit_length() * FRAME_SECONDS
    state["voiced_ms"] = window_bits.bit_count() * FRAME_MS
    detector.unvoiced_run = 0
    # the frames of the start window are in the pre-roll: the utterance starts with them
    detector.utterance = list(detector.preroll)
    detector.preroll.clear()
    log.debug("call %s: speech start at %.2f", call.id, state["speech_start"])
    call.report_speech("start")


def _end_speech(call: CallContext, state: dict[str, Any], detector: _Detector, tuning: _Tuning) -> None:
    state["speaking"] = False
    state["last_speech_end"] = state["last_voice"]
    detector.window_bits = 0
    # drop the hang-over silence but a short tail (the decoder wants to hear the word end)
    frames = detector.utterance
    capped = len(frames) >= tuning.max_utterance_frames
    trailing = 0 if capped else max(0, detector.unvoiced_run - tuning.tail_frames)
    if trailing:
        frames = frames[: len(frames) - trailing]
    # a fresh, writable array: the utterance is the flow's to keep
    utterance = state["utterance"] = np.frombuffer(b"".join(frames), dtype=np.int16).copy()
    state["utterance_seq"] += 1
    detector.utterance = []
    log.debug("call %s: speech end at %.2f", call.id, state["last_speech_end"])
    call.report_speech("end", utterance)


@hookimpl
def ivr_call_ended(call: CallContext, reason: str) -> None:
    """Release the call's state."""
    if call.data.pop(NAME, None) is not None:
        call.voice = None
