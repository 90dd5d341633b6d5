"""The recording plugin: exact content, every stop path, SIGTERM and SIGKILL survival."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest

import ivr_plugins.playback as playback_plugin
import ivr_plugins.recording as recording_plugin
import ivr_plugins.vad as vad_plugin
from ivr.call import PlayItem, RecordingDone
from ivr.testing import AudioRig, events
from tests.helpers.audio import read_pcm, silence, speech

ROOT = Path(__file__).resolve().parents[1]


def noise_frames(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-20000, 20000, (count, 160), dtype=np.int16)


def done_events(call) -> list[RecordingDone]:
    return [e for e in events(call) if isinstance(e, RecordingDone)]


def test_mono_recording_holds_every_frame_exactly(tmp_path) -> None:
    rig = AudioRig(recording_plugin)
    call = rig.call(from_uri="sip:alice@127.0.0.1", to_uri="sip:ivr@127.0.0.1")
    path = tmp_path / "mono.wav"
    call.start_recording(str(path))
    sent = noise_frames(123)
    for frame in sent:
        rig.step([call], frame[None, :].copy())
    call.stop_recording()
    assert done_events(call) == [RecordingDone(str(path), 123 * 160 / 8000, "stopped")]
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (1, 8000, 2)
        assert wav.getnframes() == 123 * 160
    assert np.array_equal(read_pcm(path), sent.reshape(-1))
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["call_id"] == call.id and meta["from"] == "sip:alice@127.0.0.1"
    assert meta["to"] == "sip:ivr@127.0.0.1" and meta["end_reason"] == "stopped"
    assert meta["sample_count"] == 123 * 160 and meta["duration"] == pytest.approx(2.46)
    assert "T" in meta["start"] and meta["start"].endswith("+00:00")


def test_stereo_recording_has_caller_left_and_us_right(tmp_path) -> None:
    rig = AudioRig(playback_plugin, recording_plugin)
    call = rig.call()
    path = tmp_path / "stereo.wav"
    call.play(PlayItem("tone", "600", {"duration": 1.0}))
    call.start_recording(str(path), stereo=True)
    inbound, outbound = noise_frames(60), []
    for frame in inbound:
        outbound.append(rig.step([call], frame[None, :].copy())[0])
    rig.pm.hook.ivr_call_ended(call=call, reason="remote_hangup")  # hang-up finalises
    assert [e.reason for e in done_events(call)] == ["hangup"]
    recorded = read_pcm(path)
    assert recorded.shape == (60 * 160, 2)
    assert np.array_equal(recorded[:, 0], inbound.reshape(-1))
    assert np.array_equal(recorded[:, 1], np.concatenate(outbound))
    assert np.abs(recorded[:, 1]).max() > 5000  # the tone really was recorded
    assert json.loads(path.with_suffix(".json").read_text())["end_reason"] == "hangup"


def test_batch_records_each_call_to_its_own_file(tmp_path) -> None:
    rig = AudioRig(recording_plugin)
    calls = [rig.call(f"c{i}") for i in range(3)]
    for i, call in enumerate(calls):
        call.start_recording(str(tmp_path / f"{i}.wav"))
    data = noise_frames(3 * 20).reshape(20, 3, 160)
    for tick in data:
        rig.step(calls, tick.copy())
    for i, call in enumerate(calls):
        call.stop_recording()
        assert np.array_equal(read_pcm(tmp_path / f"{i}.wav"), data[:, i].reshape(-1))


def test_max_length_cuts_at_the_exact_sample(tmp_path) -> None:
    rig = AudioRig(recording_plugin)
    call = rig.call()
    call.start_recording(str(tmp_path / "max.wav"), max_length=0.5)
    for frame in noise_frames(40):
        rig.step([call], frame[None, :].copy())
    assert done_events(call) == [RecordingDone(str(tmp_path / "max.wav"), 0.5, "max_length")]
    assert len(read_pcm(tmp_path / "max.wav")) == 4000


def test_finish_on_key_stops(tmp_path) -> None:
    rig = AudioRig(recording_plugin)
    call = rig.call()
    call.start_recording(str(tmp_path / "key.wav"), finish_on_key="#*")
    rig.feed(call, silence(0.2))
    call.report_dtmf("5", "rfc4733")
    assert "recording" in call.data
    call.report_dtmf("#", "rfc4733")
    assert [e.reason for e in done_events(call)] == ["key"]
    assert len(read_pcm(tmp_path / "key.wav")) == 1600


def test_silence_timeout_by_level(tmp_path) -> None:
    rig = AudioRig(recording_plugin)
    call = rig.call()
    call.start_recording(str(tmp_path / "quiet.wav"), silence_timeout=1.0)
    rig.feed(call, np.concatenate([noise_frames(25).reshape(-1), silence(3.0)]))
    (event,) = done_events(call)
    assert event.reason == "silence" and event.duration == pytest.approx(1.5)


def test_silence_timeout_uses_vad_state(tmp_path) -> None:
    rig = AudioRig(vad_plugin, recording_plugin)
    call = rig.call()
    call.start_recording(str(tmp_path / "vad.wav"), silence_timeout="1s")
    spoken = speech("Hello, I would like to leave a message for Anna.")
    rig.feed(call, np.concatenate([silence(0.3), spoken, silence(3.0)]))
    (event,) = done_events(call)
    assert event.reason == "silence"
    # speech kept the recording open: it ends one timeout after the caller's last voiced frame
    last_voice = call.data["vad"]["last_voice"]
    assert event.duration == pytest.approx(last_voice + 1.0, abs=0.03)
    assert event.duration > 0.3 + len(spoken) / 8000 - 0.5


def test_repair_wav_fixes_a_stale_header(tmp_path) -> None:
    path = tmp_path / "crashed.wav"
    writer = recording_plugin.WavWriter(path, 2)
    writer.write(noise_frames(30).reshape(-1, 2))
    writer._file.flush()  # data on disk, header still says 0 bytes: as after a crash
    assert recording_plugin.repair_wav(path) == 30 * 80
    with wave.open(str(path)) as wav:
        assert wav.getnframes() == 30 * 80 and wav.getnchannels() == 2
    with open(path, "ab") as f:  # a torn last sample frame is cut off
        f.write(b"\x01\x02\x03")
    assert recording_plugin.repair_wav(path) == 30 * 80
    assert path.stat().st_size == 44 + 30 * 320


def test_repair_wav_refuses_non_wav(tmp_path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError):
        recording_plugin.repair_wav(junk)



def test_startup_hook_repairs_every_recording_a_crash_left(tmp_path, caplog) -> None:
    from ivr.plugins import make_plugin_manager

    nested = tmp_path / "2026" / "crashed.wav"
    nested.parent.mkdir()
    writer = recording_plugin.WavWriter(nested, 1)
    writer.write(noise_frames(10).reshape(-1, 1))
    writer._file.flush()  # the header still says 0 bytes
    (tmp_path / "junk.wav").write_bytes(b"not a wav file at all")
    pm = make_plugin_manager(entry_points=False, environ={})
    pm.hook.ivr_startup(config={}, recordings=tmp_path)
    with wave.open(str(nested)) as wav:
        assert wav.getnframes() == 10 * 160
    assert "cannot repair" in caplog.text and "junk.wav" in caplog.text
    pm.hook.ivr_startup(config={}, recordings=tmp_path / "missing")  # no folder yet: nothing to do

RECORDER = textwrap.dedent(
    """
    import signal, sys, time
    sys.path[:0] = [{root!r}]
    import numpy as np
    import ivr_plugins.recording as recording_plugin
    from ivr.testing import AudioRig

    rig = AudioRig(recording_plugin)
    call = rig.call("sub")
    # what the engine does on SIGTERM: stop the recordings, then exit
    signal.signal(signal.SIGTERM, lambda *_: (call.stop_recording("shutdown"), sys.exit(0)))
    call.start_recording({path!r}, stereo={stereo})
    rng = np.random.default_rng(7)
    for tick in range({ticks}):
        rig.step([call], rng.integers(-20000, 20000, (1, 160), dtype=np.int16))
    print("ready", flush=True)
    time.sleep(30)
    """
)


def run_recorder(path: Path, ticks: int, stereo: bool, how: int) -> None:
    script = RECORDER.format(root=str(ROOT), path=str(path),
                             stereo=stereo, ticks=ticks)  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(how)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def expected_caller_audio(ticks: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.concatenate([rng.integers(-20000, 20000, (1, 160), dtype=np.int16)[0] for _ in range(ticks)])


def test_sigterm_leaves_a_finalised_file(tmp_path) -> None:
    path = tmp_path / "term.wav"
    run_recorder(path, 77, stereo=True, how=signal.SIGTERM)
    recorded = read_pcm(path)
    assert recorded.shape == (77 * 160, 2)
    assert np.array_equal(recorded[:, 0], expected_caller_audio(77))
    assert json.loads(path.with_suffix(".json").read_text())["end_reason"] == "shutdown"


def test_sigkill_is_recovered_by_repair_wav(tmp_path) -> None:
    path = tmp_path / "kill.wav"
    run_recorder(path, 130, stereo=False, how=signal.SIGKILL)  # 2.6 s of audio
    with open(path, "rb") as f:
        header_bytes = int.from_bytes(f.read(44)[40:44], "little")
    on_disk = path.stat().st_size - 44
    # flushed with the header every second: the header is at most a second behind the data
    assert 2 * 16000 <= header_bytes <= on_disk <= header_bytes + 16000
    frames = recording_plugin.repair_wav(path)
    assert frames == on_disk // 2
    assert np.array_equal(read_pcm(path), expected_caller_audio(130)[:frames])
    assert json.loads(path.with_suffix(".json").read_text())["end_reason"] == "recovered"
