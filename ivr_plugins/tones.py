"""Tones for the built-in plugins: the DTMF keypad's frequencies, tone specs, sine tones.

Everything here is in the media format of :mod:`ivr.audio` (int16 at ``SAMPLE_RATE``).
"""

from __future__ import annotations

import numpy as np

from ivr.audio import SAMPLE_RATE

__all__ = ["DTMF_COL_HZ", "DTMF_KEYS", "DTMF_ROW_HZ", "dtmf_frequencies", "make_tone", "parse_tone_spec"]

# DTMF keypad (ITU-T Q.23): rows are the low group, columns the high group.
DTMF_ROW_HZ = (697.0, 770.0, 852.0, 941.0)
DTMF_COL_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")


def dtmf_frequencies(digit: str) -> tuple[float, float]:
    """The (row, column) frequencies of a DTMF key, e.g. ``"5"`` -> ``(770.0, 1336.0)``."""
    key = digit.upper()
    for row, keys in enumerate(DTMF_KEYS):
        col = keys.find(key)
        if col >= 0 and len(key) == 1:
            return DTMF_ROW_HZ[row], DTMF_COL_HZ[col]
    raise ValueError(f"not a DTMF key: {digit!r}")


def parse_tone_spec(spec: str | float) -> tuple[float, ...]:
    """Frequencies of a tone spec: ``"440"``, ``"350+440"`` (summed), ``"dtmf:5"``."""
    text = str(spec).strip().lower()
    if text.startswith("dtmf:"):
        return dtmf_frequencies(text[5:].strip())
    try:
        freqs = tuple(float(part) for part in text.split("+"))
    except ValueError:
        raise ValueError(f"not a tone spec: {spec!r}") from None
    for freq in freqs:
        if not 0 < freq < SAMPLE_RATE / 2:
            raise ValueError(f"tone frequency {freq} Hz outside 0..{SAMPLE_RATE // 2} Hz")
    return freqs


def make_tone(
    freqs: tuple[float, ...] | list[float],
    duration: float,
    level_dbfs: float = -10.0,
    rate: int = SAMPLE_RATE,
    ramp: float = 0.005,
) -> np.ndarray:
    """Sum of sines, each at ``level_dbfs`` peak, as int16.

    A short raised-cosine ramp at both ends keeps the tone from clicking; ``ramp=0`` gives a
    hard-edged tone (test signals that must be exactly N ms long).
    """
    count = int(round(duration * rate))
    t = np.arange(count) / rate
    amplitude = 32767.0 * 10.0 ** (level_dbfs / 20.0)
    signal = np.zeros(count)
    for freq in freqs:
        signal += amplitude * np.sin(2 * np.pi * freq * t)
    ramp_len = min(int(ramp * rate), count // 2)
    if ramp_len > 0:
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_len) / ramp_len)
        signal[:ramp_len] *= edge
        signal[count - ramp_len :] *= edge[::-1]
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)
