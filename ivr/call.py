"""What plugins and flows see of a call: :class:`CallContext`, the media :class:`AudioBatch`,
the items a call can play, the events a flow waits on, and the caller's :class:`VoiceActivity`."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypedDict

import numpy as np

log = logging.getLogger(__name__)

_item_ids = itertools.count(1)

#: The call whose work is running (set by the engine in each call's task, inherited by the tasks
#: it starts); log lines written meanwhile name the call, its flow, caller and callee.
current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("current_call", default=None)


@dataclass
class PlayItem:
    """One thing to play: ``kind`` is ``file`` (value: path), ``tone`` (value: spec such as
    ``"440"``, ``"350+440"``, ``"dtmf:5"``; options ``duration``), ``silence`` (options
    ``duration`` in seconds) or ``say`` (value: text; options ``voice``)."""

    kind: str
    value: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    id: int = field(default_factory=lambda: next(_item_ids))


# Events a flow waits on (put on CallContext.events) ------------------------------------


@dataclass(frozen=True)
class DtmfEvent:
    digit: str
    source: str


@dataclass(frozen=True)
class SpeechEvent:
    """Voice activity on the caller's side: ``kind`` is ``"start"`` (the caller began talking)
    or ``"end"`` (they stopped).

    An ``end`` carries the finished ``utterance``: its audio as a fresh int16 numpy array at
    :data:`ivr.audio.SAMPLE_RATE`, from a little before the onset to a little after the last voiced
    frame, the flow's to keep (it hands it to ``ivr_stt``; ``ivr_speech`` implementations see the
    same array and only read it). It is ``None`` on ``start``, and on an ``end`` from a reporter
    that keeps no audio.
    """

    kind: str  # "start" | "end"
    utterance: np.ndarray | None = field(default=None, compare=False, repr=False)


class VoiceActivity(TypedDict):
    """The caller's voice activity now, as ``call.voice`` (``None`` while nothing tracks it).

    Whatever reports speech keeps these keys current on every frame, so that barge-in and
    silence detection can read how long the caller has been talking (it may keep more keys of
    its own in the same mapping). Times are the media clock's (``AudioBatch.now``).
    """

    speaking: bool  # inside an utterance now
    speech_start: float | None  # when the current (or last) utterance began
    last_voice: float | None  # end time of the latest voiced frame
    voiced_ms: int  # voiced audio in the current (or last) utterance, ms


@dataclass(frozen=True)
class PlaybackDone:
    item_id: int
    interrupted: bool = False


@dataclass(frozen=True)
class RecordingDone:
    path: str
    duration: float
    reason: str  # max_length | silence | key | stopped | hangup


@dataclass(frozen=True)
class HangupEvent:
    reason: str


@dataclass(frozen=True)
class ReferEvent:
    status: int
    final: bool


@dataclass
class AudioBatch:
    """One media tick: row ``i`` of ``pcm`` belongs to ``calls[i]``.

    ``send`` is False on a catch-up tick the media clock runs after the loop stalled: its
    outbound frames are not sent (the caller hears a gap), so a source of audio writes nothing
    and keeps its place, or that audio would be lost (see :func:`ivr.hookspecs.ivr_audio_out`).
    """

    calls: list["CallContext"]
    pcm: np.ndarray  # (N, FRAME_SAMPLES) int16 (ivr.audio)
    now: float
    tick: int
    send: bool = True

    def subset(self, index: int) -> "AudioBatch":
        """A batch of the one call at ``index`` sharing memory with this one."""
        return AudioBatch([self.calls[index]], self.pcm[index : index + 1], self.now, self.tick, self.send)


class CallContext:
    """One call as the engine, its plugins and its flow see it.

    ``data`` holds per-plugin state (``call.data.setdefault("myplugin", {})``); ``vars`` the flow's
    variables; ``events`` the queue the flow executor reads; ``voice`` the caller's
    :class:`VoiceActivity` when a plugin tracks it.
    """

    def __init__(
        self,
        call_id: str,
        hook: Any,
        *,
        from_uri: str = "",
        to_uri: str = "",
        from_user: str = "",
        to_user: str = "",
        headers: dict[str, str] | None = None,
        source: tuple[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = call_id
        self.hook = hook
        self.from_uri = from_uri
        self.to_uri = to_uri
        self.from_user = from_user
        self.to_user = to_user
        self.headers = headers or {}
        self.source = source
        self.clock = clock
        self.flow: str | None = None
        self.vars: dict[str, Any] = {}
        self.data: dict[str, Any] = {}
        self.digits: list[str] = []
        self.recordings: list[str] = []
        self.start_time = time.time()
        self.answer_time: float | None = None
        self.end_time: float | None = None
        self.end_reason: str | None = None
        self.reject_status: int | None = None  # the SIP status the call was refused with
        #: Each transfer tried: ``{"to": target, "status": SIP status, "outcome": flow outcome}``.
        self.transfers: list[dict[str, Any]] = []
        self.failed: str | None = None  # set when a plugin raised for this call
        #: Errors the flow met, in order (``"flow/node: ValueError: ..."``): an action that
        #: raised, also when the flow's ``on_error`` handled it.
        self.errors: list[str] = []
        self.events: asyncio.Queue = asyncio.Queue()
        self.voice: VoiceActivity | None = None
        # set by the engine: async callables for signalling actions
        self.controller: Any = None

    # -- what a flow or a plugin asks for ----------------------------------------------------

    def play(self, item: PlayItem) -> PlayItem:
        """Queue ``item``; a :class:`PlaybackDone` event follows when it has played."""
        if not self.hook.ivr_play(call=self, item=item):
            raise RuntimeError(f"no plugin plays {item.kind!r} items (is the playback plugin loaded?)")
        return item

    def stop_playback(self) -> None:
        self.hook.ivr_stop_playback(call=self)

    def start_recording(self, path: str, **options: Any) -> None:
        if not self.hook.ivr_start_recording(call=self, path=path, options=options):
            raise RuntimeError("no plugin records (is the recording plugin loaded?)")
        self.recordings.append(path)

    def stop_recording(self, reason: str = "stopped") -> None:
        self.hook.ivr_stop_recording(call=self, reason=reason)

    # -- what plugins report ------------------------------------------------------------------

    def report_dtmf(self, digit: str, source: str) -> None:
        """One key press (already de-duplicated): fires ``ivr_dtmf`` and wakes the flow."""
        self.digits.append(digit)
        self.hook.ivr_dtmf(call=self, digit=digit, source=source)
        self.emit(DtmfEvent(digit, source))

    def report_speech(self, kind: str, utterance: np.ndarray | None = None) -> None:
        """Voice activity ``"start"`` or ``"end"`` (with the finished ``utterance``, see
        :class:`SpeechEvent`): fires ``ivr_speech`` and wakes the flow."""
        self.hook.ivr_speech(call=self, event=kind, utterance=utterance)
        self.emit(SpeechEvent(kind, utterance))

    def emit(self, event: Any) -> None:
        self.events.put_nowait(event)

    def __repr__(self) -> str:
        return f"<CallContext {self.id} {self.from_user}->{self.to_user}>"
