"""The dtmf plugin's ``inband`` modes (auto / on / off) and the detector's energy gate."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import ivr_plugins.dtmf as dtmf_plugin
from ivr.testing import AudioRig
from tests.helpers.audio import PARAGRAPHS, add_noise, dtmf, silence, speech


def _press(rig: AudioRig, call, key: str, source: str) -> None:
    """One key press: the out-of-band report (if any) as the tone starts, then the tone itself."""
    if source != "inband":
        rig.pm.hook.ivr_dtmf_received(call=call, digit=key, source=source, duration_ms=None)
    rig.feed(call, np.concatenate([dtmf(key, 0.12), silence(0.4)]))


@pytest.mark.parametrize("source", ["rfc4733", "info"])
def test_auto_stops_inband_after_an_out_of_band_key(source: str) -> None:
    rig = AudioRig(dtmf_plugin)  # auto is the default
    call = rig.call()
    _press(rig, call, "1", "inband")  # tones only: heard in band
    _press(rig, call, "2", source)  # both ways: one press
    assert call.data["dtmf"].inband is False
    _press(rig, call, "3", "inband")  # tones only now: no longer listened for
    assert call.digits == ["1", "2"]


def test_auto_keeps_inband_on_for_a_peer_that_never_sends_out_of_band() -> None:
    rig = AudioRig(dtmf_plugin, config={"plugins": {"dtmf": {"inband": "auto"}}})
    call = rig.call()
    for key in "456":
        _press(rig, call, key, "inband")
    assert call.digits == ["4", "5", "6"]
    assert call.data["dtmf"].inband is True


def test_auto_is_per_call() -> None:
    rig = AudioRig(dtmf_plugin)
    out_of_band, tones_only = rig.call("c1"), rig.call("c2")
    rig.pm.hook.ivr_dtmf_received(call=out_of_band, digit="9", source="rfc4733", duration_ms=None)
    signal = np.concatenate([silence(0.1), dtmf("7", 0.12), silence(0.3)])
    frames = signal[: len(signal) // 160 * 160].reshape(-1, 160)
    for frame in frames:
        rig.step([out_of_band, tones_only], np.stack([frame, frame]))
    assert out_of_band.digits == ["9"]
    assert tones_only.digits == ["7"]


def test_auto_merges_a_press_heard_in_band_before_its_rfc4733_report() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    rig.feed(call, np.concatenate([silence(0.1), dtmf("6", 0.3)]))
    assert call.digits == ["6"]  # in band first
    rig.pm.hook.ivr_dtmf_received(call=call, digit="6", source="rfc4733", duration_ms=300)
    rig.feed(call, silence(0.2))
    assert call.digits == ["6"]


@pytest.mark.parametrize("on", ["on", True])
def test_on_keeps_detecting_after_out_of_band_keys(on: object) -> None:
    rig = AudioRig(dtmf_plugin, config={"plugins": {"dtmf": {"inband": on}}})
    call = rig.call()
    _press(rig, call, "2", "rfc4733")
    _press(rig, call, "3", "inband")
    assert call.digits == ["2", "3"]
    assert call.data["dtmf"].inband is True


@pytest.mark.parametrize("off", ["off", False])
def test_off_never_detects(off: object) -> None:
    rig = AudioRig(dtmf_plugin, config={"plugins": {"dtmf": {"inband": off}}})
    call = rig.call()
    _press(rig, call, "5", "inband")
    _press(rig, call, "8", "rfc4733")
    assert call.digits == ["8"]


def test_unknown_mode_is_logged_and_read_as_auto(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ivr_plugins.dtmf"):
        rig = AudioRig(dtmf_plugin, config={"plugins": {"dtmf": {"inband": "sometimes"}}})
    assert "sometimes" in caplog.text
    call = rig.call()
    _press(rig, call, "4", "inband")
    _press(rig, call, "5", "rfc4733")
    _press(rig, call, "6", "inband")
    assert call.digits == ["4", "5"]


# -- energy gate ----------------------------------------------------------------------------


def _buffers(signal: np.ndarray) -> np.ndarray:
    """The detector's (N, 400) buffers over ``signal``: 240 old + 160 new samples per tick."""
    ticks = (len(signal) - dtmf_plugin.HISTORY) // 160
    return np.stack([signal[i * 160 : i * 160 + dtmf_plugin.HISTORY + 160] for i in range(ticks)]).astype(np.float64)


def _run(classify, buffers: np.ndarray) -> np.ndarray:
    """``classify(buffer, memory)`` tick by tick over ``buffers``, the long path's memory carried on."""
    memory, keys = dtmf_plugin.new_memory()[None, :], []
    for buffer in buffers:
        found, memory = classify(buffer[None, :], memory)
        keys.append(found[0])
    return np.array(keys)


def test_gate_skips_silence_and_quiet_noise_without_analysing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    analysed: list[int] = []
    real = dtmf_plugin.classify_windows
    monkeypatch.setattr(dtmf_plugin, "classify_windows", lambda b: (analysed.append(len(b)), real(b))[1])
    quiet = np.random.default_rng(1).normal(0, 30, 4000)  # about -61 dBFS of hiss
    signal = np.concatenate([silence(0.5), quiet, dtmf("1", 0.1), silence(0.5)])
    keys = _run(dtmf_plugin.gated_classify, _buffers(signal))
    assert sum(analysed) <= 10  # the ticks that overlap the 100 ms tone, not the 1.5 s around it
    assert 0 in keys  # "1" is index 0


@pytest.mark.parametrize("level_dbfs", [-38.0, -30.0, -10.0])
def test_gate_keeps_keys_down_to_the_level_limit(level_dbfs: float) -> None:
    signal = np.concatenate([silence(0.1), dtmf("#", 0.2, row_dbfs=level_dbfs, col_dbfs=level_dbfs),
                             silence(0.1)])
    buffers = _buffers(signal)
    gated = _run(dtmf_plugin.gated_classify, buffers)
    np.testing.assert_array_equal(gated, _run(dtmf_plugin.analyse, buffers))
    assert (gated == 14).sum() >= 4  # "#" held for 20 windows


def test_gate_agrees_with_the_full_analysis_on_keys_noise_and_speech() -> None:
    keys = np.concatenate([np.concatenate([dtmf(k, 0.06, row_dbfs=-30 - i, col_dbfs=-32 - i), silence(0.05)])
                           for i, k in enumerate("123A456B789C*0#D")])
    signal = np.concatenate([add_noise(keys, 15.0), speech(PARAGRAPHS[0]), keys * 0.012])
    buffers = _buffers(signal)
    np.testing.assert_array_equal(_run(dtmf_plugin.gated_classify, buffers), _run(dtmf_plugin.analyse, buffers))


# -- merging reports into presses, and the settings (issue 23) ----------------------------------


def _report(rig: AudioRig, call, digit: str, source: str, duration_ms: int | None = None) -> None:
    rig.pm.hook.ivr_dtmf_received(call=call, digit=digit, source=source, duration_ms=duration_ms)


def _at(rig: AudioRig, seconds: float) -> None:
    rig.now = seconds


def test_the_dedupe_window_is_inclusive_and_configurable() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    _report(rig, call, "5", "rfc4733")
    _at(rig, 0.3)
    _report(rig, call, "5", "info")  # exactly 300 ms later: the same press
    assert call.digits == ["5"]
    rig = AudioRig(dtmf_plugin, config={"plugins": {"dtmf": {"dedupe_window_ms": "100"}}})
    call = rig.call()
    _report(rig, call, "5", "rfc4733")
    _at(rig, 0.15)
    _report(rig, call, "5", "info")  # 150 ms: past a 100 ms window
    assert call.digits == ["5", "5"]
    dtmf_plugin.ivr_configure({})


def test_a_merged_report_keeps_the_press_open() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    _report(rig, call, "2", "rfc4733")
    _at(rig, 0.25)
    _report(rig, call, "2", "info")  # merged: the press was last seen now
    _at(rig, 0.5)
    _report(rig, call, "2", "inband")  # 250 ms after the INFO, 500 ms after the first report
    assert call.digits == ["2"]


def test_old_presses_are_forgotten_after_2s() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    _report(rig, call, "3", "rfc4733")
    _at(rig, 1.9)
    _report(rig, call, "3", "info", duration_ms=1700)  # an end report covering the press: merged
    assert call.digits == ["3"]
    _at(rig, 4.0)
    # began 100 ms after the press was last seen (1.9 s), but that is 2.1 s ago: forgotten
    _report(rig, call, "3", "inband", duration_ms=2000)
    assert call.digits == ["3", "3"]
    assert len(call.data["dtmf"].presses) == 1


def test_a_window_longer_than_2s_keeps_presses_as_long() -> None:
    rig = AudioRig(dtmf_plugin, config={"plugins": {"dtmf": {"dedupe_window_ms": 2500}}})
    call = rig.call()
    _report(rig, call, "4", "rfc4733")
    _at(rig, 2.4)
    _report(rig, call, "4", "info")
    assert call.digits == ["4"]
    dtmf_plugin.ivr_configure({})


def test_a_held_inband_tone_keeps_its_press_open_for_a_late_out_of_band_report() -> None:
    rig = AudioRig(dtmf_plugin, config={"plugins": {"dtmf": {"inband": "on"}}})
    call = rig.call()
    rig.feed(call, np.concatenate([silence(0.1), dtmf("6", 1.0)]))
    assert call.digits == ["6"]
    # the out-of-band report comes as the tone ends, with no duration: 1 s after the onset, but
    # the tone was heard until now
    _report(rig, call, "6", "rfc4733")
    assert call.digits == ["6"]
    rig.feed(call, silence(0.5))
    _report(rig, call, "6", "info")  # 500 ms after the tone: a new press
    assert call.digits == ["6", "6"]
    dtmf_plugin.ivr_configure({})


def test_parse_inband_mode() -> None:
    assert dtmf_plugin.parse_inband_mode(True) == "on"
    assert dtmf_plugin.parse_inband_mode(False) == "off"
    assert dtmf_plugin.parse_inband_mode(" OFF ") == "off"
    assert dtmf_plugin.parse_inband_mode("On") == "on"
    assert dtmf_plugin.parse_inband_mode("auto") == "auto"
    assert dtmf_plugin.parse_inband_mode(1) == "auto"  # not a mode: logged, auto


def test_off_mode_and_the_per_call_switch() -> None:
    rig = AudioRig(dtmf_plugin, config={"plugins": {"dtmf": {"inband": "off"}}})
    call = rig.call()
    _report(rig, call, "1", "rfc4733")
    assert call.data["dtmf"].inband is False  # off: a call's state never listens
    dtmf_plugin.ivr_configure({})
    rig = AudioRig(dtmf_plugin)
    quiet, listening = rig.call("a"), rig.call("b")
    rig.step([quiet, listening])
    quiet.data["dtmf"].inband = False  # one call's detector turned off alone
    signal = np.concatenate([dtmf("9", 0.1), silence(0.1)])
    for frame in signal.reshape(-1, 160):
        rig.step([quiet, listening], np.stack([frame, frame]))
    assert quiet.digits == [] and listening.digits == ["9"]
    for call in (quiet, listening):
        call.data["dtmf"].inband = False
    for frame in signal.reshape(-1, 160):
        rig.step([quiet, listening], np.stack([frame, frame]))
    assert listening.digits == ["9"]


def test_the_key_up_needs_3_windows_without_the_key() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    state = dtmf_plugin._state(call)
    for at, key in enumerate([5, 5, -1, -1, 5, -1, -1, -1, 5, 5]):
        dtmf_plugin._advance(call, state, key, at * 0.01)
    assert call.digits == ["5", "5"]  # two misses bridged; three release the key
    assert state.active == 5
    other = rig.call("other2")
    state = dtmf_plugin._state(other)
    # the long path: a confirmed window (+32) makes a press at once; a valid one (+16) needs a
    # second; one-tone-steady windows (+48) need three in a row
    dtmf_plugin._advance(other, state, 16 + 3, 0.0)
    assert other.digits == []
    dtmf_plugin._advance(other, state, 32 + 3, 0.01)
    assert other.digits == ["A"]
    third = rig.call("other3")
    state = dtmf_plugin._state(third)
    for at in range(2):
        dtmf_plugin._advance(third, state, 48 + 7, at * 0.01)
    assert third.digits == []
    dtmf_plugin._advance(third, state, 48 + 7, 0.02)
    assert third.digits == ["B"]


# -- the key-down / key-up state machine, window by window ----------------------------------------
# _advance takes one window's verdict: a strict key 0-15, -1 for none, a long-path key + 16 (valid),
# + 32 (confirmed) or + 48 (confirmed with one tone steady). Keys: "123A456B789C*0#D".


def _windows(verdicts: list[int], call=None, rig: AudioRig | None = None):
    rig = rig or AudioRig(dtmf_plugin)
    call = call or rig.call()
    state = dtmf_plugin._state(call)
    for n, key in enumerate(verdicts):
        dtmf_plugin._advance(call, state, key, n * 0.01)
    return call.digits, state


@pytest.mark.parametrize(("verdicts", "digits"), [
    ([5], []),  # one strict window is not a press
    ([5, 5], ["5"]),  # two in a row are
    ([15, 15], ["D"]),  # the last strict key
    ([0, 0], ["1"]),  # key 0 is a key, not "none"
    ([-1, -1, -1], []),  # no key, however long
    ([5, 6, 5], []),  # a different key in between starts the count again
    ([5, 21, 5], []),  # so does a long-path window of the same key: strict windows in a row only
    ([5, 21, 5, 5], ["5"]),
    ([16, 16], []),  # long-path windows that are only valid never make a press
    ([21, 5], []),  # a first window that is not strict does not count toward the strict two
    ([6, 21, 5], []),  # nor when the key changes with it
    ([16 + 5, 48 + 5, 48 + 5], []),  # a first window that confirms nothing does not count toward three
    ([6, 16 + 5, 48 + 5, 48 + 5], []),
    ([16 + 5, 32 + 5], ["5"]),  # a confirmed window makes it at once
    ([32], ["1"]),
    ([47], ["D"]),  # the last confirmed key
    ([48], []),  # one-tone-steady windows: three in a row
    ([48, 48], []),
    ([48, 48, 48], ["1"]),
    ([48 + 15, 48 + 15, 48 + 15], ["D"]),
    ([48, 48, 16, 48, 48], []),  # a window that confirms nothing starts that count again
    ([48, 32 + 0], ["1"]),
    ([48, 48, 32 + 0], ["1"]),
    ([5, 5, -1, -1, 5], ["5"]),  # two missing windows do not release the key
    ([5, 5, -1, -1, -1, 5], ["5"]),  # three do; then two windows again make a second press
    ([5, 5, -1, -1, -1, 5, 5], ["5", "5"]),
    ([5, 5, 6, 6], ["5"]),  # another key while one is held: the held one is released first
    ([5, 5, 6, 6, 6], ["5", "6"]),
    ([5, 5, -1, -1, -1, 6, 6, -1, -1, 6, 6], ["5", "6"]),  # a new press starts with no misses
])
def test_key_state_machine(verdicts: list[int], digits: list[str]) -> None:
    assert _windows(verdicts)[0] == digits


def test_a_window_with_the_held_key_clears_the_misses() -> None:
    digits, state = _windows([5, 5, -1, -1, 5, -1, -1])
    assert digits == ["5"] and state.active == 5 and state.misses == 2
    digits, state = _windows([5, 5, -1, -1, -1])
    assert state.active == -1


def test_the_held_key_keeps_its_press_open() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    _windows([9, 9], call, rig)
    (press,) = call.data["dtmf"].presses
    assert press.last_seen == 0.0 and press.sources == {"inband"}
    rig.now = 1.5
    dtmf_plugin._advance(call, call.data["dtmf"], 9 + 32, 1.5)  # the same key, long path: still held
    assert press.last_seen == 1.5 and call.digits == ["8"]
    rig.now = 1.6
    dtmf_plugin._advance(call, call.data["dtmf"], 10, 1.6)  # another key: a miss, nothing touched
    assert press.last_seen == 1.5


def test_new_memory_is_an_unheard_past_and_no_key() -> None:
    memory = dtmf_plugin.new_memory()
    assert memory.shape == (dtmf_plugin.MEMORY,)
    assert np.isinf(memory[dtmf_plugin._PAST]).all()
    assert memory[dtmf_plugin._PREV_KEY] == -1
    assert not memory[: dtmf_plugin.HISTORY].any() and memory[dtmf_plugin._AGE] == 0
    assert memory[dtmf_plugin._TICKS] == 0 and not memory[dtmf_plugin._PREV_FREQ].any()


def test_the_held_key_keeps_the_in_band_press_open_not_a_later_out_of_band_one() -> None:
    rig = AudioRig(dtmf_plugin, config={"plugins": {"dtmf": {"inband": "on"}}})
    call = rig.call()
    _windows([9, 9], call, rig)  # "8" in band at 0.0
    rig.now = 0.5
    _report(rig, call, "8", "rfc4733")  # 500 ms later: a press of its own
    inband_press, rfc4733_press = call.data["dtmf"].presses
    assert rfc4733_press.sources == {"rfc4733"}
    rig.now = 0.6
    dtmf_plugin._advance(call, call.data["dtmf"], 9, 0.6)
    assert inband_press.last_seen == 0.6 and rfc4733_press.last_seen == 0.5
    dtmf_plugin.ivr_configure({})
