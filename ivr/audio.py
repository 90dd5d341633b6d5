"""The audio facts the IVR shares: the media format, WAV files, durations.

* The media format: every call's audio is :data:`SAMPLE_RATE` Hz mono int16 in frames of
  :data:`FRAME_MS` ms (:data:`FRAME_SAMPLES` samples, :data:`FRAME_BYTES` bytes), one frame per
  media tick. The frame size is derived from the rate and the frame time, not written down twice.
* WAV files: :func:`read_wav_info` / :func:`decode_wav` read any common WAV file (integer PCM of 8,
  16, 24 or 32 bits, IEEE float, ``WAVE_FORMAT_EXTENSIBLE``, any channel count and rate: prompts
  arrive in every shape, and :mod:`wave` reads only plain integer PCM); :func:`read_wav` turns one
  into the media format (mixed down, resampled with soxr). :func:`write_wav` writes int16 samples
  with :mod:`wave`; :func:`wav_header` is the header of a file written incrementally (recordings).
* :func:`parse_duration`: the duration notation of flows and plugin options (``5``, ``"500ms"``,
  ``"2m"``, ``"1h"``), as docs/flows.md states it.
"""

from __future__ import annotations

import re
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FRAME_BYTES", "FRAME_MS", "FRAME_SAMPLES", "FRAME_SECONDS", "SAMPLE_RATE", "SAMPLE_WIDTH",
    "WAVE_FORMAT_EXTENSIBLE", "WAVE_FORMAT_IEEE_FLOAT", "WAVE_FORMAT_PCM",
    "WavFormatError", "WavInfo", "decode_wav", "float_to_int16", "frame_samples", "parse_duration",
    "read_wav", "read_wav_info", "to_media_format", "wav_duration", "wav_header", "write_wav",
]  # fmt: skip


# -- the media format ---------------------------------------------------------------------


def frame_samples(rate: int, frame_ms: int) -> int:
    """Samples in one frame of ``frame_ms`` milliseconds at ``rate`` Hz (``8000, 20`` -> 160)."""
    samples, rest = divmod(rate * frame_ms, 1000)
    if rest:
        raise ValueError(f"a {frame_ms} ms frame at {rate} Hz is not a whole number of samples")
    return samples


#: Sample rate of all call audio (G.711's), Hz.
SAMPLE_RATE = 8000
#: Bytes per sample: signed 16-bit little-endian.
SAMPLE_WIDTH = 2
#: One media tick's frame (the RTP packetisation time), ms and s.
FRAME_MS = 20
FRAME_SECONDS = FRAME_MS / 1000
#: Samples and bytes in one frame (160 and 320 at 8 kHz and 20 ms).
FRAME_SAMPLES = frame_samples(SAMPLE_RATE, FRAME_MS)
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH


# -- WAV files ----------------------------------------------------------------------------

# WAVE format tags (mmreg.h)
WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


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
    """Downmix ``(frames, channels)`` float samples to mono, resample to :data:`SAMPLE_RATE`,
    return int16."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != SAMPLE_RATE and len(mono):
        import soxr  # only when a file needs it: keeps ``import ivr.call`` light

        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return float_to_int16(mono)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """Scale [-1, 1) floats to int16, clipping what a resampler's overshoot pushes past full scale."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def read_wav(path: str | Path) -> np.ndarray:
    """A WAV file of any rate, width and channel count in the media format: mono int16 at
    :data:`SAMPLE_RATE` (channels averaged). Raises :class:`WavFormatError` for what is not a WAV
    file :func:`decode_wav` reads, ``OSError`` for a file that cannot be read."""
    samples, rate = decode_wav(path)
    return to_media_format(samples, rate)


def wav_duration(path: str | Path) -> float:
    """Seconds of audio in a WAV file, from its header (cut to what the file holds)."""
    raw = Path(path).read_bytes()
    info = read_wav_info(raw)
    data_bytes = min(info.data_size, len(raw) - info.data_offset)
    return (data_bytes // info.block_align) / info.sample_rate


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write int16 samples, ``(frames,)`` (mono) or ``(frames, channels)``, as a 16-bit PCM WAV
    file (the folder is made if missing)."""
    samples = np.asarray(samples)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1 if samples.ndim == 1 else samples.shape[1])
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())


def wav_header(channels: int, sample_rate: int, bits: int, data_bytes: int) -> bytes:
    """A canonical 44-byte PCM WAV header for ``data_bytes`` of sample data (the sizes sit at
    offsets 4 and 40, for a writer that rewrites them as the file grows)."""
    align = channels * bits // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE",
        b"fmt ", 16, WAVE_FORMAT_PCM, channels, sample_rate, sample_rate * align, align, bits,
        b"data", data_bytes,
    )  # fmt: skip


# -- durations ----------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``5``, ``2.5``, ``"500ms"``, ``"5s"``, ``"2m"`` or ``"1h"``.

    Raises ``ValueError`` for anything else (negative numbers and booleans included).
    """
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")  # noqa: TRY004 - one error type for every bad duration
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative duration {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"bad duration {value!r} (write e.g. 5s, 500ms, 2m)")
