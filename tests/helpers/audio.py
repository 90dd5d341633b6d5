"""Real test audio made with espeak-ng and sox, cached for the test session in a temp folder.

Signals are built by the same tools a person would use to make a test file, so the plugins are
tested on audio they did not generate themselves. Every helper returns 8 kHz mono int16 numpy
arrays unless it says it returns a path.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import subprocess
import tempfile
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np

RATE = 8000
FRAME = 160

# A few paragraphs of ordinary speech for talk-off tests: digits, numbers and phone-menu phrases
# are the words most likely to be spoken on an IVR line.
PARAGRAPHS = (
    "Thank you for calling. Your call is important to us. Please listen carefully, as our menu "
    "options have changed. For sales, press one. For support, press two. To hear these options "
    "again, press the star key.",
    "My number is five five five, zero one nine eight, and my account ends in four four seven. "
    "I was calling about the invoice from the twenty third of September, which seems too high.",
    "Good morning! Could you please put me through to the billing department? I have been "
    "waiting on hold for nearly twenty minutes, and honestly, I am getting rather impatient now.",
)
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-us+m7")

_cache_dir: Path | None = None


def cache_dir() -> Path:
    """This session's folder of generated audio (removed when the interpreter exits)."""
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="ivr-test-audio-"))
        atexit.register(shutil.rmtree, _cache_dir, True)
    return _cache_dir


def _cached_path(*key: object, suffix: str = ".wav") -> Path:
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
    return cache_dir() / f"{digest}{suffix}"


def sox(*args: str) -> None:
    """Run sox, failing loudly with its message."""
    subprocess.run(["sox", *args], check=True, capture_output=True, timeout=30)


def read_pcm(path: str | Path) -> np.ndarray:
    """A 16-bit PCM WAV file's samples as int16 ``(frames,)`` or ``(frames, channels)``."""
    with wave.open(str(path), "rb") as wav:
        data = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
        channels = wav.getnchannels()
    return data if channels == 1 else data.reshape(-1, channels)


@lru_cache(maxsize=None)
def _tone_file(freq: float, duration: float, dbfs: float) -> Path:
    path = _cached_path("tone", freq, duration, dbfs)
    # sox's sine peaks at full scale; `gain` sets its peak level in dB
    sox("-n", "-r", str(RATE), "-c", "1", "-b", "16", str(path),
        "synth", f"{duration}", "sine", f"{freq}", "gain", f"{dbfs}")  # fmt: skip
    return path


def tones(parts: list[tuple[float, float]], duration: float) -> np.ndarray:
    """Sum of sines ``[(hz, peak dBFS), ...]`` lasting ``duration`` s, mixed by ``sox -m``."""
    files = [_tone_file(float(f), float(duration), float(db)) for f, db in parts]
    if len(files) == 1:
        return read_pcm(files[0]).copy()
    out = _cached_path("mix", tuple(parts), duration)
    if not out.exists():
        args = []
        for f in files:
            args += ["-v", "1", str(f)]  # explicit -v on every input: sox then does not scale by 1/n
        sox("-m", *args, str(out))
    return read_pcm(out).copy()


def dtmf(
    digit: str,
    duration: float,
    row_dbfs: float = -10.0,
    col_dbfs: float = -10.0,
    deviation: float = 0.0,
) -> np.ndarray:
    """A DTMF key as its two sines; ``deviation`` scales both frequencies (0.015 = +1.5 %)."""
    from ivr_plugins.tones import dtmf_frequencies

    row, col = dtmf_frequencies(digit)
    return tones([(row * (1 + deviation), row_dbfs), (col * (1 + deviation), col_dbfs)], duration)


def silence(duration: float) -> np.ndarray:
    return np.zeros(int(round(duration * RATE)), dtype=np.int16)


@lru_cache(maxsize=None)
def _noise_file(duration: float, seed: int) -> Path:
    path = _cached_path("noise", duration, seed)
    sox("-R", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(path),
        "synth", f"{duration}", "whitenoise", "gain", "-10")  # fmt: skip
    return path


def add_noise(signal: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """``signal`` plus sox white noise scaled to ``snr_db`` below the signal's power."""
    noise = read_pcm(_noise_file(round(len(signal) / RATE + 0.05, 2), seed))[: len(signal)]
    noise = noise.astype(np.float64)
    sig = signal.astype(np.float64)
    scale = np.sqrt(np.mean(sig**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return np.clip(np.round(sig + noise * scale), -32768, 32767).astype(np.int16)


@lru_cache(maxsize=None)
def speech_file(text: str, voice: str = "en-us", wpm: int = 160) -> Path:
    """espeak-ng speech as an 8 kHz mono 16-bit WAV (path)."""
    raw = _cached_path("espeak", text, voice, wpm, suffix=".raw.wav")
    out = _cached_path("speech", text, voice, wpm)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), "--", text],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    sox(str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out))
    return out


def speech(text: str, voice: str = "en-us", wpm: int = 160) -> np.ndarray:
    """espeak-ng speech at 8 kHz as int16."""
    return read_pcm(speech_file(text, voice, wpm)).copy()


@lru_cache(maxsize=None)
def wav_file(rate: int, channels: int, bits: int, duration: float, freq: float) -> Path:
    """A sine WAV of any format made by sox (``bits`` 8/16/24/32), as a path."""
    path = _cached_path("wav", rate, channels, bits, duration, freq)
    sox("-n", "-r", str(rate), "-c", str(channels), "-b", str(bits), str(path),
        "synth", f"{duration}", "sine", f"{freq}", "gain", "-6")  # fmt: skip
    return path


def dominant_frequency(signal: np.ndarray, rate: int = RATE) -> float:
    """The strongest frequency of ``signal`` (Hz), refined by parabolic interpolation."""
    windowed = signal.astype(np.float64) * np.hanning(len(signal))
    spectrum = np.abs(np.fft.rfft(windowed, n=8 * len(signal)))
    peak = int(spectrum.argmax())
    a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
    shift = 0.5 * (a - c) / (a - 2 * b + c)
    return (peak + shift) * rate / (8 * len(signal))
