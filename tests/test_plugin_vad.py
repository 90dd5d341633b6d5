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


# -- the start/end rules frame by frame (issue 23) -----------------------------------------------
# webrtcvad's verdict is replaced by a marker in the frame, so every rule of the plugin (the start
# window, the level floor, the hang-over, pre-roll and tail, the cap) is checked to the frame.
# Frames: V(n) loud and voiced, U(n) loud and unvoiced, Q(n) quiet (below the -55 dBFS floor, never
# shown to the classifier); n marks the frame so the utterance's content can be checked.


class FakeVad:
    """webrtcvad.Vad's interface: a frame is voiced when its first sample is positive and loud."""

    modes: list[int] = []
    asked: list[int] = []

    def __init__(self, mode: int) -> None:
        FakeVad.modes.append(mode)

    def is_speech(self, frame: bytes, rate: int) -> bool:
        assert rate == 8000 and len(frame) == 320
        first = int(np.frombuffer(frame[:2], dtype=np.int16)[0])
        FakeVad.asked.append(first)
        return first >= 1000


def V(n: int = 0) -> np.ndarray:
    return np.full(160, 1000 + n, np.int16)


def U(n: int = 0) -> np.ndarray:
    return np.full(160, -1000 - n, np.int16)


def Q(n: int = 0) -> np.ndarray:
    return np.full(160, n, np.int16)  # n < 50: far below the floor


@pytest.fixture
def fake_vad(monkeypatch: pytest.MonkeyPatch):
    FakeVad.modes, FakeVad.asked = [], []
    monkeypatch.setattr(vad_plugin.webrtcvad, "Vad", FakeVad)
    yield FakeVad
    vad_plugin.ivr_configure({})


def drive(rig: AudioRig, call, script: list[np.ndarray]) -> list[tuple[str, float, object]]:
    fired = []
    for frame in script:
        rig.step([call], frame[None, :])
        fired += [(e.kind, rig.now, e.utterance) for e in events(call) if isinstance(e, SpeechEvent)]
    return fired


def test_speech_starts_on_3_voiced_of_the_last_5_frames(fake_vad) -> None:
    rig = AudioRig(vad_plugin)
    call = rig.call()
    # two voiced frames, then they age out of the window (4 frames later only one is left)
    fired = drive(rig, call, [V(), Q(), Q(), Q(), V(), Q(), Q(), Q(), Q(), V()])
    assert fired == []
    assert call.voice is call.data["vad"]
    assert call.data["vad"]["last_voice"] == pytest.approx(0.2)
    assert call.data["vad"]["speaking"] is False and call.data["vad"]["speech_start"] is None
    # the VoiceActivity keys are there from the first frame, before any speech
    assert {key: call.data["vad"][key] for key in ("last_speech_end", "voiced_ms", "utterance", "utterance_seq")} == {
        "last_speech_end": None, "voiced_ms": 0, "utterance": None, "utterance_seq": 0}
    # V U V U V: three voiced of five (loud unvoiced frames move the window too)
    FakeVad.modes, FakeVad.asked = [], []
    rig = AudioRig(vad_plugin)
    call = rig.call()
    fired = drive(rig, call, [Q(), V(), U(), V(), U(), V()])
    assert [(kind, round(at, 2)) for kind, at, _ in fired] == [("start", 0.12)]
    state = call.data["vad"]
    assert state["speaking"] is True
    assert state["speech_start"] == pytest.approx(0.02)  # the oldest voiced frame in the window began there
    assert state["voiced_ms"] == 60
    assert state["last_voice"] == pytest.approx(0.12)
    assert FakeVad.modes == [2]  # default aggressiveness
    assert FakeVad.asked == [1000, -1000, 1000, -1000, 1000]  # quiet frames never asked



def test_start_window_holds_exactly_start_window_frames(fake_vad) -> None:
    rig = AudioRig(vad_plugin)
    call = rig.call()
    # V V, then three unvoiced: the window (5) still holds both Vs; one more V starts speech
    assert drive(rig, call, [V(), V(), U(), U(), V()])[0][1] == pytest.approx(0.1)
    call = rig.call("b")
    # V V, then four unvoiced (loud): the first V has left the window; V makes only 2 of 5
    assert drive(rig, call, [V(), V(), U(), U(), U(), V()]) == []
    call = rig.call("c")
    # the same with quiet frames in between: they age the window as well
    assert drive(rig, call, [V(), V(), Q(), Q(), Q(), V(), V()]) == []
    assert drive(rig, call, [V()])[0][0] == "start"


def test_start_settings_and_aggressiveness_are_used(fake_vad) -> None:
    rig = AudioRig(vad_plugin, config={"plugins": {"vad": {"aggressiveness": 0, "start_frames": 2,
                                                           "start_window": 2}}})
    call = rig.call()
    assert drive(rig, call, [V(), U(), V()]) == []
    fired = drive(rig, call, [V()])
    assert fired[0][0] == "start" and call.data["vad"]["voiced_ms"] == 40
    assert FakeVad.modes == [0]
    rig = AudioRig(vad_plugin, config={"plugins": {"vad": {"aggressiveness": 3, "start_frames": 1}}})
    call = rig.call()
    assert drive(rig, call, [V()])[0][0] == "start"
    assert FakeVad.modes[-1] == 3


def test_speech_ends_after_the_hangover_with_preroll_and_tail(fake_vad) -> None:
    config = {"plugins": {"vad": {"hangover_ms": 100, "preroll_ms": 140, "tail_ms": 40}}}
    rig = AudioRig(vad_plugin, config=config)
    call = rig.call()
    script = [Q(n) for n in range(1, 11)] + [V(1), V(2), V(3), U(1), V(4)] + [Q(20 + n) for n in range(5)]
    fired = drive(rig, call, script)
    assert [(kind, round(at, 2)) for kind, at, _ in fired] == [("start", 0.26), ("end", 0.4)]
    state = call.data["vad"]
    assert state["speaking"] is False
    assert state["last_voice"] == pytest.approx(0.3) and state["last_speech_end"] == pytest.approx(0.3)
    assert state["speech_start"] == pytest.approx(0.2)
    assert state["voiced_ms"] == 80  # 3 at the start + V(4); the unvoiced U(1) is not counted
    assert state["utterance_seq"] == 1
    utterance = state["utterance"]
    assert utterance is fired[1][2] and fired[0][2] is None
    assert utterance.dtype == np.int16 and utterance.flags.writeable
    # pre-roll (7 frames = 140 ms: Q4..Q10, V1..V3 are the last 7), the speech, a 2-frame tail
    firsts = utterance.reshape(-1, 160)[:, 0].tolist()
    assert firsts == [7, 8, 9, 10, 1001, 1002, 1003, -1001, 1004, 20, 21]


def test_preroll_is_at_least_the_start_window(fake_vad) -> None:
    rig = AudioRig(vad_plugin, config={"plugins": {"vad": {"preroll_ms": 0, "tail_ms": 0, "hangover_ms": 20}}})
    call = rig.call()
    fired = drive(rig, call, [Q(1), Q(2), Q(3), V(1), V(2), V(3), Q(4)])
    assert [kind for kind, _, _ in fired] == ["start", "end"]
    firsts = call.data["vad"]["utterance"].reshape(-1, 160)[:, 0].tolist()
    assert firsts == [2, 3, 1001, 1002, 1003]  # the 5-frame start window, no tail


def test_the_hangover_restarts_at_each_voiced_frame(fake_vad) -> None:
    rig = AudioRig(vad_plugin, config={"plugins": {"vad": {"hangover_ms": 60}}})
    call = rig.call()
    fired = drive(rig, call, [V(), V(), V(), Q(), Q(), V(), Q(), U()])
    assert [kind for kind, _, _ in fired] == ["start"]
    assert call.data["vad"]["voiced_ms"] == 80
    fired = drive(rig, call, [Q()])
    assert [(kind, round(at, 2)) for kind, at, _ in fired] == [("end", 0.18)]
    assert call.data["vad"]["last_speech_end"] == pytest.approx(0.12)


def test_a_new_utterance_needs_a_fresh_start_window(fake_vad) -> None:
    rig = AudioRig(vad_plugin, config={"plugins": {"vad": {"hangover_ms": 20}}})
    call = rig.call()
    assert [k for k, _, _ in drive(rig, call, [V(), V(), V(), Q()])] == ["start", "end"]
    assert drive(rig, call, [V(), V()]) == []  # the window was emptied at the end
    fired = drive(rig, call, [V(), Q()])
    assert [k for k, _, _ in fired] == ["start", "end"]
    state = call.data["vad"]
    assert state["utterance_seq"] == 2 and state["voiced_ms"] == 60


def test_a_long_utterance_keeps_only_its_first_part(fake_vad) -> None:
    rig = AudioRig(vad_plugin, config={"plugins": {"vad": {"max_utterance_ms": 160, "hangover_ms": 60,
                                                           "tail_ms": 0}}})
    call = rig.call()
    fired = drive(rig, call, [V(n) for n in range(1, 11)] + [Q(), Q(), Q()])
    assert [k for k, _, _ in fired] == ["start", "end"]
    firsts = call.data["vad"]["utterance"].reshape(-1, 160)[:, 0].tolist()
    assert firsts == [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008]  # 160 ms, nothing trimmed
    assert call.data["vad"]["voiced_ms"] == 200


def test_the_level_floor_is_inclusive_and_configurable(fake_vad) -> None:
    rig = AudioRig(vad_plugin, config={"plugins": {"vad": {"min_level_dbfs": 0.0}}})
    call = rig.call()
    drive(rig, call, [np.full(160, -32767, np.int16), np.full(160, -32768, np.int16)])
    assert FakeVad.asked == [-32768]  # exactly at full scale (mean power 32768**2): loud
    rig = AudioRig(vad_plugin)
    call = rig.call()
    # -55 dBFS is a mean power of about 3395.5: 58 is above it (3364 below, 3481 above... 59)
    drive(rig, call, [np.full(160, 58, np.int16), np.full(160, 59, np.int16)])
    assert FakeVad.asked == [-32768, 59]


def test_frames_of_a_batch_go_to_their_own_calls(fake_vad) -> None:
    rig = AudioRig(vad_plugin, config={"plugins": {"vad": {"hangover_ms": 20}}})
    quiet, talker = rig.call("a"), rig.call("b")
    for n in range(3):
        rig.step([quiet, talker], np.stack([Q(n), V(n)]))
    assert [e.kind for e in events(talker)] == ["start"] and events(quiet) == []
    rig.step([quiet, talker], np.stack([V(9), Q(9)]))
    ended = [e for e in events(talker)]
    assert [e.kind for e in ended] == ["end"]
    assert ended[0].utterance.reshape(-1, 160)[:, 0].tolist() == [1000, 1001, 1002, 9]  # b only: a's voiced V(9) is not in it
    assert len(ended[0].utterance) == 4 * 160


def test_call_end_releases_the_state(fake_vad) -> None:
    rig = AudioRig(vad_plugin)
    call = rig.call()
    drive(rig, call, [V()])
    assert call.voice is call.data["vad"]
    rig.end(call)
    assert "vad" not in call.data and call.voice is None
    other = rig.call("other")
    other.voice = "kept"
    rig.end(other)  # a call the plugin never saw: nothing to release
    assert other.voice == "kept"


def test_configuration_limits_and_defaults_restored(fake_vad) -> None:
    for bad in ({"aggressiveness": -1}, {"aggressiveness": 4}, {"start_frames": 0},
                {"start_frames": 6}, {"start_frames": 3, "start_window": 2}):
        with pytest.raises(ValueError):
            vad_plugin.ivr_configure({"plugins": {"vad": bad}})
    for good in ({"aggressiveness": 0}, {"aggressiveness": 3}, {"start_frames": 1},
                 {"start_frames": 5}, {"start_frames": 4, "start_window": 4}):
        vad_plugin.ivr_configure({"plugins": {"vad": good}})
    vad_plugin.ivr_configure({"plugins": {"vad": {"hangover_ms": 30}}})
    assert vad_plugin._tuning.hangover_frames == 2  # 30 ms rounds to 2 frames
    vad_plugin.ivr_configure({"plugins": {"vad": {"hangover_ms": 0}}})
    assert vad_plugin._tuning.hangover_frames == 1  # never less than one frame
    vad_plugin.ivr_configure({"plugins": None})
    assert vad_plugin._tuning == vad_plugin._Tuning.from_settings(vad_plugin._DEFAULTS)
    assert vad_plugin._tuning.hangover_frames == 30 and vad_plugin._tuning.preroll_frames == 15
