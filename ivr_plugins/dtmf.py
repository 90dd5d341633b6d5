"""The ``dtmf`` plugin: one report per key press, and an in-band (Goertzel) DTMF detector.

Two jobs:

* **Merging.** A key press can reach us as RFC 4733 telephone-events, as SIP INFO and as tones in
  the audio, all at once. :func:`ivr_dtmf_received` gathers the reports of every source and calls
  ``call.report_dtmf()`` once per press: a report of the same key from a *different* source while
  the press is on or within ``dedupe_window_ms`` (default 300 ms) of it is the same press; two
  reports from the *same* source are two presses.
* **In-band detection** on the caller's audio, batched over all calls every tick (see
  :class:`InbandDetector`), reporting through ``ivr_dtmf_received(source="inband")`` so the merge
  applies to it as to any other source.

Configuration (``plugins.dtmf``): ``inband`` (``auto``, the default; ``on``/``true``;
``off``/``false``) and ``dedupe_window_ms`` (300). In ``auto`` mode the detector runs on a call
until an out-of-band source (RFC 4733 or SIP INFO) has delivered a key press on it, then stops for
that call: the peer has shown that it sends its keys out of band, so listening for tones too only
costs CPU (18 % of the server's busy time at 250 calls in the capacity benchmark). The merge
guarantee holds in every mode: a press heard in band before its out-of-band report is merged with
it as always, and once the detector is off for a call there is no second report to merge. ``on``
keeps the detector on every call for its whole life (peers that mix both ways), ``off`` never
runs it. A call's in-band detector can also be turned off alone: ``call.data["dtmf"].inband = False``.

Cost per tick: the detector is one batched matrix product over the frames of all listening calls,
and an energy gate first drops the frames too quiet to hold a valid key (silence and speech
pauses), so only the remaining rows are analysed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ivr.audio import FRAME_SAMPLES, SAMPLE_RATE
from ivr.call import AudioBatch, CallContext
from ivr.hookspecs import hookimpl
from ivr_plugins.tones import DTMF_COL_HZ, DTMF_KEYS, DTMF_ROW_HZ

log = logging.getLogger(__name__)

NAME = "dtmf"

# -- detector tuning ----------------------------------------------------------------------
# Analysis: 20 ms windows every 10 ms. Each window is two 15 ms Hann sub-windows 5 ms apart;
# the phase advance of a tone between them measures its frequency to ~1 Hz, far finer than the
# 50-67 Hz bins of a 20 ms DFT, which is what lets us tell 1.5 % (accept) from 3.5 % (reject).
SUB_LEN = 120  # samples in a sub-window (15 ms)
SUB_LAG = 40  # samples between the two sub-windows of a window (5 ms): unambiguous to +-100 Hz
HOP = FRAME_SAMPLES // 2  # window hop (10 ms): two windows per 20 ms tick
MIN_TONE_DBFS = -40.0  # peak level each of the two tones must reach
MAX_FREQ_DEVIATION = 0.025  # ITU-T Q.24: accept +-1.5 %, reject +-3.5 %; decide halfway
MAX_NORMAL_TWIST_DB = 9.0  # row (low group) above column: +8 dB accepted, +10 rejected
MAX_REVERSE_TWIST_DB = 5.0  # column above row: 4 dB accepted, 6 rejected
MIN_TONE_FRACTION = 0.8  # the two tones must carry this share of the window's power
MAX_HARMONIC_DB = -15.0  # 2nd harmonic vs its fundamental: voiced speech has them, DTMF not
MAX_SUBWINDOW_RATIO = 1.41  # amplitude change between sub-windows (3 dB): tone must be steady
# Talk-down (a key pressed while speech or music plays): a *weak* window may pass looser tests
# than the strict ones above, but a key needs WEAK_WINDOWS of them in a row (>= 40 ms of tone)
# where STRICT windows need ONSET_WINDOWS. The loose total-power test only counts the power in
# the DTMF band (bass, kick drums, the voice's low harmonics and sibilants no longer count against
# the key), and two new tests keep talk-off at zero: each tone must stand SIDE_MIN_DB above what
# the window sees SIDE_HZ either side of it (after cancelling both tones' own leakage there) --
# broadband interference is flat around the tone, a vowel's neighbouring harmonics are not -- and
# the frequency must be within 1.5 % (the ITU accept limit; the strict path still decides 1.5-3.5 %).
WEAK_FREQ_DEVIATION = 0.015
WEAK_SUBWINDOW_RATIO = 2.0  # 6 dB
WEAK_BAND_FRACTION = 0.3  # the two tones' share of the 533-1800 Hz power
WEAK_HARMONIC_DB = -10.0
SIDE_HZ = 133.0  # the first null of the sub-window's response: a steady tone leaks nothing there
SIDE_MIN_DB = 10.0
WEAK_WINDOWS = 4
_BAND_LO, _BAND_HI = 8, 28  # rfft bins (66.7 Hz) 533-1800 Hz: the DTMF tones' main lobes
# A valid key needs two tones of at least MIN_TONE_DBFS each, i.e. a window mean power of about
# A_min**2 (A_min**2 / 2 per tone), whatever the twist; partial cover of the window by a tone that
# still passes the steadiness test lowers that to ~0.7 A_min**2. The gate sits 6 dB under it, so
# it only ever skips windows the full analysis would reject anyway.
_MIN_TONE_AMPLITUDE = 32768.0 * 10 ** (MIN_TONE_DBFS / 20)
ENERGY_GATE_POWER = _MIN_TONE_AMPLITUDE**2 / 4
ONSET_WINDOWS = 2  # consecutive windows agreeing -> key down (always met by a 40 ms tone)
RELEASE_WINDOWS = 3  # consecutive windows without it -> key up (a 50 ms pause gives >= 3)

_FUNDAMENTALS = np.array(DTMF_ROW_HZ + DTMF_COL_HZ)
# 8 tones, their 8 2nd harmonics, and 2 x 8 side probes SIDE_HZ below and above each tone
_ANALYSIS_HZ = np.concatenate([_FUNDAMENTALS, 2 * _FUNDAMENTALS, _FUNDAMENTALS - SIDE_HZ, _FUNDAMENTALS + SIDE_HZ])
_HANN = np.hanning(SUB_LEN + 2)[1:-1]  # no zero end points: every sample counts
_HANN_SUM = float(_HANN.sum())
_HANN_SQ_SUM = float((_HANN**2).sum())
_n = np.arange(SUB_LEN)
_BASIS = _HANN[:, None] * np.exp(-2j * np.pi * np.outer(_n, _ANALYSIS_HZ) / SAMPLE_RATE)

# The window's response to a tone `delta` Hz off an analysis frequency, tabulated at 0.5 Hz:
# used to undo the attenuation of off-centre tones and to cancel a tone's leakage into the
# 2nd-harmonic bins (a row's harmonic can lie 58 Hz from a column tone: 2 x 697 vs 1336).
_RESP_STEP = 0.5
_RESP_SPAN = SAMPLE_RATE / 2
_RESP_TABLE = (
    np.exp(-2j * np.pi * np.outer(np.arange(-_RESP_SPAN, _RESP_SPAN + _RESP_STEP, _RESP_STEP), _n)
           / SAMPLE_RATE) @ _HANN
)  # fmt: skip


def _window_response(delta: np.ndarray) -> np.ndarray:
    """Complex response of the sub-window to a tone ``delta`` Hz from the analysed frequency."""
    pos = (np.clip(delta, -_RESP_SPAN, _RESP_SPAN - _RESP_STEP) + _RESP_SPAN) / _RESP_STEP
    low = np.floor(pos).astype(np.intp)
    frac = pos - low
    return _RESP_TABLE[low] * (1 - frac) + _RESP_TABLE[low + 1] * frac


def classify_windows(buffer: np.ndarray) -> np.ndarray:
    """Find the DTMF key in each 20 ms window of ``buffer`` ((N, 240) float: 80 old + 160 new).

    Returns an ``(N, 2)`` int array: for the windows ending 10 ms before and at the end of the
    buffer, the key's index into ``"123A456B789C*0#D"`` where the window passes the strict tests,
    that index + 16 where it only passes the weak (talk-down) ones, or -1 where no key is present.
    """
    subs = sliding_window_view(buffer, SUB_LEN, axis=1)[:, ::SUB_LAG]  # (N, 4, 120)
    spectrum = subs @ _BASIS  # (N, 4, 16), phase relative to each sub-window's first sample
    power = ((subs * _HANN) ** 2).sum(axis=-1) / _HANN_SQ_SUM  # (N, 4) mean power
    early, late = spectrum[:, 0::2], spectrum[:, 1::2]  # (N, 2, 16): windows x frequencies
    total_power = (power[:, 0::2] + power[:, 1::2]) / 2
    band = np.fft.rfft(subs * _HANN, axis=-1)[..., _BAND_LO:_BAND_HI]
    band_power = 2 * (band.real**2 + band.imag**2).sum(axis=-1) / (SUB_LEN * _HANN_SQ_SUM)  # Parseval
    band_power = (band_power[:, 0::2] + band_power[:, 1::2]) / 2
    magnitude = np.abs(early) + np.abs(late)
    row = magnitude[..., :4].argmax(axis=-1)
    col = magnitude[..., 4:8].argmax(axis=-1) + 4

    valid = np.ones(row.shape, dtype=bool)
    weak = np.ones(row.shape, dtype=bool)
    tone_power, freq_est, amplitude_early, amplitude_late = [], [], [], []
    for index in (row, col):
        nominal = _FUNDAMENTALS[index]
        a = np.take_along_axis(early, index[..., None], axis=-1)[..., 0]
        b = np.take_along_axis(late, index[..., None], axis=-1)[..., 0]
        # the phase a tone gains over SUB_LAG beyond what the nominal frequency explains
        turn = np.angle(b * np.conj(a) * np.exp(-2j * np.pi * nominal * SUB_LAG / SAMPLE_RATE))
        offset = turn * SAMPLE_RATE / (2 * np.pi * SUB_LAG)
        response = _window_response(-offset)
        amp_a, amp_b = a / response, b / response  # complex half-amplitudes per sub-window
        amplitude = np.abs(amp_a) + np.abs(amp_b)  # mean of the two full amplitudes
        valid &= np.abs(offset) <= MAX_FREQ_DEVIATION * nominal
        weak &= np.abs(offset) <= WEAK_FREQ_DEVIATION * nominal
        ratio = (np.abs(a) + 1e-9) / (np.abs(b) + 1e-9)
        valid &= (ratio < MAX_SUBWINDOW_RATIO) & (ratio > 1 / MAX_SUBWINDOW_RATIO)
        weak &= (ratio < WEAK_SUBWINDOW_RATIO) & (ratio > 1 / WEAK_SUBWINDOW_RATIO)
        valid &= amplitude >= _MIN_TONE_AMPLITUDE
        tone_power.append(amplitude**2 / 2)
        freq_est.append(nominal + offset)
        amplitude_early.append(amp_a)
        amplitude_late.append(amp_b)

    twist_db = 10 * np.log10((tone_power[0] + 1e-9) / (tone_power[1] + 1e-9))
    valid &= (twist_db <= MAX_NORMAL_TWIST_DB) & (twist_db >= -MAX_REVERSE_TWIST_DB)
    weak &= valid  # frequency (1.5 %), steadiness (6 dB), level and twist so far
    valid &= tone_power[0] + tone_power[1] >= MIN_TONE_FRACTION * total_power
    weak &= tone_power[0] + tone_power[1] >= WEAK_BAND_FRACTION * band_power

    for tone, index in enumerate((row, col)):
        harmonic_hz = 2 * _FUNDAMENTALS[index]
        residual = 0.0
        for spec, amps in ((early, amplitude_early), (late, amplitude_late)):
            harmonic = np.take_along_axis(spec, (index + 8)[..., None], axis=-1)[..., 0]
            for source in range(2):  # cancel both tones' leakage into the harmonic bin
                harmonic = harmonic - amps[source] * _window_response(harmonic_hz - freq_est[source])
            residual = residual + np.abs(harmonic)
        harmonic_power = (residual / _HANN_SUM) ** 2 / 2
        valid &= harmonic_power <= tone_power[tone] * 10 ** (MAX_HARMONIC_DB / 10)
        weak &= harmonic_power <= tone_power[tone] * 10 ** (WEAK_HARMONIC_DB / 10)

    for tone, index in enumerate((row, col)):  # the spectrum either side of each tone, tones removed
        residual = 0.0
        for spec, amps in ((early, amplitude_early), (late, amplitude_late)):
            for side, sign in ((16, -1), (24, 1)):
                probe = np.take_along_axis(spec, (index + side)[..., None], axis=-1)[..., 0]
                probe_hz = _FUNDAMENTALS[index] + sign * SIDE_HZ
                for source in range(2):
                    probe = probe - amps[source] * _window_response(probe_hz - freq_est[source])
                residual = residual + np.abs(probe)
        side_power = (residual / 2 / _HANN_SUM) ** 2 / 2
        weak &= tone_power[tone] >= side_power * 10 ** (SIDE_MIN_DB / 10)

    key = (row * 4 + (col - 4)).astype(np.intp)
    return np.where(valid, key, np.where(weak, key + 16, -1))


def window_powers(buffer: np.ndarray) -> np.ndarray:
    """Mean power of the two 20 ms analysis windows of each row of ``buffer`` ((N, 240)): (N, 2)."""
    early, late = buffer[:, : 2 * HOP], buffer[:, HOP:]
    return np.stack([np.einsum("ij,ij->i", early, early), np.einsum("ij,ij->i", late, late)], axis=1) / (2 * HOP)


def gated_classify(buffer: np.ndarray) -> np.ndarray:
    """:func:`classify_windows` on the rows loud enough to hold a key; -1 for the others."""
    keys = np.full((buffer.shape[0], 2), -1, dtype=np.intp)
    loud = window_powers(buffer).max(axis=1) >= ENERGY_GATE_POWER
    if loud.any():
        keys[loud] = classify_windows(buffer[loud])
    return keys


_KEY_ORDER = "".join(DTMF_KEYS)

#: ``inband`` modes: detect until an out-of-band key arrives, always, never.
INBAND_MODES = ("auto", "on", "off")


@dataclass
class _Press:
    digit: str
    sources: set[str]
    last_seen: float


@dataclass
class CallDtmf:
    """Per-call state, ``call.data["dtmf"]``."""

    inband: bool = True
    presses: list[_Press] = field(default_factory=list)  # recent presses, for de-duplication
    tail: np.ndarray = field(default_factory=lambda: np.zeros(HOP))  # last 10 ms of audio
    candidate: int = -1  # key seen in the latest windows, and in how many in a row
    candidate_run: int = 0
    strong_run: int = 0  # how many of those windows in a row passed the strict tests
    active: int = -1  # key currently held down (reported), -1 when none
    misses: int = 0
    onset: float = 0.0


class _NoStateYet:
    """Stands for the state of a call the plugin has not seen yet: it listens (in ``auto`` and
    ``on`` modes, the only ones in which it is consulted)."""

    __slots__ = ()
    inband = True


_NOT_SEEN_YET = _NoStateYet()

_settings: dict[str, Any] = {"inband": "auto", "dedupe_window_ms": 300}


def _state(call: CallContext) -> CallDtmf:
    state = call.data.get(NAME)
    if state is None:
        state = call.data[NAME] = CallDtmf(inband=_settings["inband"] != "off")
    return state


def parse_inband_mode(value: Any) -> str:
    """``plugins.dtmf.inband`` as one of :data:`INBAND_MODES` (YAML's on/off arrive as booleans).

    An unknown value is logged and read as ``auto``: a typo in one option should not stop the
    server from taking calls, and ``auto`` detects keys from every kind of peer.
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    mode = str(value).strip().lower()
    if mode not in INBAND_MODES:
        log.warning("plugins.dtmf.inband: %r is not one of %s; using auto", value, ", ".join(INBAND_MODES))
        return "auto"
    return mode


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.dtmf``."""
    section = (config.get("plugins") or {}).get(NAME) or {}
    _settings["inband"] = parse_inband_mode(section.get("inband", "auto"))
    _settings["dedupe_window_ms"] = float(section.get("dedupe_window_ms", 300))


@hookimpl
def ivr_dtmf_received(call: CallContext, digit: str, source: str, duration_ms: int | None) -> None:
    """Merge raw reports into key presses and report each press once."""
    state = _state(call)
    if source != "inband" and state.inband and _settings["inband"] == "auto":
        state.inband = False  # the peer sends its keys out of band: stop listening for tones
        log.debug("call %s: %s key seen, in-band detection off for this call", call.id, source)
    now = call.clock()
    window = _settings["dedupe_window_ms"] / 1000.0
    # a report that comes at the end of a long press (RFC 4733 end event) covers its duration
    began = now - (duration_ms or 0) / 1000.0
    state.presses = [p for p in state.presses if now - p.last_seen <= max(window, 2.0)]
    for press in reversed(state.presses):
        if press.digit == digit and source not in press.sources and began - press.last_seen <= window:
            press.sources.add(source)
            press.last_seen = max(press.last_seen, now)
            log.debug("call %s: %s from %s merged with %s", call.id, digit, source, press.sources)
            return
    state.presses.append(_Press(digit, {source}, now))
    call.report_dtmf(digit, source)


def _touch_inband(call: CallContext, state: CallDtmf, digit: str) -> None:
    """Keep the press a held in-band tone belongs to open while the tone lasts."""
    for press in reversed(state.presses):
        if press.digit == digit and "inband" in press.sources:
            press.last_seen = call.clock()
            return


@hookimpl
def ivr_audio_in(batch: AudioBatch) -> None:
    """Run the in-band detector over every call of the tick at once."""
    if _settings["inband"] == "off" or not batch.calls:
        return
    # In auto mode most calls have stopped listening (their peer sends RFC 4733): one cheap
    # expression per call finds the few that still listen; a call seen for the first time does.
    listening = [call.data.get(NAME, _NOT_SEEN_YET).inband for call in batch.calls]
    if not any(listening):
        return
    rows = [i for i, on in enumerate(listening) if on]
    states = [_state(batch.calls[i]) for i in rows]
    frames = batch.pcm[rows].astype(np.float64)
    buffer = np.concatenate([np.stack([state.tail for state in states]), frames], axis=1)
    keys = gated_classify(buffer)
    for slot, window_keys in enumerate(keys.tolist()):
        state = states[slot]
        state.tail = frames[slot, -HOP:]
        if state.active < 0 and state.candidate < 0 and window_keys[0] < 0 and window_keys[1] < 0:
            state.candidate_run += 2  # all that _advance would do: no key held, none seen now
            state.strong_run += 2
            continue
        i = rows[slot]
        for window, key in enumerate(window_keys):
            # window 0 ends 10 ms before the end of this tick's frame
            _advance(batch.calls[i], state, key, batch.now - (1 - window) * HOP / SAMPLE_RATE)


def _advance(call: CallContext, state: CallDtmf, key: int, at: float) -> None:
    """Key-down / key-up state machine fed with one window's verdict (a weak key is key + 16)."""
    strong = key < 16
    key = key if strong else key - 16
    if key == state.candidate:
        state.candidate_run += 1
        state.strong_run = state.strong_run + 1 if strong else 0
    else:
        state.candidate, state.candidate_run = key, 1
        state.strong_run = 1 if strong else 0
    if state.active >= 0:
        if key == state.active:
            state.misses = 0
            _touch_inband(call, state, _KEY_ORDER[key])
            return
        state.misses += 1
        if state.misses < RELEASE_WINDOWS:
            return
        log.debug("call %s: in-band %s up after %.0f ms", call.id, _KEY_ORDER[state.active],
                  (at - state.onset) * 1000)
        state.active = -1
    if state.candidate >= 0 and (state.strong_run >= ONSET_WINDOWS or state.candidate_run >= WEAK_WINDOWS):
        state.active, state.misses = state.candidate, 0
        state.onset = at - (ONSET_WINDOWS + 1) * HOP / SAMPLE_RATE
        call.hook.ivr_dtmf_received(call=call, digit=_KEY_ORDER[key], source="inband", duration_ms=None)


@hookimpl
def ivr_call_ended(call: CallContext, reason: str) -> None:
    """Release the call's state."""
    call.data.pop(NAME, None)
