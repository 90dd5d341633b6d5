"""The tts plugin: espeak-ng to a cached WAV, keyed by text, voice and rate."""

from __future__ import annotations

from pathlib import Path

import pytest

import ivr_plugins.playback as playback_plugin
import ivr_plugins.tts as tts_plugin
from ivr.audio import decode_wav
from ivr.call import PlaybackDone, PlayItem
from ivr.testing import AudioRig, events
from tests.helpers.waiting import wait_for_sync


@pytest.fixture
def rig(tmp_path) -> AudioRig:
    return AudioRig(tts_plugin, playback_plugin, config={"plugins": {"tts": {"cache_dir": str(tmp_path / "tts")}}})


def test_tts_writes_speech_into_the_cache_dir(rig: AudioRig, tmp_path: Path) -> None:
    path = Path(rig.pm.hook.ivr_tts(text="Welcome to the test line.", options={}))
    assert path.parent == tmp_path / "tts" and path.suffix == ".wav"
    samples, rate = decode_wav(path)
    assert rate == 22050 and 0.8 < len(samples) / rate < 3.0
    assert abs(samples).max() > 0.1  # real speech, not silence


def test_same_phrase_is_synthesised_once(rig: AudioRig) -> None:
    first = Path(rig.pm.hook.ivr_tts(text="Press one for sales.", options={}))
    stamp = first.stat().st_mtime_ns
    again = Path(rig.pm.hook.ivr_tts(text="Press one for sales.", options={}))
    assert again == first and again.stat().st_mtime_ns == stamp


def test_voice_and_rate_make_different_files(rig: AudioRig) -> None:
    base = rig.pm.hook.ivr_tts(text="Goodbye.", options={})
    other_voice = rig.pm.hook.ivr_tts(text="Goodbye.", options={"voice": "en-gb"})
    slower = rig.pm.hook.ivr_tts(text="Goodbye.", options={"rate": 100})
    assert len({base, other_voice, slower}) == 3
    assert len(decode_wav(slower)[0]) > len(decode_wav(base)[0])


def test_text_that_looks_like_an_option_is_spoken(rig: AudioRig) -> None:
    path = rig.pm.hook.ivr_tts(text="--help", options={})
    assert len(decode_wav(path)[0]) > 0


def test_bad_voice_is_an_error(rig: AudioRig) -> None:
    with pytest.raises(ValueError):
        rig.pm.hook.ivr_tts(text="x", options={"voice": "--stdout"})


def test_say_plays_through_playback(rig: AudioRig) -> None:
    call = rig.call()
    item = call.play(PlayItem("say", "One moment please."))
    sent, seen = 0, []

    def step() -> list:  # a tick every 5 ms lets the worker thread run, as the real clock would
        nonlocal sent
        frame = rig.step([call])[0]
        sent += int(abs(frame.astype(int)).max() > 0)
        seen.extend(events(call))
        return seen

    wait_for_sync(step, timeout=20, interval=0.005, message="the spoken prompt played")
    assert seen == [PlaybackDone(item.id)]
    assert sent > 20  # about a second of speech was sent
