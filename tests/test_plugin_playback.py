"""The playback plugin: files of every format, tones, silence, text, barge-in, the prompt cache."""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest

import ivr_plugins.dtmf as dtmf_plugin
import ivr_plugins.playback as playback_plugin
from ivr import hookimpl
from ivr.call import PlaybackDone, PlayItem
from ivr.testing import AudioRig, events
from tests.helpers.audio import dominant_frequency, wav_file
from tests.helpers.waiting import wait_for_sync


def play_all(rig: AudioRig, call, limit_ticks: int = 1000) -> tuple[np.ndarray, list[PlaybackDone]]:
    """Tick until the call's queue is empty; return what was sent and the PlaybackDone events."""
    out, done = [], []
    for _ in range(limit_ticks):
        if not call.data["playback"].playing:
            break
        out.append(rig.step([call])[0])
        done += [e for e in events(call) if isinstance(e, PlaybackDone)]
    return np.concatenate(out), done


def test_a_catch_up_tick_plays_nothing_and_the_prompt_holds_its_place() -> None:
    """A tick the media clock runs late after a stall sends nothing (AudioBatch.send False): the
    prompt must not move on through it, or the caller never hears that part."""
    path = str(wav_file(8000, 1, 16, 0.3, 1000.0))
    rig = AudioRig(playback_plugin)
    call = rig.call()
    call.play(PlayItem("file", path))
    before = [rig.step([call])[0].copy() for _ in range(5)]
    held = [rig.step([call], send=False)[0].copy() for _ in range(8)]
    after, done = play_all(rig, call)
    assert not any(frame.any() for frame in held)
    other = AudioRig(playback_plugin)
    again = other.call()
    again.play(PlayItem("file", path))
    whole, _ = play_all(other, again)
    np.testing.assert_array_equal(np.concatenate(before + [after]), whole)  # every sample, in order
    assert len(done) == 1


@pytest.mark.parametrize(("rate", "channels", "bits"), [(44100, 2, 24), (8000, 1, 16), (16000, 1, 8),
                                                        (48000, 2, 32), (22050, 3, 16)])  # fmt: skip
def test_file_of_any_format_is_resampled_right(rate: int, channels: int, bits: int) -> None:
    rig = AudioRig(playback_plugin)
    call = rig.call()
    item = call.play(PlayItem("file", str(wav_file(rate, channels, bits, 1.0, 1000.0))))
    sent, done = play_all(rig, call)
    assert done == [PlaybackDone(item.id, interrupted=False)]
    assert len(sent) == 8000  # 1 s at 8 kHz: 50 frames exactly
    assert abs(dominant_frequency(sent[400:-400]) - 1000.0) < 2.0
    peak = np.abs(sent[400:-400].astype(np.float64)).max()
    assert abs(20 * np.log10(peak / 32768) - (-6.0)) < 0.5  # level kept (sox made it at -6 dBFS)


def test_items_play_back_to_back_without_gaps() -> None:
    rig = AudioRig(playback_plugin)
    call = rig.call()
    first = call.play(PlayItem("tone", "440", {"duration": 0.105}))  # ends mid-frame
    second = call.play(PlayItem("silence", options={"duration": "50ms"}))
    third = call.play(PlayItem("tone", "350+440", {"duration": 0.2}))
    sent, done = play_all(rig, call)
    assert [e.item_id for e in done] == [first.id, second.id, third.id]
    assert len(sent) == 160 * int(np.ceil((840 + 400 + 1600) / 160))
    assert np.all(sent[840:1240] == 0)
    assert abs(dominant_frequency(sent[100:740]) - 440) < 3
    assert np.abs(sent[1240:2840]).max() > 3000


def test_dtmf_tone_is_recognised_by_the_detector() -> None:
    rig = AudioRig(playback_plugin, dtmf_plugin)
    player, listener = rig.call("player"), rig.call("listener")
    player.play(PlayItem("tone", "dtmf:#", {"duration": 0.1}))
    player.play(PlayItem("silence", options={"duration": 0.1}))
    player.play(PlayItem("tone", "dtmf:7", {"duration": 0.1}))
    for _ in range(20):  # loop our output back as the listener's input
        sent = rig.step([player])
        rig.step([listener], sent)
    assert listener.digits == ["#", "7"]


def test_stop_playback_flushes_within_one_frame() -> None:
    rig = AudioRig(playback_plugin)
    call = rig.call()
    first = call.play(PlayItem("tone", "1000", {"duration": 2.0}))
    second = call.play(PlayItem("tone", "500", {"duration": 1.0}))
    for _ in range(5):
        assert np.abs(rig.step([call])[0]).max() > 1000
    assert events(call) == []
    call.stop_playback()
    assert events(call) == [PlaybackDone(first.id, True), PlaybackDone(second.id, True)]
    assert not np.any(rig.step([call])[0])  # the very next frame is silent
    call.stop_playback()  # nothing left: no more events
    assert events(call) == []


def test_only_the_playing_call_rows_are_written() -> None:
    rig = AudioRig(playback_plugin)
    quiet, loud = rig.call("q"), rig.call("l")
    loud.play(PlayItem("tone", "800", {"duration": 0.1}))
    out = rig.step([quiet, loud])
    assert not np.any(out[0]) and np.abs(out[1]).max() > 1000


def test_prompt_cache_decodes_once_and_sees_edits(tmp_path) -> None:
    rig = AudioRig(playback_plugin)
    playback_plugin.prompt_cache.clear()
    prompt = tmp_path / "prompt.wav"
    shutil.copy(wav_file(16000, 1, 16, 0.2, 500.0), prompt)
    call = rig.call()
    misses = playback_plugin.prompt_cache.misses
    for _ in range(3):
        call.play(PlayItem("file", str(prompt)))
    assert playback_plugin.prompt_cache.misses == misses + 1
    shutil.copy(wav_file(16000, 1, 16, 0.4, 500.0), prompt)
    os.utime(prompt, ns=(time.time_ns(), time.time_ns() + 10**9))
    call.play(PlayItem("file", str(prompt)))
    assert playback_plugin.prompt_cache.misses == misses + 2
    sent, done = play_all(rig, call)
    assert len(done) == 4 and len(sent) == 3 * 1600 + 3200


def test_missing_file_fails_where_it_is_asked(tmp_path) -> None:
    rig = AudioRig(playback_plugin)
    with pytest.raises(FileNotFoundError):
        rig.call().play(PlayItem("file", str(tmp_path / "nope.wav")))


def test_unknown_kind_is_left_to_other_plugins() -> None:
    rig = AudioRig(playback_plugin)
    with pytest.raises(RuntimeError, match="no plugin plays"):
        rig.call().play(PlayItem("video", "x"))


class SlowTts:
    """A TTS plugin that takes its time, to show the media clock does not wait for it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.release = threading.Event()
        self.thread: str | None = None
        self.returned = False

    @hookimpl
    def ivr_tts(self, text: str, options: dict) -> str:
        self.thread = threading.current_thread().name
        self.release.wait(5)
        self.returned = True
        return self.path


def test_say_runs_tts_off_the_media_clock() -> None:
    tts = SlowTts(str(wav_file(22050, 1, 16, 0.3, 700.0)))
    rig = AudioRig(playback_plugin, tts)
    call = rig.call()
    item = call.play(PlayItem("say", "hello"))
    for _ in range(10):
        assert not np.any(rig.step([call])[0])  # silence while TTS runs
    assert not tts.returned  # ticks were not held up: ten ran while TTS was still busy
    wait_for_sync(lambda: tts.thread is not None, message="the TTS worker started")
    assert tts.thread != threading.current_thread().name
    tts.release.set()
    # ticks run on until the speech is ready (the frame with its first sound is not in `sent`)
    wait_for_sync(lambda: np.any(rig.step([call])[0]), interval=0.005, message="the speech ready")
    sent, done = play_all(rig, call)
    assert done == [PlaybackDone(item.id)]
    assert abs(len(sent) + 160 - 2400) < 160 and abs(dominant_frequency(sent) - 700) < 3


def test_failed_tts_is_reported_interrupted() -> None:
    rig = AudioRig(playback_plugin)  # no TTS plugin at all
    call = rig.call()
    item = call.play(PlayItem("say", "hello"))

    def reported() -> list:
        rig.step([call])
        return events(call)

    reports = wait_for_sync(reported, interval=0.005, message="the playback reported")
    assert reports == [PlaybackDone(item.id, interrupted=True)]


def test_call_end_flushes_and_releases() -> None:
    rig = AudioRig(playback_plugin)
    call = rig.call()
    item = call.play(PlayItem("tone", "440", {"duration": 1}))
    rig.pm.hook.ivr_call_ended(call=call, reason="remote_hangup")
    assert events(call) == [PlaybackDone(item.id, True)] and "playback" not in call.data


def test_mixed_batch_gives_each_call_exactly_its_own_audio(tmp_path) -> None:
    """Calls in the middle of a prompt (written for the whole batch at once), calls at an item's
    end, in silence, idle, or joining late share one batch; each row is that call's audio alone."""
    rig = AudioRig(playback_plugin)
    long_prompt = str(wav_file(8000, 1, 16, 0.53, 300.0))  # ends mid-frame
    short_prompt = str(wav_file(16000, 1, 16, 0.21, 900.0))
    long_samples = playback_plugin.prompt_cache.load(long_prompt)
    short_samples = playback_plugin.prompt_cache.load(short_prompt)
    a, b, c, d = (rig.call(name) for name in "abcd")
    a.play(PlayItem("file", long_prompt))
    a.play(PlayItem("silence", options={"duration": 0.05}))
    a.play(PlayItem("file", short_prompt))
    c.play(PlayItem("file", short_prompt))
    expected = {
        "a": np.concatenate([long_samples, np.zeros(400, np.int16), short_samples]),
        "b": np.zeros(0, np.int16),
        "c": short_samples,
        "d": long_samples,
    }
    sent: dict[str, list[np.ndarray]] = {name: [] for name in "abcd"}
    for tick in range(70):
        if tick == 7:
            d.play(PlayItem("file", long_prompt))
        calls = [a, b, c] + ([d] if tick >= 7 else [])
        out = rig.step(calls)
        for call, row in zip(calls, out):
            sent[call.id].append(row)
    for name, frames in sent.items():
        audio = np.concatenate(frames)
        want = expected[name]
        np.testing.assert_array_equal(audio[: len(want)], want, err_msg=name)
        assert not np.any(audio[len(want):]), name  # silence once the queue is empty
    assert [type(e) for e in events(a)] == [PlaybackDone] * 3
