"""The dtmf plugin: in-band detector limits on sox-made tones, talk-off on espeak-ng speech,
and merging of reports from several sources."""

from __future__ import annotations

import numpy as np
import pytest

import ivr_plugins.dtmf as dtmf_plugin
from ivr.testing import AudioRig, events
from tests.helpers.audio import (
    PARAGRAPHS,
    VOICES,
    add_noise,
    dtmf,
    silence,
    speech,
    tones,
)

ALL_KEYS = "123A456B789C*0#D"


def detect(signal: np.ndarray, config: dict | None = None) -> str:
    rig = AudioRig(dtmf_plugin, config=config)
    call = rig.call()
    rig.feed(call, signal)
    return "".join(call.digits)


def keyed(keys: str, on: float = 0.1, off: float = 0.1, **tone: float) -> np.ndarray:
    parts = [silence(off)]
    for key in keys:
        parts += [dtmf(key, on, **tone), silence(off)]
    return np.concatenate(parts)


def test_each_of_the_16_keys_clean() -> None:
    assert detect(keyed(ALL_KEYS)) == ALL_KEYS


@pytest.mark.parametrize("lead_ms", [0, 2.5, 5, 7.5, 10, 12.5, 15, 17.5])
def test_a_40ms_tone_is_detected_at_any_alignment(lead_ms: float) -> None:
    signal = np.concatenate([silence(0.04 + lead_ms / 1000), dtmf("5", 0.04), silence(0.1)])
    assert detect(signal) == "5"


@pytest.mark.parametrize("lead_ms", [0, 5, 10, 15])
def test_a_50ms_pause_separates_two_presses_of_one_key(lead_ms: float) -> None:
    signal = np.concatenate([silence(0.04 + lead_ms / 1000), dtmf("7", 0.05), silence(0.05),
                             dtmf("7", 0.05), silence(0.1)])  # fmt: skip
    assert detect(signal) == "77"


def test_a_long_press_is_one_digit() -> None:
    assert detect(keyed("9", on=1.5)) == "9"


@pytest.mark.parametrize(("twist_db", "accepted"), [(8, True), (-4, True), (10, False), (-6, False)])
def test_twist_limits(twist_db: float, accepted: bool) -> None:
    # twist = row (low group) level minus column (high group) level
    row, col = (-8.0, -8.0 - twist_db) if twist_db > 0 else (-8.0 + twist_db, -8.0)
    signal = keyed("1D5#", row_dbfs=row, col_dbfs=col)
    assert detect(signal) == ("1D5#" if accepted else "")


def test_detects_in_white_noise_at_15db_snr() -> None:
    signal = keyed(ALL_KEYS, on=0.06, off=0.06)
    assert detect(add_noise(signal, 15.0)) == ALL_KEYS


@pytest.mark.parametrize(("deviation", "accepted"), [(0.015, True), (-0.015, True), (0.035, False), (-0.035, False)])
def test_frequency_deviation_limits(deviation: float, accepted: bool) -> None:
    assert detect(keyed(ALL_KEYS, deviation=deviation)) == (ALL_KEYS if accepted else "")


@pytest.mark.parametrize("voice", VOICES)
def test_no_talk_off_on_speech(voice: str) -> None:
    signal = np.concatenate([speech(text, voice) for text in PARAGRAPHS])
    assert len(signal) > 30 * 8000  # half a minute or more of speech per voice
    assert detect(signal) == ""


def test_calls_in_one_batch_are_detected_independently() -> None:
    rig = AudioRig(dtmf_plugin)
    calls = [rig.call(f"c{i}") for i in range(3)]
    signals = [keyed("12"), keyed("3", on=0.2), silence(0.5)]
    length = max(len(s) for s in signals)
    padded = np.stack([np.concatenate([s, silence((length - len(s)) / 8000)]) for s in signals])
    for start in range(0, length - 159, 160):
        rig.step(calls, padded[:, start : start + 160].copy())
    assert ["".join(c.digits) for c in calls] == ["12", "3", ""]


def test_inband_detection_can_be_switched_off() -> None:
    assert detect(keyed("5"), config={"plugins": {"dtmf": {"inband": False}}}) == ""


def test_rfc4733_and_inband_of_one_press_report_one_digit() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    rig.feed(call, silence(0.1))
    # RFC 4733 start event arrives as the tone starts; the detector hears it ~30 ms later
    rig.pm.hook.ivr_dtmf_received(call=call, digit="4", source="rfc4733", duration_ms=None)
    rig.feed(call, np.concatenate([dtmf("4", 0.12), silence(0.2)]))
    assert call.digits == ["4"]


def test_late_rfc4733_end_report_of_a_long_press_is_merged() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    rig.feed(call, np.concatenate([silence(0.1), dtmf("6", 1.0)]))
    # some peers report only the end event: 1 s after the in-band onset, carrying the duration
    rig.pm.hook.ivr_dtmf_received(call=call, digit="6", source="rfc4733", duration_ms=1000)
    rig.feed(call, silence(0.2))
    assert call.digits == ["6"]


def test_two_presses_from_one_source_are_two_digits() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    for _ in range(2):
        rig.pm.hook.ivr_dtmf_received(call=call, digit="8", source="rfc4733", duration_ms=80)
        rig.now += 0.1
    assert call.digits == ["8", "8"]


def test_same_key_from_other_source_after_the_window_is_a_new_press() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    rig.pm.hook.ivr_dtmf_received(call=call, digit="8", source="rfc4733", duration_ms=None)
    rig.now += 0.25
    rig.pm.hook.ivr_dtmf_received(call=call, digit="8", source="info", duration_ms=None)
    rig.now += 0.40
    rig.pm.hook.ivr_dtmf_received(call=call, digit="8", source="inband", duration_ms=None)
    assert call.digits == ["8", "8"]
    assert [e.source for e in _dtmf_events(call)] == ["rfc4733", "inband"]


def test_different_keys_from_different_sources_are_not_merged() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    rig.pm.hook.ivr_dtmf_received(call=call, digit="1", source="rfc4733", duration_ms=None)
    rig.pm.hook.ivr_dtmf_received(call=call, digit="2", source="inband", duration_ms=None)
    assert call.digits == ["1", "2"]


def test_call_end_releases_state() -> None:
    rig = AudioRig(dtmf_plugin)
    call = rig.call()
    rig.feed(call, keyed("1"))
    assert "dtmf" in call.data
    rig.pm.hook.ivr_call_ended(call=call, reason="remote_hangup")
    assert "dtmf" not in call.data


def _dtmf_events(call) -> list:
    from ivr.call import DtmfEvent


    return [e for e in events(call) if isinstance(e, DtmfEvent)]


def test_a_key_under_a_steady_tone_on_another_row_is_that_key() -> None:
    # A musical partial on 698.5 Hz (F5, 0.2 % from the 697 Hz row) plays all along, as loud as the
    # key's own row tone: the strict path rejects every window (three tones), the talk-down path
    # takes the row tone that is *new* (941 Hz), not the strongest one, and hears "0", never "2".
    partial = tones([(698.5, -12.0)], 1.0)[:8000]
    key = np.concatenate([silence(0.4), dtmf("0", 0.1, row_dbfs=-12.0, col_dbfs=-12.0), silence(0.5)])[:8000]
    assert detect(partial + key) == "0"


def test_calls_that_stop_listening_do_not_keep_old_batches_alive() -> None:
    """Each listening call's detector state is a row of the batch's matrix; a call that stops
    listening (its peer sent a key out of band) or ends must not keep that whole matrix alive
    (400 calls once pinned 400 matrices, 120 MB)."""
    from ivr.audio import FRAME_SAMPLES
    from ivr.call import AudioBatch, CallContext

    class NoHooks:
        def __getattr__(self, name):
            return lambda **kwargs: None

    dtmf_plugin.ivr_configure({})
    calls = [CallContext(f"pin-{i}", NoHooks()) for i in range(50)]
    for tick in range(60):
        if 0 < tick <= len(calls):
            dtmf_plugin._state(calls[tick - 1]).inband = False
        dtmf_plugin.ivr_audio_in(AudioBatch(calls, np.zeros((len(calls), FRAME_SAMPLES), np.int16),
                                            tick * 0.02, tick))
    pinned = {id(dtmf_plugin._state(call).memory.base) for call in calls
              if dtmf_plugin._state(call).memory.base is not None}
    assert len(pinned) <= 1  # at most the last batch's own matrix


# --- durations off the 20 ms grid, short tones and short pauses (docs/plugins.md) --------------

_LEADS_MS = [0, 2.5, 5, 7.5, 10, 12.5, 15, 17.5]  # every alignment against the 10 ms window hop


@pytest.mark.parametrize("on_ms", [30, 35, 45, 55, 65, 73])
@pytest.mark.parametrize("lead_ms", _LEADS_MS)
def test_tones_of_30ms_and_more_off_the_20ms_grid_are_one_press(on_ms: int, lead_ms: float) -> None:
    # Q.24 requires 40 ms to be taken; the detector promises 30 ms (two windows in a row).
    signal = np.concatenate([silence(0.04 + lead_ms / 1000), dtmf("5", on_ms / 1000), silence(0.1)])
    assert detect(signal) == "5"


@pytest.mark.parametrize("on_ms", [5, 10, 15])
@pytest.mark.parametrize("lead_ms", _LEADS_MS)
def test_tones_of_15ms_or_less_are_never_a_press(on_ms: int, lead_ms: float) -> None:
    signal = np.concatenate([silence(0.04 + lead_ms / 1000), dtmf("5", on_ms / 1000), silence(0.1)])
    assert detect(signal) == ""


@pytest.mark.parametrize("off_ms", [30, 35, 45])
@pytest.mark.parametrize("lead_ms", _LEADS_MS)
def test_pauses_of_30ms_and_more_separate_two_presses(off_ms: int, lead_ms: float) -> None:
    signal = np.concatenate([silence(0.04 + lead_ms / 1000), dtmf("7", 0.045), silence(off_ms / 1000),
                             dtmf("7", 0.055), silence(0.1)])  # fmt: skip
    assert detect(signal) == "77"


def test_a_pause_of_10ms_does_not_split_a_press() -> None:
    # A short drop-out (a lost packet concealed by silence) inside one press is not a release.
    signal = np.concatenate([silence(0.04), dtmf("3", 0.2), silence(0.01), dtmf("3", 0.2), silence(0.1)])
    assert detect(signal) == "3"
