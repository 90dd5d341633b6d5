"""The vad plugin on espeak-ng speech framed by silence and noise."""

from __future__ import annotations

import numpy as np
import pytest

import ivr_plugins.vad as vad_plugin
from ivr.call import SpeechEvent
from ivr.testing import AudioRig, events, frames
from tests.helpers.audio import add_noise, silence, speech

SENTENCE = "Please hold the line while I transfer your call to the next available agent."


def voiced_span(signal: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms block above -40 dBFS: where the speech really is (seconds)."""
    blocks = signal[: len(signal) // 80 * 80].reshape(-1, 80).astype(np.float64)
    loud = np.flatnonzero(np.sqrt(np.mean(blocks**2, axis=1)) > 32768 * 10 ** (-40 / 20))
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def run(signal: np.ndarray, config: dict | None = None) -> tuple[list[tuple[str, float]], dict]:
    """Feed ``signal``; return the speech events with the media time they fired, and the state."""
    rig = AudioRig(vad_plugin, config=config)
    call = rig.call()
    fired = []
    for frame in frames(signal):
        rig.step([call], frame[None, :].copy())
        fired += [(e.kind, rig.now) for e in events(call) if isinstance(e, SpeechEvent)]
    return fired, call.data["vad"]


@pytest.mark.parametrize("voice", ["en-us", "en-gb+f3"])
def test_speech_start_and_end_times(voice: str) -> None:
    spoken = speech(SENTENCE, voice)
    signal = np.concatenate([silence(1.0), spoken, silence(2.0)])
    onset, offset = voiced_span(signal)
    fired, state = run(signal)
    assert [kind for kind, _ in fired] == ["start", "end"]
    (_, started_at), (_, ended_at) = fired
    # start reported ~60 ms into the speech (3 voiced frames); its recorded start is the onset
    assert onset <= started_at <= onset + 0.15
    assert abs(state["speech_start"] - onset) <= 0.06
    # end reported one hang-over (600 ms) after the last voiced frame, which is the offset
    assert abs(state["last_speech_end"] - offset) <= 0.1
    assert offset + 0.55 <= ended_at <= offset + 0.75
    assert state["speaking"] is False


def test_hangover_is_configurable() -> None:
    signal = np.concatenate([silence(0.5), speech(SENTENCE), silence(1.5)])
    _, offset = voiced_span(signal)
    fired, _ = run(signal, {"plugins": {"vad": {"hangover_ms": 300}}})
    assert [kind for kind, _ in fired] == ["start", "end"]
    assert offset + 0.25 <= fired[1][1] <= offset + 0.45


def test_silence_and_low_noise_are_not_speech() -> None:
    quiet = add_noise(silence(3.0) + 1, 0.0)  # white noise around -80 dBFS
    fired, state = run(np.concatenate([silence(1.0), quiet]))
    assert fired == []
    assert state["speaking"] is False and state["last_voice"] is None


def test_speaking_state_while_talking() -> None:
    rig = AudioRig(vad_plugin)
    call = rig.call()
    rig.feed(call, np.concatenate([silence(0.5), speech(SENTENCE)[:16000]]))  # cut mid-sentence
    assert call.data["vad"]["speaking"] is True
    assert call.data["vad"]["last_voice"] is not None


def test_batch_of_calls_kept_apart() -> None:
    rig = AudioRig(vad_plugin)
    talker, listener = rig.call("a"), rig.call("b")
    signal = np.concatenate([silence(0.4), speech(SENTENCE)[:12000]])
    for frame in frames(signal):
        rig.step([talker, listener], np.stack([frame, np.zeros(160, np.int16)]))
    assert talker.data["vad"]["speaking"] and not listener.data["vad"]["speaking"]
    assert [e.kind for e in events(talker)] == ["start"] and events(listener) == []


def test_invalid_aggressiveness_is_refused() -> None:
    with pytest.raises(ValueError):
        vad_plugin.ivr_configure({"plugins": {"vad": {"aggressiveness": 4}}})
    vad_plugin.ivr_configure({})
