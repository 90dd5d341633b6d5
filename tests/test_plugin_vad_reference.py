"""The vad plugin against a plain frame-by-frame model of its documented rules.

The plugin takes short cuts for speed (a bit mask for the start window, ``bytes`` frames, quiet
frames of idle calls only kept for the pre-roll); the model takes none. On random streams of
silence, line hiss, noise around the level floor, clicks and talk spurts, for several calls in
one batch that come and go, both must report the same events at the same tick and leave the same
public state (utterance audio included), whatever the configuration.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import webrtcvad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ivr_plugins.vad as vad_plugin
from ivr.call import SpeechEvent
from ivr.testing import AudioRig, events

FRAME = 160
PUBLIC_SCALARS = ("speaking", "speech_start", "last_speech_end", "last_voice", "voiced_ms", "utterance_seq")
# RMS level of each kind of frame (dBFS); "edge" straddles the default -55 dBFS floor
KIND_DBFS = {"hiss": -72.0, "edge": -55.0, "voice": -20.0, "click": -10.0}


class ReferenceVad:
    """One call's VAD as the rules read: every frame classified, every frame kept, no short cut."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = {**vad_plugin._DEFAULTS, **config}
        self.vad = webrtcvad.Vad(int(self.cfg["aggressiveness"]))
        self.recent: deque[bool] = deque(maxlen=int(self.cfg["start_window"]))
        keep = max(self.frames_of("preroll_ms"), int(self.cfg["start_window"]))
        self.preroll: deque[np.ndarray] = deque(maxlen=keep)
        self.utterance: list[np.ndarray] = []
        self.unvoiced_run = 0
        self.state: dict[str, Any] = {"speaking": False, "speech_start": None, "last_speech_end": None,
                                      "last_voice": None, "voiced_ms": 0, "utterance": None,
                                      "utterance_seq": 0}

    def frames_of(self, key: str) -> int:
        return max(0, int(round(float(self.cfg[key]) / 1000 / 0.02)))

    def step(self, frame: np.ndarray, now: float) -> list[str]:
        state = self.state
        power = np.mean(frame.astype(np.float64) ** 2)
        loud = power >= 32768.0**2 * 10 ** (float(self.cfg["min_level_dbfs"]) / 10)
        voiced = bool(loud) and self.vad.is_speech(frame.tobytes(), 8000)
        if not state["speaking"]:
            self.preroll.append(frame.copy())
        elif len(self.utterance) < self.frames_of("max_utterance_ms"):
            self.utterance.append(frame.copy())
        self.recent.append(voiced)
        if voiced:
            state["last_voice"] = now
            self.unvoiced_run = 0
            if state["speaking"]:
                state["voiced_ms"] += 20
        else:
            self.unvoiced_run += 1
        if not state["speaking"]:
            if voiced and sum(self.recent) >= int(self.cfg["start_frames"]):
                first = list(self.recent).index(True)
                state["speaking"] = True
                state["speech_start"] = now - (len(self.recent) - first) * 0.02
                state["voiced_ms"] = sum(self.recent) * 20
                self.utterance = list(self.preroll)
                self.preroll.clear()
                return ["start"]
        elif self.unvoiced_run >= max(1, self.frames_of("hangover_ms")):
            state["speaking"] = False
            state["last_speech_end"] = state["last_voice"]
            self.recent.clear()
            capped = len(self.utterance) >= self.frames_of("max_utterance_ms")
            trailing = 0 if capped else max(0, self.unvoiced_run - self.frames_of("tail_ms"))
            kept = self.utterance[: len(self.utterance) - trailing] if trailing else self.utterance
            state["utterance"] = np.concatenate(kept) if kept else np.zeros(0, np.int16)
            state["utterance_seq"] += 1
            self.utterance = []
            return ["end"]
        return []


def band_noise(rng: np.random.Generator, count: int, dbfs: float) -> np.ndarray:
    """``count`` frames of telephone-band noise at ``dbfs`` RMS (webrtcvad hears it as voice)."""
    samples = count * FRAME
    spectrum = np.fft.rfft(rng.normal(size=samples))
    freqs = np.fft.rfftfreq(samples, 1 / 8000)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    signal = np.fft.irfft(spectrum, samples)
    signal *= 32768 * 10 ** (dbfs / 20) / max(1e-12, float(np.sqrt(np.mean(signal**2))))
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16).reshape(count, FRAME)


def build_stream(segments: list[tuple[str, int]], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = []
    for kind, count in segments:
        if kind == "silence":
            parts.append(np.zeros((count, FRAME), np.int16))
        elif kind == "click":
            parts.append(band_noise(rng, 1, KIND_DBFS["click"]))
        else:
            # "edge": each frame's level jitters around the floor, so loud and quiet frames mix
            jitter = rng.uniform(-4, 4, size=(count, 1)) if kind == "edge" else 0.0
            parts.append(np.clip(band_noise(rng, count, KIND_DBFS[kind]) * 10 ** (jitter / 20),
                                 -32768, 32767).astype(np.int16))
    return np.concatenate(parts)


segment = st.tuples(st.sampled_from(["silence", "hiss", "edge", "voice", "click"]), st.integers(1, 60))
vad_config = st.fixed_dictionaries({
    "aggressiveness": st.integers(0, 3),
    "start_window": st.integers(1, 6),
    "hangover_ms": st.sampled_from([20, 100, 300, 600]),
    "preroll_ms": st.sampled_from([0, 60, 300]),
    "tail_ms": st.sampled_from([0, 40, 200]),
    "max_utterance_ms": st.sampled_from([100, 500, 20000]),
}).flatmap(lambda cfg: st.integers(1, cfg["start_window"]).map(lambda n: {**cfg, "start_frames": n}))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=vad_config,
       streams=st.lists(st.lists(segment, min_size=1, max_size=12), min_size=1, max_size=3),
       joins=st.lists(st.integers(0, 40), min_size=3, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_plugin_matches_the_reference_model(config: dict[str, Any], streams: list, joins: list[int],
                                            seed: int) -> None:
    try:
        rig = AudioRig(vad_plugin, config={"plugins": {"vad": config}})
        audio = [build_stream(segments, seed + index) for index, segments in enumerate(streams)]
        calls = [rig.call(f"c{index}") for index in range(len(audio))]
        models = [ReferenceVad(config) for _ in audio]
        # call i joins the batch at tick joins[i] and leaves when its stream ends
        spans = [(joins[i], joins[i] + len(audio[i])) for i in range(len(audio))]
        for tick in range(max(end for _, end in spans)):
            live = [i for i, (begin, end) in enumerate(spans) if begin <= tick < end]
            inbound = np.zeros((len(live), FRAME), np.int16)
            for row, i in enumerate(live):
                inbound[row] = audio[i][tick - spans[i][0]]
            rig.step([calls[i] for i in live], inbound)
            for i in live:
                expected = models[i].step(audio[i][tick - spans[i][0]], rig.now)
                got = [e.kind for e in events(calls[i]) if isinstance(e, SpeechEvent)]
                assert got == expected, f"call {i} tick {tick}"
                state = calls[i].data["vad"]
                model = models[i].state
                assert {k: state[k] for k in PUBLIC_SCALARS} == {k: model[k] for k in PUBLIC_SCALARS}
                if expected == ["end"]:
                    assert state["utterance"].dtype == np.int16 and state["utterance"].flags.writeable
                    np.testing.assert_array_equal(state["utterance"], model["utterance"])
    finally:
        vad_plugin.ivr_configure({})
