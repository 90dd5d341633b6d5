"""The ``dtmf`` plugin: one report per key press, and an in-band DTMF detector (DFT + talk-down FFT).

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

Cost per tick: the detector is one batched matrix product (strict path) and one batched FFT
(talk-down path) over the frames of all listening calls, and an energy gate first drops the frames
too quiet to hold a valid key (silence and speech pauses), so only the remaining rows are analysed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ivr import hookimpl
from ivr.audio import FRAME_SAMPLES, SAMPLE_RATE
from ivr.call import AudioBatch, CallContext
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
# Talk-down (a key pressed while speech or music plays): a second, *long* path looks at 60 ms
# windows (a per-call history of samples spans the tick boundary), where each tone is a narrow peak
# of a 16.7 Hz-bin spectrum. In each group (rows, columns) it takes the tone with the most *new*
# power -- the peak's power minus what the window LONG_REF_WINDOWS x 10 ms earlier had there, so a
# musical partial that was already sounding on 941 Hz does not take the key's place -- and a window
# is valid when each of its two tones is: within LONG_FREQ_DEVIATION of nominal (the peak
# interpolated between bins), LONG_RIVAL above the runner-up of its group in new power,
# LONG_PROMINENCE above the mean power 60-200 Hz either side, LONG_NOVELTY above its power in that
# earlier window, steady between the window's two 30 ms halves, at level, within LONG_TWIST_DB; and
# when no other tone of a group is within LONG_FREQ_DEVIATION and LONG_NOVELTY above its earlier
# power at LONG_AMBIGUITY of the chosen one's power or more (no telling which is the key's),
# the window has no near-silent 10 ms piece (LONG_MIN_PIECE: a tone alone is the strict path's to
# judge, so short tones and pauses between presses keep their Q.24 handling), and the two tones are
# not two harmonics of one voice (see _voiced: a voice has its neighbouring harmonics at row +- f0
# and column +- f0 for an f0 = (column - row) / m that both tones are multiples of).
# A valid window confirms a key when the previous valid window (at most LONG_GAP windows back) had
# the same key with both tones within LONG_DRIFT of the same frequency, or when the window just
# before it (valid or not) had its two peaks within LONG_LOOSE_DRIFT of them: a speech harmonic glides
# with the pitch, a DTMF tone does not. A confirmed window makes a key press where the strict path
# needs ONSET_WINDOWS strict windows. Interference can bend one tone's interpolated frequency (a
# music partial 1 % away, a harmonic passing by): HALF_WINDOWS windows in a row that confirm the key
# with only one tone steady make a press too. A long-path press of a key sharing a tone with the key
# released less than LONG_REFRACTORY before is not taken (the tail of that key, interference as the
# other tone). Settings from a search on seeds 18-19 of tests/helpers/dtmf_talkdown.py (not the
# tests' seed 17) under zero talk-off on 13 espeak-ng voices and music; docs/plugins.md has the rates.
LONG_LEN = 480  # 60 ms (40 ms found fewer keys at -7 dB; DTMF presses last 40 ms and more)
LONG_NFFT = 480  # no zero padding (16.7 Hz bins)
LONG_FREQ_DEVIATION = 0.015  # Q.24's 1.5 %
LONG_PROMINENCE = 4.65  # power ratio (6.7 dB) over the mean 60-200 Hz either side
LONG_NOVELTY = 1.6  # power ratio vs LONG_REF_WINDOWS earlier (2 dB)
LONG_REF_WINDOWS = 6  # 60 ms: the reference window ends where the window starts
LONG_DRIFT = 0.0025  # 0.25 % between a valid window and the previous valid one (10-20 ms apart)
LONG_LOOSE_DRIFT = 0.005  # 0.5 % between a valid window and the window just before it
LONG_GAP = 2  # windows from one valid window to the next that confirms it (2: one may fail between)
LONG_HALF_RATIO = 2.3  # 7.2 dB between the window's two 30 ms halves
HALF_WINDOWS = 3  # windows in a row confirming the key with only one tone steady
LONG_TWIST_DB = (5.0, 4.0)  # row over column, column over row (the strict path keeps Q.24's 9 / 5)
LONG_AMBIGUITY = 0.2  # another new tone of the group at 0.2 (-7 dB) of the chosen one's power: no key
LONG_MIN_PIECE = 0.03  # the quietest 10 ms of a long window against its mean power (-15 dB)
LONG_REFRACTORY = 0.1  # seconds after a release in which the long path takes no key sharing a tone
LONG_RIVAL = 1.26  # the chosen tone's new power over any other tone's of its group (1 dB)
VOICE_RATIO = 0.13  # a neighbouring harmonic at -8.9 dB or more: the two tones are a voice's (0: no test)
VOICE_F0 = (70.0, 420.0)  # the voices' fundamental frequencies looked for
VOICE_HARMONIC_TOL = 0.06  # |harmonic number - integer| for a tone to be a harmonic of an f0
# A valid key needs two tones of at least MIN_TONE_DBFS each, i.e. a window mean power of about
# A_min**2 (A_min**2 / 2 per tone), whatever the twist; partial cover of the window by a tone that
# still passes the steadiness test lowers that to ~0.7 A_min**2. The gate sits 6 dB under it, so
# it only ever skips windows the full analysis would reject anyway.
_MIN_TONE_AMPLITUDE = 32768.0 * 10 ** (MIN_TONE_DBFS / 20)
ENERGY_GATE_POWER = _MIN_TONE_AMPLITUDE**2 / 4
ONSET_WINDOWS = 2  # consecutive windows agreeing -> key down (always met by a 40 ms tone)
RELEASE_WINDOWS = 3  # consecutive windows without it -> key up (a 50 ms pause gives >= 3)

_FUNDAMENTALS = np.array(DTMF_ROW_HZ + DTMF_COL_HZ)
_ANALYSIS_HZ = np.concatenate([_FUNDAMENTALS, 2 * _FUNDAMENTALS])  # 8 tones + 8 2nd harmonics
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
    buffer, the key's index into ``"123A456B789C*0#D"``, or -1 where no valid key is present.
    """
    subs = sliding_window_view(buffer, SUB_LEN, axis=1)[:, ::SUB_LAG]  # (N, 4, 120)
    spectrum = subs @ _BASIS  # (N, 4, 16), phase relative to each sub-window's first sample
    power = ((subs * _HANN) ** 2).sum(axis=-1) / _HANN_SQ_SUM  # (N, 4) mean power
    early, late = spectrum[:, 0::2], spectrum[:, 1::2]  # (N, 2, 16): windows x frequencies
    total_power = (power[:, 0::2] + power[:, 1::2]) / 2
    magnitude = np.abs(early) + np.abs(late)
    row = magnitude[..., :4].argmax(axis=-1)
    col = magnitude[..., 4:8].argmax(axis=-1) + 4

    valid = np.ones(row.shape, dtype=bool)
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
        ratio = (np.abs(a) + 1e-9) / (np.abs(b) + 1e-9)
        valid &= (ratio < MAX_SUBWINDOW_RATIO) & (ratio > 1 / MAX_SUBWINDOW_RATIO)
        valid &= amplitude >= _MIN_TONE_AMPLITUDE
        tone_power.append(amplitude**2 / 2)
        freq_est.append(nominal + offset)
        amplitude_early.append(amp_a)
        amplitude_late.append(amp_b)

    twist_db = 10 * np.log10((tone_power[0] + 1e-9) / (tone_power[1] + 1e-9))
    valid &= (twist_db <= MAX_NORMAL_TWIST_DB) & (twist_db >= -MAX_REVERSE_TWIST_DB)
    valid &= tone_power[0] + tone_power[1] >= MIN_TONE_FRACTION * total_power

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

    key = (row * 4 + (col - 4)).astype(np.intp)
    return np.where(valid, key, -1)


_LONG_HANN = np.hanning(LONG_LEN + 2)[1:-1]
_LONG_HANN_SUM = float(_LONG_HANN.sum())
_LONG_DF = SAMPLE_RATE / LONG_NFFT
_LONG_CENTER = np.round(_FUNDAMENTALS / _LONG_DF).astype(np.intp)  # (8,) bins of the nominal tones
# The peak is searched SEARCH bins either side of the nominal bin (1.5 % is at most 25 Hz) and
# interpolated with its two neighbours; around it, the tone's surroundings are the mean power
# RING_LO..RING_HI bins (60-200 Hz) either side, outside the main lobe (33 Hz half-width), taken
# from a cumulative sum over the bins the tones can reach (4 look-ups per tone).
_SEARCH = int(np.ceil(25 / _LONG_DF))
RING_LO, RING_HI = int(np.ceil(60 / _LONG_DF)), int(round(200 / _LONG_DF))
_BAND = slice(int(_LONG_CENTER[0]) - _SEARCH - RING_HI - 1, int(_LONG_CENTER[-1]) + _SEARCH + RING_HI + 1)
_LONG_NEAR = _LONG_CENTER[:, None] - _BAND.start + np.arange(-_SEARCH - 1, _SEARCH + 2)  # (8, 2 SEARCH + 3)
_RING_EDGES = np.array([-RING_HI - 1, -RING_LO, RING_LO - 1, RING_HI])  # cumsum[b] - cumsum[a] = sum(a+1..b)
_LONG_MIN_POWER = (_MIN_TONE_AMPLITUDE * _LONG_HANN_SUM / 2) ** 2  # a tone's peak power at MIN_TONE_DBFS
_TOP = int(np.ceil((_FUNDAMENTALS[-1] * (1 + LONG_FREQ_DEVIATION) + VOICE_F0[1]) / _LONG_DF)) + 3
_HALF = LONG_LEN // 2
_HALF_STARTS = np.array([0, _HALF, HOP, HOP + _HALF])  # where the halves of windows 0 and 1 start
_half_basis = (np.hanning(_HALF + 2)[1:-1, None]
               * np.exp(-2j * np.pi * np.outer(np.arange(_HALF), _FUNDAMENTALS) / SAMPLE_RATE))
_HALF_BASIS = np.concatenate([_half_basis.real, _half_basis.imag], axis=1)  # real: (160, 16)
#: Per-call memory of the long path, one float row: the last HISTORY samples, the peak powers of
#: the last LONG_REF_WINDOWS windows (8 tones each; inf where a window reached back before the
#: call: unheard, not silent), the latest valid window's key (-1 for none) and 8 tone frequencies,
#: how many windows back it is, the ticks seen (up to 3), and the latest window's 8 peak frequencies.
HISTORY = LONG_LEN + HOP - FRAME_SAMPLES  # 400 samples before this tick's frame
_PAST = slice(HISTORY, HISTORY + 8 * LONG_REF_WINDOWS)
_PREV_FREQ = slice(_PAST.stop, _PAST.stop + 8)
_PREV_KEY = _PREV_FREQ.stop
_AGE = _PREV_KEY + 1  # windows since that key's window (1: the latest)
_TICKS = _AGE + 1  # ticks seen, up to _HEARD_TICKS[0]: until then the windows reach back before the call
#: ticks a call must have had before this tick for its windows 0 and 1 (ending 10 ms before and at the
#: end of the tick's frame) to start within the call
_HEARD_TICKS = np.array([-(-(LONG_LEN - HOP - w * HOP) // FRAME_SAMPLES) for w in (0, 1)])
_LAST_FREQ = slice(_TICKS + 1, _TICKS + 9)  # the 8 peak frequencies of the latest window, valid or not
MEMORY = _LAST_FREQ.stop


def new_memory() -> np.ndarray:
    memory = np.zeros(MEMORY)
    memory[_PAST] = np.inf  # what played before the call is unknown: nothing counts as new against it
    memory[_PREV_KEY] = -1
    return memory


def long_windows(buffer: np.ndarray) -> dict[str, np.ndarray]:
    """Tone peaks in the two LONG_LEN (60 ms) windows of ``buffer`` ((N, HISTORY + 160)) ending 10 ms
    before and at its end.

    Returns ``(N, 2, 8)`` arrays: ``power`` (the peak's interpolated power), ``freq`` (its precise
    frequency), ``ring`` (mean power 60-200 Hz either side) and ``halves`` (amplitude ratio of the
    window's two halves at the nominal frequency); and ``full``, ``(N, 2, _TOP)``, the windows'
    power spectrum up to where :func:`_voiced` looks.
    """
    windows = sliding_window_view(buffer, LONG_LEN, axis=1)[:, ::HOP]  # (N, 2, LONG_LEN), a view
    spectrum = np.fft.rfft(windows * _LONG_HANN, LONG_NFFT, axis=-1)[..., :_TOP]
    full = spectrum.real**2 + spectrum.imag**2  # (N, 2, _TOP): up to where _voiced looks
    power = full[..., _BAND]  # (N, 2, bins of the band)
    near = power[..., _LONG_NEAR]  # (N, 2, 8, 2 SEARCH + 3)
    at = near[..., 1:-1].argmax(axis=-1)[..., None] + 1  # the peak's place among them
    # parabolic interpolation of the log power around the peak bin
    left, mid, right = np.log(np.take_along_axis(near, at + np.array([-1, 0, 1]), axis=-1) + 1e-9).transpose(3, 0, 1, 2)
    curve = left - 2 * mid + right
    shift = np.clip(0.5 * (left - right) / np.where(curve < 0, curve, -1.0), -0.5, 0.5)
    peak_bin = _LONG_NEAR[:, 0] + at[..., 0]  # (N, 2, 8), in the band
    edges = np.cumsum(power, axis=-1)
    edges = np.take_along_axis(edges, (peak_bin[..., None] + _RING_EDGES).reshape(*peak_bin.shape[:2], -1), axis=-1)
    edges = edges.reshape(*peak_bin.shape, 4)
    ring = (edges[..., 1] - edges[..., 0] + edges[..., 3] - edges[..., 2]) / (2 * (RING_HI - RING_LO + 1))
    halves = sliding_window_view(buffer, _HALF, axis=1)[:, _HALF_STARTS] @ _HALF_BASIS  # (N, 4, 16): re, im
    halves = halves[..., :8] ** 2 + halves[..., 8:] ** 2  # window 0's first and second half, then window 1's
    return {
        "power": np.exp(mid - 0.25 * (left - right) * shift),
        "freq": (peak_bin + _BAND.start + shift) * _LONG_DF,
        "ring": ring,
        "full": full,
        "halves": np.sqrt((halves[:, 0::2] + 1e-9) / (halves[:, 1::2] + 1e-9)),
    }


_VOICE_M = np.arange(1, 12)  # harmonic-number differences between the two tones


def _voiced(freq: np.ndarray, tone: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Which of K candidate keys look like two harmonics of one voice: ``freq`` and ``tone`` (K, 2)
    (row, column), ``full`` (K, bins) the window's power spectrum. For each f0 = (column - row) / m
    in VOICE_F0 whose multiples the row tone is (within VOICE_HARMONIC_TOL of a harmonic number), the
    spectrum at row +- f0 and column +- f0 is read: a voice (or an instrument) has its neighbouring
    harmonics there, a key's tones have nothing in particular. Voiced where, for some such f0, each
    tone has a neighbour at least VOICE_RATIO of its power."""
    f0 = (freq[:, 1] - freq[:, 0])[:, None] / _VOICE_M  # (K, M)
    number = freq[:, :1] / f0
    candidate = (f0 >= VOICE_F0[0]) & (f0 <= VOICE_F0[1]) & (np.abs(number - np.round(number)) <= VOICE_HARMONIC_TOL)
    around = np.stack([freq[:, :1] - f0, freq[:, :1] + f0, freq[:, 1:] - f0, freq[:, 1:] + f0], axis=-1)  # (K, M, 4)
    low = np.clip(np.floor(around / _LONG_DF).astype(np.intp), 0, full.shape[-1] - 2)
    flat = low.reshape(len(freq), -1)
    level = np.maximum(np.take_along_axis(full, flat, axis=-1), np.take_along_axis(full, flat + 1, axis=-1))
    level = level.reshape(around.shape)
    near_row = level[..., :2].max(axis=-1) >= VOICE_RATIO * tone[:, :1]
    near_col = level[..., 2:].max(axis=-1) >= VOICE_RATIO * tone[:, 1:]
    return (candidate & near_row & near_col).any(axis=-1)


def long_classify(buffer: np.ndarray, memory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The long path on ``buffer`` ((N, HISTORY + 160)) with the calls' ``memory`` ((N, MEMORY), see new_memory).

    Returns ``(keys, memory)``: ``keys`` ``(N, 2)`` per window: -1, the key's index + 16 where the
    window passes the long tests, + 32 where it also confirms the latest valid window before it
    (same key, both tones within LONG_DRIFT of their frequency there, at most LONG_GAP windows
    back), + 48 where it confirms it with only one tone that steady; and the calls' updated memory.
    """
    found = long_windows(buffer)
    power, freq = found["power"], found["freq"]
    past = memory[:, _PAST].reshape(-1, LONG_REF_WINDOWS, 8)
    reference = past[:, :2]  # the windows LONG_REF_WINDOWS before each of the two
    new = np.maximum(power - reference, 0.0)
    row = new[..., :4].argmax(axis=-1)
    col = new[..., 4:].argmax(axis=-1) + 4
    tones = np.stack([row, col], axis=-1)  # (N, 2 windows, 2 tones)

    def pick(values: np.ndarray) -> np.ndarray:
        return np.take_along_axis(values, tones, axis=-1)

    tone, tone_freq, nominal = pick(power), pick(freq), _FUNDAMENTALS[tones]
    # each tone's new power LONG_RIVAL above the runner-up's of its group
    ranked = np.sort(new.reshape(*new.shape[:2], 2, 4), axis=-1)
    ok = ranked[..., -1] >= LONG_RIVAL * ranked[..., -2]
    ok &= np.abs(tone_freq - nominal) <= LONG_FREQ_DEVIATION * nominal
    ok &= tone >= LONG_PROMINENCE * pick(found["ring"])
    ok &= tone >= LONG_NOVELTY * pick(reference)
    halves = pick(found["halves"])
    ok &= (halves < LONG_HALF_RATIO) & (halves > 1 / LONG_HALF_RATIO)
    ok &= tone >= _LONG_MIN_POWER
    twist_db = 10 * np.log10((tone[..., 0] + 1e-9) / (tone[..., 1] + 1e-9))
    valid = ok.all(axis=-1) & (twist_db <= LONG_TWIST_DB[0]) & (twist_db >= -LONG_TWIST_DB[1])
    # no near-silent 10 ms piece in the window: the long path is for keys under continuous interference;
    # a tone alone (too short, or two presses with a pause) is the strict path's to judge
    pieces = buffer.reshape(len(buffer), -1, HOP)
    pieces = np.einsum("ijk,ijk->ij", pieces, pieces)  # (N, pieces of 10 ms)
    span = LONG_LEN // HOP
    floor = np.stack([pieces[:, w : w + span].min(axis=1) / pieces[:, w : w + span].mean(axis=1).clip(1e-9)
                      for w in range(2)], axis=1)
    valid &= floor >= LONG_MIN_PIECE
    if LONG_AMBIGUITY:
        # another new tone of the group in tolerance at LONG_AMBIGUITY of its power: no telling which is the key's
        plausible = np.abs(freq - _FUNDAMENTALS) <= LONG_FREQ_DEVIATION * _FUNDAMENTALS
        plausible &= power >= LONG_NOVELTY * reference  # (the key's own tone is often not prominent)
        rivals = np.where(plausible, power, 0.0)
        np.put_along_axis(rivals, tones, 0.0, axis=-1)
        strongest = np.stack([rivals[..., :4].max(axis=-1), rivals[..., 4:].max(axis=-1)], axis=-1)
        valid &= (strongest < LONG_AMBIGUITY * tone).all(axis=-1)
    if VOICE_RATIO and valid.any():
        valid[valid] &= ~_voiced(tone_freq[valid], tone[valid], found["full"][valid])
    key = np.where(valid, row * 4 + (col - 4), -1)

    # each window against the latest valid one before it, if no more than LONG_GAP windows back: the
    # memory's for the first window, the first window's (if valid) for the second
    valid0 = valid[:, 0]
    prev_key = np.stack([memory[:, _PREV_KEY], np.where(valid0, key[:, 0], memory[:, _PREV_KEY])], axis=1)
    prev_freq = np.stack([memory[:, _PREV_FREQ], np.where(valid0[:, None], freq[:, 0], memory[:, _PREV_FREQ])], axis=1)
    age = np.stack([memory[:, _AGE], np.where(valid0, 1.0, memory[:, _AGE] + 1)], axis=1)
    steady = np.abs(tone_freq - pick(prev_freq)) <= LONG_DRIFT * tone_freq
    confirmed = valid & (key == prev_key) & (age <= LONG_GAP)
    half = confirmed & steady.any(axis=-1) & ~steady.all(axis=-1)
    confirmed &= steady.all(axis=-1)
    # or against the window just before it, valid or not: the same two peaks there
    just_before = np.stack([memory[:, _LAST_FREQ], freq[:, 0]], axis=1)
    confirmed |= valid & (np.abs(tone_freq - pick(just_before)) <= LONG_LOOSE_DRIFT * tone_freq).all(axis=-1)

    updated = np.empty_like(memory)
    updated[:, :HISTORY] = buffer[:, -HISTORY:]
    # a window that reaches back before the call is no reference (its start is not silence, only unheard)
    heard = np.where(memory[:, _TICKS, None] >= _HEARD_TICKS, 0.0, np.inf)[..., None]
    updated[:, _PAST] = np.concatenate([past[:, 2:], power + heard], axis=1).reshape(len(memory), -1)
    valid1 = valid[:, 1]
    updated[:, _PREV_FREQ] = np.where(valid1[:, None], freq[:, 1], prev_freq[:, 1])
    updated[:, _PREV_KEY] = np.where(valid1, key[:, 1], prev_key[:, 1])
    updated[:, _AGE] = np.where(valid1, 1.0, age[:, 1] + 1)
    updated[:, _TICKS] = np.minimum(memory[:, _TICKS] + 1, _HEARD_TICKS[0])
    updated[:, _LAST_FREQ] = freq[:, 1]
    return np.where(confirmed, key + 32, np.where(half, key + 48, np.where(valid, key + 16, -1))), updated


def window_powers(buffer: np.ndarray) -> np.ndarray:
    """Mean power of the two 20 ms analysis windows of each row of ``buffer`` ((N, 240)): (N, 2)."""
    early, late = buffer[:, : 2 * HOP], buffer[:, HOP:]
    return np.stack([np.einsum("ij,ij->i", early, early), np.einsum("ij,ij->i", late, late)], axis=1) / (2 * HOP)


def gated_classify(buffer: np.ndarray, memory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both paths on the rows loud enough to hold a key (-1 for the others), and the updated memory.

    ``buffer`` is ``(N, HISTORY + 160)``: the calls' history and this tick's frames. Per window:
    the strict path's key where it finds one, else the long path's verdict (key + 16 or + 32).
    """
    keys = np.full((buffer.shape[0], 2), -1, dtype=np.intp)
    updated = np.zeros_like(memory)  # quiet rows: no peaks, no previous key
    updated[:, :HISTORY] = buffer[:, -HISTORY:]
    updated[:, _PAST] = np.concatenate([memory[:, _PAST][:, 16:], np.zeros((len(memory), 16))], axis=1)
    updated[:, _PREV_KEY] = -1
    updated[:, _TICKS] = np.minimum(memory[:, _TICKS] + 1, _HEARD_TICKS[0])
    loud = window_powers(buffer[:, -3 * HOP :]).max(axis=1) >= ENERGY_GATE_POWER
    if loud.any():
        keys[loud], updated[loud] = analyse(buffer[loud], memory[loud])
    return keys, updated


def analyse(buffer: np.ndarray, memory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`gated_classify` without the gate: both paths on every row."""
    strict = classify_windows(buffer[:, -3 * HOP :])
    longer, updated = long_classify(buffer, memory)
    return np.where(strict >= 0, strict, longer), updated


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
    memory: np.ndarray = field(default_factory=lambda: new_memory())  # recent audio and long-path state
    candidate: int = -1  # key seen in the latest windows, and in how many in a row
    candidate_run: int = 0
    strong_run: int = 0  # how many of those windows in a row passed the strict tests
    half_run: int = 0  # ... confirmed the long path's key with at least one tone steady
    active: int = -1  # key currently held down (reported), -1 when none
    misses: int = 0
    onset: float = 0.0
    released: int = -1  # the latest key released, and when (media clock)
    released_at: float = -1e9


class _NoStateYet:
    """Stands for the state of a call the plugin has not seen yet: it listens (in ``auto`` and
    ``on`` modes, the only ones in which it is consulted)."""

    __slots__ = ()
    inband = True


_NOT_SEEN_YET = _NoStateYet()

# The listening calls' states of the latest tick and their memory as one array (each state's
# memory is a row of it): when the next tick has the same calls, the array is used as it is
# instead of stacking 250 small arrays again.
_last_batch: tuple[list[CallDtmf], np.ndarray] = ([], np.zeros((0, MEMORY)))

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
    global _last_batch
    last_states, memory = _last_batch
    if len(last_states) != len(states) or any(a is not b for a, b in zip(last_states, states)):
        # A call that left the batch (it stopped listening, or ended) keeps a row of its own, not
        # a view that would keep the whole old matrix alive for as long as the call lasts.
        staying = set(map(id, states))
        for old in last_states:
            if id(old) not in staying and old.memory.base is not None:
                old.memory = old.memory.copy()
        memory = np.stack([state.memory for state in states])  # else each state.memory is a row of it
    buffer = np.concatenate([memory[:, :HISTORY], frames], axis=1)
    keys, memory = gated_classify(buffer, memory)
    _last_batch = states, memory
    for slot, window_keys in enumerate(keys.tolist()):
        state = states[slot]
        state.memory = memory[slot]
        if state.active < 0 and state.candidate < 0 and window_keys[0] < 0 and window_keys[1] < 0:
            state.candidate_run += 2  # all that _advance would do: no key held, none seen now
            state.strong_run += 2
            state.half_run = 0
            continue
        i = rows[slot]
        for window, key in enumerate(window_keys):
            # window 0 ends 10 ms before the end of this tick's frame
            _advance(batch.calls[i], state, key, batch.now - (1 - window) * HOP / SAMPLE_RATE)


def _advance(call: CallContext, state: CallDtmf, key: int, at: float) -> None:
    """Key-down / key-up state machine fed with one window's verdict: a strict key (0-15), a long-path
    key + 16, + 32 (confirmed) or + 48 (confirmed with one tone steady; see long_classify)."""
    strong = key < 16
    confirmed = 32 <= key < 48
    half = key >= 48
    key = key if strong else key % 16
    if key == state.candidate:
        state.candidate_run += 1
        state.strong_run = state.strong_run + 1 if strong else 0
        state.half_run = state.half_run + 1 if half or confirmed else 0
    else:
        state.candidate, state.candidate_run = key, 1
        state.strong_run = 1 if strong else 0
        state.half_run = 1 if half or confirmed else 0
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
        state.active, state.released, state.released_at = -1, state.active, at
    if state.candidate >= 0 and (state.strong_run >= ONSET_WINDOWS or confirmed or state.half_run >= HALF_WINDOWS):
        if (state.strong_run < ONSET_WINDOWS and state.released >= 0 and at - state.released_at < LONG_REFRACTORY
                and (key // 4 == state.released // 4 or key % 4 == state.released % 4)):
            return  # the tail of the key just released, with interference as its other tone
        state.active, state.misses = state.candidate, 0
        state.onset = at - (ONSET_WINDOWS + 1) * HOP / SAMPLE_RATE
        call.hook.ivr_dtmf_received(call=call, digit=_KEY_ORDER[key], source="inband", duration_ms=None)


@hookimpl
def ivr_call_ended(call: CallContext, reason: str) -> None:
    """Release the call's state."""
    call.data.pop(NAME, None)
