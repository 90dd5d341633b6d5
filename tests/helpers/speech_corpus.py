"""Spoken test utterances for the stt plugin, made with espeak-ng and sent through G.711.

Each :class:`Utterance` is one phrase said by one espeak-ng voice at one speed, resampled to
8 kHz with soxr, optionally mixed with white noise at a given SNR (measured over the speech,
not the silence around it), and passed through a mu-law encode/decode as a call would carry it.
Synthesis runs espeak-ng processes in parallel threads and is cached per process.
"""

from __future__ import annotations

import io
import itertools
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soxr

from simplesip.wire import g711

RATE = 8000

#: What an IVR menu listens for: department names, yes/no, digits and a few two-word phrases.
MENU_PHRASES: tuple[str, ...] = (
    "sales", "support", "operator", "yes", "no",
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "buy something", "talk to someone", "billing question",
)
VOICES: tuple[str, ...] = ("en-us", "en", "en-gb-x-rp", "en+f3", "en+m3", "en-us+f2")
SPEEDS: tuple[int, ...] = (130, 160, 190)  # words per minute
SNRS: tuple[float | None, ...] = (None, 20.0)  # None: clean


@dataclass(frozen=True)
class Utterance:
    """One test utterance and the condition it was made in."""

    phrase: str
    voice: str
    speed: int
    snr_db: float | None
    pcm: np.ndarray  # 8 kHz int16

    @property
    def condition(self) -> str:
        """``voice/speed/noise``, e.g. ``en+f3/160wpm/20dB``."""
        noise = "clean" if self.snr_db is None else f"{self.snr_db:g}dB"
        return f"{self.voice}/{self.speed}wpm/{noise}"


@lru_cache(maxsize=4096)
def _synthesise_cached(text: str, voice: str, speed: int) -> bytes:
    result = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", "--", text],
        capture_output=True, check=True, timeout=30,
    )
    with wave.open(io.BytesIO(result.stdout)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), np.int16)
    resampled = soxr.resample(samples.astype(np.float32), rate, RATE, quality="HQ")
    return np.clip(np.round(resampled), -32768, 32767).astype(np.int16).tobytes()


def synthesise(text: str, voice: str = "en-us", speed: int = 160) -> np.ndarray:
    """``text`` spoken by espeak-ng ``voice`` at ``speed`` wpm, as 8 kHz int16 (cached)."""
    return np.frombuffer(_synthesise_cached(text, voice, speed), np.int16).copy()


def add_white_noise(pcm: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mix white noise at ``snr_db`` below the power of the speech (samples above -40 dBFS)."""
    signal = pcm.astype(np.float64)
    active = signal[np.abs(signal) > 328]  # ignore espeak-ng's silent lead-in and tail
    power = float(np.mean(active**2)) if active.size else 1.0
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), signal.size)
    return np.clip(np.round(signal + noise), -32768, 32767).astype(np.int16)


def through_g711(pcm: np.ndarray, codec: str = "PCMU") -> np.ndarray:
    """``pcm`` after a G.711 encode/decode round trip, as the far end's audio arrives."""
    return g711.decode(g711.encode(pcm, codec), codec)


def build_corpus(
    phrases: tuple[str, ...] = MENU_PHRASES,
    voices: tuple[str, ...] = VOICES,
    speeds: tuple[int, ...] = SPEEDS,
    snrs: tuple[float | None, ...] = SNRS,
    seed: int = 4475,
) -> list[Utterance]:
    """Every combination of phrase, voice, speed and noise level, in a stable order."""
    combos = list(itertools.product(voices, speeds, phrases))
    with ThreadPoolExecutor(max_workers=8) as pool:
        clean = list(pool.map(lambda c: synthesise(c[2], c[0], c[1]), combos))
    rng = np.random.default_rng(seed)
    corpus = []
    for snr in snrs:
        for (voice, speed, phrase), pcm in zip(combos, clean):
            noisy = pcm if snr is None else add_white_noise(pcm, snr, rng)
            corpus.append(Utterance(phrase, voice, speed, snr, through_g711(noisy)))
    return corpus
