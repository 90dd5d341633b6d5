"""Audio checks shared by the end-to-end tests: where a known signal sits inside a recording
made by a real peer (cross-correlation), its level, and which tone is loudest in a stretch.

A prompt or a caller's voice that went through G.711 and a jitter buffer comes back with the
same waveform, shifted in time and slightly noisier, so the peak of the normalised
cross-correlation says both *where* it is and *whether* it is there (about 0.99 for a clean
G.711 round trip; unrelated speech stays well under 0.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 8000


@dataclass(frozen=True)
class Match:
    """Where ``reference`` best lines up inside ``recording``: ``offset`` in samples (the
    recording's sample where the reference's first sample lands), normalised ``correlation``."""

    offset: int
    correlation: float

    @property
    def seconds(self) -> float:
        return self.offset / RATE


def locate(reference: np.ndarray, recording: np.ndarray) -> Match:
    """Slide ``reference`` over ``recording`` (zero padded at both ends) and return the offset of
    the best normalised correlation, computed over the samples the two share at that offset."""
    ref = reference.astype(np.float64)
    rec = recording.astype(np.float64)
    n = len(ref) + len(rec)
    size = 1 << (n - 1).bit_length()
    # correlation[k] = sum_i ref[i] * rec[i + k] for k in -(len(ref)-1) .. len(rec)-1
    spectrum = np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size))
    raw = np.fft.irfft(spectrum, size)
    lags = np.arange(-(len(ref) - 1), len(rec))
    corr = raw[lags % size]
    # energies of the overlapping parts, from cumulative sums
    ref_energy = np.concatenate([[0.0], np.cumsum(ref**2)])
    rec_energy = np.concatenate([[0.0], np.cumsum(rec**2)])
    start_ref = np.clip(-lags, 0, len(ref))
    stop_ref = np.clip(len(rec) - lags, 0, len(ref))
    start_rec = np.clip(lags, 0, len(rec))
    stop_rec = np.clip(lags + len(ref), 0, len(rec))
    denominator = np.sqrt((ref_energy[stop_ref] - ref_energy[start_ref]) *
                          (rec_energy[stop_rec] - rec_energy[start_rec]))
    # only offsets where most of the reference is inside the recording count
    inside = (stop_ref - start_ref) >= 0.8 * len(ref)
    score = np.where(inside & (denominator > 0), corr / np.maximum(denominator, 1e-9), 0.0)
    best = int(np.argmax(score))
    return Match(int(lags[best]), float(score[best]))


def rms_db(pcm: np.ndarray) -> float:
    """RMS level in dB relative to full scale (int16)."""
    x = pcm.astype(np.float64)
    return float(10 * np.log10(np.mean(x**2) / 32768.0**2 + 1e-20))


def loud_spans(pcm: np.ndarray, threshold: float = 1000.0, block: int = 160) -> list[tuple[float, float]]:
    """(start, end) seconds of runs of 20 ms blocks whose RMS exceeds ``threshold``."""
    count = len(pcm) // block
    blocks = pcm[: count * block].reshape(count, block).astype(np.float64)
    loud = np.sqrt(np.mean(blocks**2, axis=1)) > threshold
    spans: list[tuple[float, float]] = []
    start = None
    for i, flag in enumerate(np.append(loud, False)):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((start * block / RATE, i * block / RATE))
            start = None
    return spans


def tone_share(pcm: np.ndarray, hz: float, width: float = 40.0) -> float:
    """Share of the signal's energy within ``hz`` ± ``width``."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / RATE)
    band = spectrum[(freqs > hz - width) & (freqs < hz + width)].sum()
    return float(band / max(spectrum.sum(), 1e-9))


def find_in_pieces(reference: np.ndarray, recording: np.ndarray, piece: float = 0.5) -> list[Match]:
    """:func:`locate` for each ``piece``-second slice of ``reference`` (offsets given for the
    slice's own first sample). A recording that lost or concealed a few frames keeps the other
    slices intact, only shifted, where one whole-signal correlation would collapse."""
    size = int(piece * RATE)
    return [locate(reference[start:start + size], recording)
            for start in range(0, len(reference) - size + 1, size)]


def assert_contains(reference: np.ndarray, recording: np.ndarray, *, min_share: float = 0.75,
                    max_slip: float = 0.3) -> list[Match]:
    """Assert that ``recording`` holds ``reference`` in order: at least ``min_share`` of its
    half-second slices match (correlation > 0.9) and their positions agree with the first
    match within ``max_slip`` seconds (frames a jitter buffer dropped shift later slices earlier,
    silence it inserted while re-buffering shifts them later). Returns the slices' matches."""
    pieces = find_in_pieces(reference, recording)
    found = [(i, m) for i, m in enumerate(pieces) if m.correlation > 0.9]
    assert len(found) >= min_share * len(pieces), pieces
    starts = [m.offset - i * RATE // 2 for i, m in found]  # where each says the reference begins
    assert max(starts) - min(starts) <= max_slip * RATE, pieces
    return pieces
