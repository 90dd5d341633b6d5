"""The ``playback`` plugin: per-call queues of prompts, tones, silence and text to speak.

``ivr_play`` queues a :class:`~ivr.call.PlayItem`; ``ivr_audio_out`` writes each playing call's
next 160 samples every tick, running gaplessly from one item into the next within a frame; each
item that finishes is reported as ``PlaybackDone(item.id)``. ``ivr_stop_playback`` empties the
queue at once (barge-in): the frame written next is already silent, and each flushed item is
reported as ``PlaybackDone(item.id, interrupted=True)``.

Item kinds:

* ``file``: a WAV file of any rate, sample width (8/16/24/32-bit integer, float) and channel
  count; downmixed and resampled to 8 kHz with soxr. Decoded prompts are kept in an LRU cache
  keyed by (path, mtime, size), so a prompt edited on disk is picked up. Paths are used as given
  (the flow layer resolves and sandboxes them). A missing or unreadable file raises from
  ``ivr_play``, so the flow sees the error where it asked.
* ``tone``: ``"440"``, ``"350+440"``, ``"dtmf:5"``; options ``duration`` (s, default 0.5) and
  ``level`` (peak dBFS of the sum, default -10).
* ``silence``: option ``duration`` (s, default 1).
* ``say``: text for the ``ivr_tts`` hook (options ``voice``, ``rate`` passed on). Synthesis runs
  in a worker thread from the moment the item is queued, so the media clock never waits for it;
  the item starts when its audio is ready (the call hears silence until then). If synthesis
  fails the item is skipped, logged, and reported with ``interrupted=True``.

Configuration (``plugins.playback``): ``cache_size`` (decoded prompts kept, default 64),
``tts_workers`` (threads for ``say``, default 4).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ivr import hookimpl
from ivr.audio import FRAME_SAMPLES, SAMPLE_RATE, parse_duration, read_wav
from ivr.call import AudioBatch, CallContext, PlaybackDone, PlayItem
from ivr_plugins.tones import make_tone, parse_tone_spec

log = logging.getLogger(__name__)

NAME = "playback"
KINDS = ("file", "tone", "silence", "say")
_SAMPLE_BYTES = 2  # int16

_settings: dict[str, Any] = {"cache_size": 64, "tts_workers": 4}


class PromptCache:
    """Decoded prompts (8 kHz int16) by (path, mtime, size), least recently used dropped first.

    Shared by the event loop and the TTS worker threads, hence the lock.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def load(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The prompt at ``path`` in media format; decoded once per version of the file."""
        stat = os.stat(path)
        key = (os.fspath(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            samples = self._entries.get(key)
            if samples is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return samples
        samples = read_wav(path)  # outside the lock: decoding may take a few milliseconds
        samples.setflags(write=False)  # shared between calls
        with self._lock:
            self.misses += 1
            self._entries[key] = samples
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return samples

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


prompt_cache = PromptCache()
_executor: ThreadPoolExecutor | None = None


def _tts_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(int(_settings["tts_workers"]), thread_name_prefix="ivr-tts")
    return _executor


@dataclass
class _Queued:
    """An item in a call's queue: its samples (``None`` means silence) and how far it played."""

    item: PlayItem
    samples: np.ndarray | None = None
    length: int = 0
    position: int = 0
    pending: Future | None = None  # `say` items until their audio is ready
    # ``samples`` as a byte view (no copy), for the per-tick copy of whole frames; None when the
    # samples are not plain 1-D int16 (that item takes the general path)
    raw: memoryview | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.bind_samples()

    def bind_samples(self) -> None:
        """Refresh :attr:`raw` after ``samples`` was set."""
        samples = self.samples
        plain = (samples is not None and samples.dtype == np.int16 and samples.ndim == 1
                 and samples.flags.c_contiguous)
        self.raw = memoryview(samples).cast("B") if plain else None


@dataclass
class CallPlayback:
    """Per-call state, ``call.data["playback"]``."""

    queue: deque[_Queued] = field(default_factory=deque)

    @property
    def playing(self) -> bool:
        return bool(self.queue)


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.playback``."""
    section = (config.get("plugins") or {}).get(NAME) or {}
    _settings["cache_size"] = int(section.get("cache_size", 64))
    _settings["tts_workers"] = int(section.get("tts_workers", 4))
    prompt_cache.max_entries = _settings["cache_size"]


def _state(call: CallContext) -> CallPlayback:
    state = call.data.get(NAME)
    if state is None:
        state = call.data[NAME] = CallPlayback()
    return state


def _synthesise(hook: Any, text: str, options: dict[str, Any]) -> np.ndarray:
    """Worker-thread half of a ``say`` item: text -> WAV path (``ivr_tts``) -> samples."""
    path = hook.ivr_tts(text=text, options=options)
    if path is None:
        raise RuntimeError("no plugin answered ivr_tts (is the tts plugin loaded?)")
    return prompt_cache.load(path)


def _prepare(call: CallContext, item: PlayItem) -> _Queued:
    options = item.options or {}
    if item.kind == "file":
        samples = prompt_cache.load(item.value)
        return _Queued(item, samples, len(samples))
    if item.kind == "tone":
        freqs = parse_tone_spec(item.value)
        level = float(options.get("level", -10.0)) - 20 * np.log10(len(freqs))
        samples = make_tone(freqs, parse_duration(options.get("duration", 0.5)), level)
        return _Queued(item, samples, len(samples))
    if item.kind == "silence":
        return _Queued(item, None, int(round(parse_duration(options.get("duration", 1.0)) * SAMPLE_RATE)))
    # say
    tts_options = {k: v for k, v in options.items() if k in ("voice", "rate")}
    future = _tts_executor().submit(_synthesise, call.hook, str(item.value), tts_options)
    return _Queued(item, pending=future)


@hookimpl
def ivr_play(call: CallContext, item: PlayItem) -> bool | None:
    """Queue ``item`` behind whatever the call is playing; ``None`` for kinds not handled here."""
    if item.kind not in KINDS:
        return None
    queued = _prepare(call, item)
    _state(call).queue.append(queued)
    log.debug("call %s: queued %s %r (id %d)", call.id, item.kind, item.value, item.id)
    return True


@hookimpl
def ivr_stop_playback(call: CallContext) -> None:
    """Flush the call's queue now; each flushed item is reported as interrupted."""
    state = call.data.get(NAME)
    if state is None:
        return
    flushed, state.queue = state.queue, deque()
    for queued in flushed:
        if queued.pending is not None:
            queued.pending.cancel()
        call.emit(PlaybackDone(queued.item.id, interrupted=True))
    if flushed:
        log.debug("call %s: playback stopped, %d item(s) flushed", call.id, len(flushed))


def _ready(call: CallContext, queued: _Queued) -> bool:
    """Whether a ``say`` item's audio is in; a failed one is reported and must be dropped."""
    future = queued.pending
    if future is None:
        return True
    if not future.done():
        return False
    queued.pending = None
    try:
        queued.samples = future.result()
    except Exception:
        log.exception("call %s: text-to-speech failed for %r", call.id, queued.item.value)
        queued.samples, queued.length = None, -1
        return True
    queued.length = len(queued.samples)
    queued.bind_samples()
    return True


def _fill(call: CallContext, state: CallPlayback, out: np.ndarray) -> None:
    """Write the next frame of the call's queue into ``out`` (160 samples)."""
    filled = 0
    while filled < FRAME_SAMPLES and state.queue:
        head = state.queue[0]
        if not _ready(call, head):
            break  # TTS still running: the rest of the frame stays as it is (silence)
        if head.length < 0:  # synthesis failed
            state.queue.popleft()
            call.emit(PlaybackDone(head.item.id, interrupted=True))
            continue
        count = min(FRAME_SAMPLES - filled, head.length - head.position)
        if head.samples is None:
            out[filled : filled + count] = 0
        else:
            out[filled : filled + count] = head.samples[head.position : head.position + count]
        head.position += count
        filled += count
        if head.position >= head.length:
            state.queue.popleft()
            call.emit(PlaybackDone(head.item.id, interrupted=False))


@hookimpl
def ivr_audio_out(batch: AudioBatch) -> None:
    """Write the next frame of every playing call into its row of ``batch.pcm`` (nothing on a
    catch-up tick, whose frames are not sent: the prompt resumes where it was after the gap)."""
    if not batch.send:
        return
    out = batch.pcm
    # The common case, a call in the middle of an item with samples, costs one byte slice per
    # call; those frames are joined and written with one assignment for the whole batch. Item
    # ends, silence, pending text and failures go through _fill.
    whole_rows: list[int] = []
    whole_frames: list[memoryview] = []
    for i, call in enumerate(batch.calls):
        state = call.data.get(NAME)
        if state is None or not state.queue:
            continue
        head = state.queue[0]
        end = head.position + FRAME_SAMPLES
        if head.raw is not None and end < head.length:
            whole_rows.append(i)
            whole_frames.append(head.raw[head.position * _SAMPLE_BYTES : end * _SAMPLE_BYTES])
            head.position = end
        else:
            _fill(call, state, out[i])
    if whole_rows:
        frames = np.frombuffer(b"".join(whole_frames), dtype=np.int16).reshape(-1, FRAME_SAMPLES)
        if len(whole_rows) == len(out):
            out[:] = frames
        else:
            out[whole_rows] = frames


@hookimpl
def ivr_call_ended(call: CallContext, reason: str) -> None:
    """Flush whatever was still queued and release the call's state."""
    ivr_stop_playback(call)
    call.data.pop(NAME, None)
