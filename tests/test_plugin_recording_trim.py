"""``trim``: the recording plugin cuts the silence around the message from the file itself,
keeping ``TRIM_MARGIN`` on each side; the WAV stays valid and the metadata describes it."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

import ivr_plugins.recording as recording_plugin
import ivr_plugins.vad as vad_plugin
from ivr.call import RecordingDone
from ivr.testing import AudioRig, events
from ivr_plugins.recording import TRIM_MARGIN
from tests.helpers.audio import read_pcm, silence, speech

RATE = 8000


def record(rig: AudioRig, path: Path, audio: np.ndarray, **options: object) -> RecordingDone:
    """Feed ``audio`` frame by frame to a recording with ``options``; its RecordingDone."""
    call = rig.call()
    call.start_recording(str(path), **options)
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    for frame in frames:
        if call.data.get("recording") is None:
            break
        rig.step([call], frame[None, :].copy())
    call.stop_recording()
    [done] = [event for event in events(call) if isinstance(event, RecordingDone)]
    return done


def voice_bounds(samples: np.ndarray) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(samples) > 200)
    return int(loud[0]), int(loud[-1]) + 1


@pytest.mark.parametrize("plugins", [(recording_plugin,), (vad_plugin, recording_plugin)],
                         ids=["level", "vad"])
def test_trim_cuts_leading_and_trailing_silence_from_the_file(tmp_path: Path, plugins: tuple) -> None:
    voice = speech("Please call me back about the invoice.")
    audio = np.concatenate([silence(1.5), voice, silence(3.0)])
    path = tmp_path / "message.wav"
    done = record(AudioRig(*plugins), path, audio, trim=True, silence_timeout=2.5)
    assert done.reason == "silence"
    kept = read_pcm(path)
    with wave.open(str(path)) as wav:  # a valid WAV whose header matches its data
        assert (wav.getnchannels(), wav.getframerate(), wav.getnframes()) == (1, RATE, len(kept))
    assert path.stat().st_size == 44 + 2 * len(kept)
    start, end = voice_bounds(kept)
    # the whole voice is there, with about TRIM_MARGIN of silence on either side (frame-rounded;
    # the vad is slower to call a word's soft end voice than the level check)
    assert np.array_equal(kept[start:end], voice[slice(*voice_bounds(voice))])
    assert abs(start / RATE - TRIM_MARGIN) <= 0.03, start / RATE
    assert TRIM_MARGIN - 0.03 <= (len(kept) - end) / RATE <= TRIM_MARGIN + 0.35, (len(kept) - end) / RATE
    assert done.duration == pytest.approx(len(kept) / RATE)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sample_count"] == len(kept) and meta["duration"] == pytest.approx(len(kept) / RATE, abs=1e-3)
    voice_onset = 1.5 + voice_bounds(voice)[0] / RATE  # where the voice began in what was recorded
    assert meta["trimmed"]["start"] == pytest.approx(voice_onset - start / RATE, abs=0.001)
    assert meta["trimmed"]["end"] > 2.0  # most of the silence that ended the message


def test_without_trim_the_file_keeps_everything(tmp_path: Path) -> None:
    audio = np.concatenate([silence(1.0), speech("Hello there."), silence(2.0)])
    done = record(AudioRig(recording_plugin), tmp_path / "raw.wav", audio, silence_timeout=1.5)
    kept = read_pcm(tmp_path / "raw.wav")
    assert done.duration == pytest.approx(len(kept) / RATE) and len(kept) > 3.0 * RATE
    assert "trimmed" not in json.loads((tmp_path / "raw.json").read_text())


def test_a_silent_message_trims_to_an_empty_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    done = record(AudioRig(recording_plugin), path, silence(2.0), trim=True, silence_timeout=1.0)
    assert done.duration == 0.0
    with wave.open(str(path)) as wav:
        assert wav.getnframes() == 0
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sample_count"] == 0 and meta["trimmed"]["end"] == pytest.approx(1.0, abs=0.03)
