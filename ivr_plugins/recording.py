"""The ``recording`` plugin: call audio to WAV files that survive a crash.

``ivr_start_recording(call, path, options)`` writes 16-bit PCM at the media rate (8 kHz): mono (the caller) or, with
``stereo=True``, the caller on the left and our side on the right. Frames are written as they
arrive: the caller's in ``ivr_audio_in``, ours in ``ivr_audio_out`` marked ``trylast`` so it
records what the other plugins finally produced. Every frame delivered while recording is
written; tests count them.

Crash safety: the header's sizes are rewritten and the file flushed every second, so a process
killed outright (SIGKILL, power aside) leaves a file whose header is at most a second behind its
data. :func:`repair_wav` fixes the sizes from the file's length; ``ivr_startup`` runs it on every WAV
under the recordings folder, for recordings a dead process left behind.

Options: ``stereo`` (bool), ``max_length`` (s), ``silence_timeout`` (s: stop after that long
without the caller's voice; uses the call's voice activity, ``call.voice``, when a VAD plugin keeps
it, else a level check at ``silence_level_dbfs``, default -45), ``finish_on_key`` (keys that stop the
recording, e.g. ``"#"``; they come through ``ivr_dtmf``). ``beep`` is *not* played here: the flow
plays the beep and starts the recording when the beep's ``PlaybackDone`` arrives, so the beep is
neither clipped nor recorded.

``trim`` (bool): when the caller ends the message on the line (``silence_timeout`` or a
``finish_on_key`` key: :data:`TRIM_REASONS`), leading and trailing silence is cut from the file itself,
keeping :data:`TRIM_MARGIN` seconds of it on each side (a message that is silence throughout
becomes an empty WAV). Voice is what the VAD classifies as voice (``call.voice["last_voice"]``)
when one is loaded, else frames above ``silence_level_dbfs``; in stereo, the caller's channel decides. The metadata's
``duration`` and ``sample_count`` describe the trimmed file, and ``trimmed`` says how many seconds
were cut at the start and at the end.

When a recording ends, whatever ended it (``ivr_stop_recording``, the options above, the call's
end: ``hangup``, a write error: ``error``), the file is finalised, a metadata file
``<name>.json`` is written beside it (call id, from, to, start in ISO 8601, duration, end reason,
sample count) and ``RecordingDone(path, duration, reason)`` is emitted.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ivr import hookimpl
from ivr.audio import (
    FRAME_SECONDS,
    SAMPLE_RATE,
    parse_duration,
    read_wav_info,
    wav_header,
)
from ivr.call import AudioBatch, CallContext, RecordingDone

log = logging.getLogger(__name__)

NAME = "recording"
HEADER_SYNC_SAMPLES = SAMPLE_RATE  # rewrite the header once a second of audio
#: Silence kept before the first and after the last voiced frame by ``trim``: the soft start and
#: end of words lie under the voice detector's threshold.
TRIM_MARGIN = 0.2
#: End reasons after which ``trim`` applies. A recording ended by a hang-up, max_length or a
#: shutdown is kept as recorded: it may have been cut mid-word, and nothing tells it was silence.
TRIM_REASONS = ("silence", "key")


class WavWriter:
    """A 16-bit PCM WAV file written incrementally, its header kept nearly current."""

    def __init__(self, path: str | os.PathLike[str], channels: int, sample_rate: int = SAMPLE_RATE) -> None:
        self.path = Path(path)
        self.channels = channels
        self.sample_rate = sample_rate
        self.frames = 0  # sample frames written (one sample per channel)
        self._synced = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = open(self.path, "wb")
        self._file.write(wav_header(channels, sample_rate, 16, 0))
        self._file.flush()

    def write(self, samples: np.ndarray) -> None:
        """Append ``(frames,)`` (mono) or ``(frames, channels)`` int16 samples."""
        assert self._file is not None, "write after close"
        self._file.write(np.ascontiguousarray(samples, dtype="<i2").tobytes())
        self.frames += samples.shape[0]
        if self.frames - self._synced >= HEADER_SYNC_SAMPLES:
            self.sync()

    def sync(self) -> None:
        """Rewrite the header's sizes for what is written so far and flush to the OS."""
        assert self._file is not None
        data_bytes = self.frames * self.channels * 2
        end = self._file.tell()
        self._file.seek(4)
        self._file.write(struct.pack("<I", 36 + data_bytes))
        self._file.seek(40)
        self._file.write(struct.pack("<I", data_bytes))
        self._file.seek(end)
        self._file.flush()
        self._synced = self.frames

    def close(self) -> None:
        if self._file is not None:
            try:
                self.sync()
            finally:
                self._file.close()
                self._file = None


def repair_wav(path: str | os.PathLike[str]) -> int:
    """Make a WAV header's sizes match the file's length (after a crash); return its sample frames.

    A partial last sample frame is cut off. A metadata file beside it that never got an end
    reason is completed with ``end_reason: "recovered"``. Raises ``ValueError`` for non-WAV files.
    """
    with open(path, "r+b") as wav:
        info = read_wav_info(wav.read(4096))
        size = os.fstat(wav.fileno()).st_size
        data_bytes = max(0, size - info.data_offset)
        data_bytes -= data_bytes % info.block_align
        wav.truncate(info.data_offset + data_bytes)
        wav.seek(4)
        wav.write(struct.pack("<I", info.data_offset - 8 + data_bytes))
        wav.seek(info.data_offset - 4)
        wav.write(struct.pack("<I", data_bytes))
    frames = data_bytes // info.block_align
    meta_path = Path(path).with_suffix(".json")
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("end_reason") is None:
                meta.update(end_reason="recovered", sample_count=frames,
                            duration=round(frames / info.sample_rate, 3))  # fmt: skip
                _write_json(meta_path, meta)
        except (OSError, ValueError):
            log.warning("could not update recording metadata %s", meta_path, exc_info=True)
    if data_bytes != info.data_size:
        log.info("repaired %s: %d sample frames (header said %d bytes, file holds %d)",
                 path, frames, info.data_size, data_bytes)  # fmt: skip
    return frames


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


@dataclass
class Recording:
    """One call's recording in progress, ``call.data["recording"]``."""

    path: str
    writer: WavWriter
    stereo: bool
    max_samples: int | None
    silence_timeout: float | None
    finish_keys: str
    started: datetime
    meta: dict[str, Any]
    started_at: float | None = None  # media clock of the first frame
    pending_in: np.ndarray | None = field(default=None, repr=False)  # caller frame awaiting ours
    quiet_frames: int = 0
    trim: bool = False
    voice_start: int | None = None  # sample frame where the first voiced frame begins
    voice_end: int | None = None  # sample frame where the last voiced frame ends

    @property
    def duration(self) -> float:
        return self.writer.frames / SAMPLE_RATE


_settings: dict[str, Any] = {"silence_level_dbfs": -45.0}


@hookimpl
def ivr_startup(recordings: Path) -> None:
    """Repair every WAV under ``recordings`` a dead process left with a stale header
    (:func:`repair_wav` leaves a finished file as it is)."""
    checked = 0
    for path in sorted(recordings.rglob("*.wav")) if recordings.is_dir() else []:
        try:
            repair_wav(path)
            checked += 1
        except Exception as exc:  # one bad file must not stop the others or the start-up
            log.warning("cannot repair %s: %r", path, exc)
    if checked:
        log.info("checked %d recording(s) in %s", checked, recordings)


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.recording``."""
    section = (config.get("plugins") or {}).get(NAME) or {}
    _settings["silence_level_dbfs"] = float(section.get("silence_level_dbfs", -45.0))


@hookimpl
def ivr_start_recording(call: CallContext, path: str, options: dict[str, Any]) -> bool:
    """Open ``path`` and record from the next frame on (a running recording is stopped first)."""
    if call.data.get(NAME) is not None:
        _finish(call, "stopped")
    options = options or {}
    stereo = bool(options.get("stereo", False))
    max_length = options.get("max_length")
    silence = options.get("silence_timeout")
    writer = WavWriter(path, 2 if stereo else 1)
    started = datetime.now(timezone.utc)
    meta = {
        "path": str(path), "call_id": call.id, "from": call.from_uri, "to": call.to_uri,
        "start": started.isoformat(timespec="milliseconds"), "duration": None,
        "end_reason": None, "sample_count": 0, "sample_rate": SAMPLE_RATE,
        "channels": ["caller", "ivr"] if stereo else ["caller"],
    }  # fmt: skip
    # written now too, so a crash leaves it for repair_wav to complete
    _write_json(Path(path).with_suffix(".json"), meta)
    call.data[NAME] = Recording(
        path=str(path),
        writer=writer,
        stereo=stereo,
        max_samples=int(round(parse_duration(max_length) * SAMPLE_RATE)) if max_length else None,
        silence_timeout=parse_duration(silence) if silence else None,
        finish_keys=str(options.get("finish_on_key") or ""),
        started=started,
        meta=meta,
        trim=bool(options.get("trim", False)),
    )
    log.info("call %s: recording to %s (%s)", call.id, path, "stereo" if stereo else "mono")
    return True


def _write(call: CallContext, rec: Recording, samples: np.ndarray, caller: np.ndarray, now: float) -> None:
    """Write one frame, then apply max_length and silence_timeout."""
    if rec.started_at is None:
        rec.started_at = now - FRAME_SECONDS
    if rec.max_samples is not None:
        samples = samples[: rec.max_samples - rec.writer.frames]
    if rec.trim and len(samples) and _is_voice(call, caller, now):
        if rec.voice_start is None:
            rec.voice_start = rec.writer.frames
        rec.voice_end = rec.writer.frames + len(samples)
    try:
        rec.writer.write(samples)
    except OSError:
        log.exception("call %s: writing %s failed", call.id, rec.path)
        _finish(call, "error")
        return
    if rec.max_samples is not None and rec.writer.frames >= rec.max_samples:
        _finish(call, "max_length")
    elif rec.silence_timeout is not None and _silent_for(call, rec, caller, now) >= rec.silence_timeout:
        _finish(call, "silence")


def _is_voice(call: CallContext, caller: np.ndarray, now: float) -> bool:
    """Whether this tick's caller frame is voice: the VAD's verdict (``call.voice``) when one is
    loaded, else the frame's level. The VAD may run after us in the tick (plugin order), so its
    verdict on the previous frame counts too: one frame late at worst, well inside ``TRIM_MARGIN``."""
    voice = call.voice
    if voice is not None:
        last_voice = voice.get("last_voice")
        return last_voice is not None and last_voice >= now - FRAME_SECONDS - 1e-6
    return _level(caller) >= _settings["silence_level_dbfs"]


def _level(frame: np.ndarray) -> float:
    """The frame's power in dBFS."""
    power = float(np.mean(frame.astype(np.float64) ** 2)) / 32768.0**2
    return 10 * np.log10(power) if power > 0 else -200.0


def _trim_file(rec: Recording) -> tuple[float, float]:
    """Cut the silence before the first and after the last voiced frame, but
    :data:`TRIM_MARGIN`, from the finished file; return the seconds cut at (start, end)."""
    total = rec.writer.frames
    margin = int(TRIM_MARGIN * SAMPLE_RATE)
    if rec.voice_start is None or rec.voice_end is None:
        keep_from, keep_to = 0, 0  # silence throughout: nothing is message
    else:
        keep_from, keep_to = max(0, rec.voice_start - margin), min(total, rec.voice_end + margin)
    if (keep_from, keep_to) == (0, total):
        return 0.0, 0.0
    path = Path(rec.path)
    channels = 2 if rec.stereo else 1
    with open(path, "rb") as source:
        info = read_wav_info(source.read(4096))
        source.seek(info.data_offset + keep_from * channels * 2)
        kept = np.frombuffer(source.read((keep_to - keep_from) * channels * 2), dtype="<i2")
    partial = path.with_name(f".{path.name}.trim")
    writer = WavWriter(partial, channels)
    writer.write(kept.reshape(-1, channels) if channels > 1 else kept)
    writer.close()
    os.replace(partial, path)  # the untrimmed file stays whole until the trimmed one is
    rec.writer.frames = writer.frames
    return keep_from / SAMPLE_RATE, (total - keep_to) / SAMPLE_RATE


def _silent_for(call: CallContext, rec: Recording, caller: np.ndarray, now: float) -> float:
    """How long the caller has been quiet, by the call's voice activity when a VAD keeps it."""
    voice = call.voice
    if voice is not None:
        if voice.get("speaking"):
            return 0.0
        last = voice.get("last_voice")
        assert rec.started_at is not None
        return now - max(last if last is not None else rec.started_at, rec.started_at)
    quiet = _level(caller) < _settings["silence_level_dbfs"]
    rec.quiet_frames = rec.quiet_frames + 1 if quiet else 0
    return rec.quiet_frames * FRAME_SECONDS


@hookimpl
def ivr_audio_in(batch: AudioBatch) -> None:
    """Record the caller: written now (mono) or held for our side of the same tick (stereo)."""
    for i, call in enumerate(batch.calls):
        rec = call.data.get(NAME)
        if rec is None:
            continue
        if rec.stereo:
            rec.pending_in = batch.pcm[i].copy()
        else:
            _write(call, rec, batch.pcm[i], batch.pcm[i], batch.now)


@hookimpl(trylast=True)
def ivr_audio_out(batch: AudioBatch) -> None:
    """Record our side, interleaved with the caller frame of this tick (stereo only)."""
    for i, call in enumerate(batch.calls):
        rec = call.data.get(NAME)
        if rec is None or not rec.stereo or rec.pending_in is None:
            continue  # a recording started between this tick's in and out begins next tick
        caller, rec.pending_in = rec.pending_in, None
        _write(call, rec, np.column_stack([caller, batch.pcm[i]]), caller, batch.now)


def _finish(call: CallContext, reason: str) -> None:
    rec: Recording | None = call.data.pop(NAME, None)
    if rec is None:
        return
    try:
        if rec.pending_in is not None:
            # the caller's frame of a tick whose outbound half never came: keep it, our side silent
            rec.writer.write(np.column_stack([rec.pending_in, np.zeros_like(rec.pending_in)]))
    except OSError:
        log.exception("call %s: writing %s failed", call.id, rec.path)
        reason = "error"
    try:
        rec.writer.close()
    except OSError:
        log.exception("call %s: closing %s failed", call.id, rec.path)
        reason = "error"
    if rec.trim and reason in TRIM_REASONS:
        try:
            cut_start, cut_end = _trim_file(rec)
            rec.meta["trimmed"] = {"start": round(cut_start, 3), "end": round(cut_end, 3)}
        except (OSError, ValueError):
            log.exception("call %s: trimming %s failed; kept as recorded", call.id, rec.path)
    rec.meta.update(duration=round(rec.duration, 3), end_reason=reason, sample_count=rec.writer.frames)
    try:
        _write_json(Path(rec.path).with_suffix(".json"), rec.meta)
    except OSError:
        log.exception("call %s: writing metadata for %s failed", call.id, rec.path)
    log.info("call %s: recording %s ended (%s, %.2f s)", call.id, rec.path, reason, rec.duration)
    call.emit(RecordingDone(rec.path, rec.duration, reason))


@hookimpl
def ivr_stop_recording(call: CallContext, reason: str) -> None:
    """Finalise the call's recording, if any, with ``reason``."""
    _finish(call, reason)


@hookimpl
def ivr_dtmf(call: CallContext, digit: str, source: str) -> None:
    """Stop on a ``finish_on_key`` key."""
    rec = call.data.get(NAME)
    if rec is not None and digit in rec.finish_keys:
        _finish(call, "key")


@hookimpl
def ivr_call_ended(call: CallContext, reason: str) -> None:
    """A call's end finalises its recording."""
    _finish(call, "hangup")
