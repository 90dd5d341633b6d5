"""Audio helpers shared by the built-in plugins: WAV decoding, resampling, tones, durations.

Everything here works on the engine's media format: 8 kHz, mono, int16, 160-sample frames.
WAV files are parsed here rather than with :mod:`wave` because prompts arrive in every shape
(24-bit, float, ``WAVE_FORMAT_EXTENSIBLE``, several channels) and :mod:`wave` reads only plain
integer PCM.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz

# WAVE format tags (mmreg.h)
WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

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


class WavFormatError(ValueError):
    """The file is not a WAV file this module can decode."""


@dataclass(frozen=True)
class WavInfo:
    """What a WAV header says: the format tag, layout and where the sample data starts."""

    format_tag: int
    channels: int
    sample_rate: int
    bits_per_sample: int
    block_align: int
    data_offset: int
    data_size: int  # as the header says; may be stale in a crashed recording


def read_wav_info(data: bytes) -> WavInfo:
    """Parse the RIFF chunks in front of the sample data (``data`` need only hold the header)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavFormatError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise WavFormatError("truncated fmt chunk")
            tag, channels, rate, _byte_rate, align, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == WAVE_FORMAT_EXTENSIBLE and size >= 40 and body + 26 <= len(data):
                # the real format is the first two bytes of the sub-format GUID
                (tag,) = struct.unpack_from("<H", data, body + 24)
            fmt = (tag, channels, rate, align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavFormatError("data chunk before fmt chunk")
            tag, channels, rate, align, bits = fmt
            if channels < 1 or rate < 1 or align < 1:
                raise WavFormatError("invalid fmt chunk")
            return WavInfo(tag, channels, rate, bits, align, body, size)
        pos = body + size + (size & 1)  # chunks are padded to even sizes
    raise WavFormatError("no data chunk")


def decode_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV file as float32 samples in [-1, 1), shape ``(frames, channels)``, and its rate.

    Integer PCM of 8 (unsigned), 16, 24 and 32 bits and IEEE float of 32 and 64 bits are read.
    A data chunk that claims more than the file holds (an unfinished recording) is cut to the file.
    """
    raw = Path(path).read_bytes()
    info = read_wav_info(raw)
    end = min(len(raw), info.data_offset + info.data_size)
    payload = raw[info.data_offset : end]
    width = info.block_align // info.channels
    payload = payload[: len(payload) - len(payload) % info.block_align]
    if info.format_tag == WAVE_FORMAT_PCM:
        if width == 1:
            samples = (np.frombuffer(payload, np.uint8).astype(np.float32) - 128.0) / 128.0
        elif width == 2:
            samples = np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0
        elif width == 3:
            # little-endian 24-bit: place the three bytes in the top of an int32, then shift down
            b = np.frombuffer(payload, np.uint8).reshape(-1, 3).astype(np.int32)
            value = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
            samples = (value >> 8).astype(np.float32) / 8388608.0
        elif width == 4:
            samples = (np.frombuffer(payload, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
        else:
            raise WavFormatError(f"unsupported PCM sample width {width} bytes")
    elif info.format_tag == WAVE_FORMAT_IEEE_FLOAT and width in (4, 8):
        samples = np.frombuffer(payload, "<f4" if width == 4 else "<f8").astype(np.float32)
    else:
        raise WavFormatError(f"unsupported WAV format tag 0x{info.format_tag:04x} / width {width}")
    return samples.reshape(-1, info.channels), info.sample_rate


def to_media_format(samples: np.ndarray, rate: int) -> np.ndarray:
    """Downmix ``(frames, channels)`` float samples to mono, resample to 8 kHz, return int16."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != SAMPLE_RATE and len(mono):
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return float_to_int16(mono)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """Scale [-1, 1) floats to int16, clipping what a resampler's overshoot pushes past full scale."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def load_prompt(path: str | Path) -> np.ndarray:
    """A WAV file of any rate, width and channel count as 8 kHz mono int16."""
    samples, rate = decode_wav(path)
    return to_media_format(samples, rate)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")


def parse_duration(value: float | int | str) -> float:
    """Seconds from a number (seconds) or a string such as ``"250ms"``, ``"1.5s"``, ``"2m"``."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative duration: {value}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def parse_tone_spec(spec: str | int | float) -> tuple[float, ...]:
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


def wav_header(channels: int, sample_rate: int, bits: int, data_bytes: int) -> bytes:
    """A canonical 44-byte PCM WAV header for ``data_bytes`` of sample data."""
    align = channels * bits // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE",
        b"fmt ", 16, WAVE_FORMAT_PCM, channels, sample_rate, sample_rate * align, align, bits,
        b"data", data_bytes,
    )  # fmt: skip
