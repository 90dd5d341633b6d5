"""One running flow on one call: :class:`FlowSession`, what action handlers are given.

The session is the only reader of ``call.events``. Digits that arrive while no collect is
listening go to the type-ahead buffer (``session.typeahead``) so the next ``menu`` or ``collect``
sees them first, unless that node says ``flush_dtmf``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, TypeVar

from ivr.audio import FRAME_SECONDS, parse_duration
from ivr.call import (
    CallContext,
    DtmfEvent,
    HangupEvent,
    PlaybackDone,
    PlayItem,
    SpeechEvent,
)
from ivr.flows import speech
from ivr.flows.diagnostics import FlowRuntimeError
from ivr.flows.model import Flow, Node
from ivr.flows.paths import resolve_inside
from ivr.flows.registry import ActionRegistry
from ivr.flows.templating import render

__all__ = ["CALLER_END_REASONS", "CallerHungUp", "FlowFinished", "FlowSession", "GraphWalker", "SubReturn", "TraceEntry",
           "TraceSink"]

log = logging.getLogger(__name__)

TraceSink = Callable[["TraceEntry"], None]

_T = TypeVar("_T")

#: End reasons that mean the caller (not we, not a fault) ended the call.
CALLER_END_REASONS = frozenset({"remote_hangup", "cancelled"})

# How often an utterance's voiced length is re-read while waiting for it to reach min_speech:
# once a media frame, as often as it can change.
_SPEECH_POLL = FRAME_SECONDS


class CallerHungUp(Exception):
    """The caller hung up while the flow waited; the executor turns it into outcome ``hangup``."""


class FlowFinished(Exception):
    """Raised by terminal actions (hangup, reject, transfer) to end the whole flow with
    ``outcome``."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class SubReturn(Exception):
    """Raised by ``return`` to end the innermost sub-routine with ``outcome``."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


#: ``walk(session, flow, start) -> outcome``: how the executor walks a node graph; the session
#: hands it to actions that run a graph of their own (``sub``).
GraphWalker = Callable[["FlowSession", Flow, str], Awaitable[str]]


@dataclass(frozen=True)
class TraceEntry:
    """One line of a flow trace: seconds since the flow started, the node, what happened."""

    time: float
    node: str
    event: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.time:8.3f}  {self.node:<16} {self.event:<9} {self.detail}".rstrip()


class FlowSession:
    """The state of one flow run on one call, and the services action handlers use."""

    def __init__(
        self,
        flow: Flow,
        call: CallContext,
        config: dict[str, Any],
        actions: ActionRegistry,
        *,
        walk: GraphWalker,
        wall_clock: Callable[[], dt.datetime] | None = None,
        trace_sink: TraceSink | None = None,
        simulated_outcomes: Mapping[str, str] | None = None,
    ) -> None:
        self.flow = flow
        self.call = call
        self.config = config
        self.actions = actions
        self.vars: dict[str, Any] = call.vars
        for name, value in flow.initial_vars.items():
            self.vars.setdefault(name, value)
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self._wall_clock = wall_clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._trace_sink = trace_sink
        self.node: Node | None = None
        self.typeahead: list[str] = []
        self.utterance: Any = None  # the audio of the last SpeechEvent "end" (int16), for ivr_stt
        self.answered = False
        self.early_media = False  # media up before the answer (183): the early_media action
        self.caller_gone = False
        #: Why the call ended under the flow (the HangupEvent's reason), once it has.
        self.end_reason: str | None = None
        self.in_hangup_handler = False
        self.in_error_handler = False
        self.final: str | None = None  # "hangup" | "rejected" | "transferred" once decided
        self.menu_state: dict[str, dict[str, int]] = {}
        self.sub_depth = 0
        self._walk = walk
        self._pending_get: asyncio.Task | None = None
        self._simulated_outcomes = simulated_outcomes

    # -- services for action handlers ---------------------------------------------------------

    async def run_blocking(self, func: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """Run the blocking ``func(*args, **kwargs)`` in a worker thread and return its result.

        The way for an action to do blocking work (a file, a database driver, a sync HTTP
        client) without stalling every other call: the event loop serves them meanwhile. Under
        ``ivr simulate`` and :mod:`ivr.testing` the virtual clock waits for the thread, and the
        work takes no virtual time. The log tags of the call travel with it into the thread.
        """
        return await asyncio.to_thread(functools.partial(func, *args, **kwargs))

    async def run_io(self, awaitable: Awaitable[_T]) -> _T:
        """Await ``awaitable``, network I/O on the event loop (an async HTTP or database client),
        and return its result.

        On a real call this is a plain ``await``; under ``ivr simulate`` and :mod:`ivr.testing`
        it makes the virtual clock wait for the real sockets instead of jumping ahead to the
        next timer (the I/O takes no virtual time unless it outlasts one: a timeout still fires).
        """
        outside_work = getattr(self.loop, "outside_work", None)  # the simulator's loop has it
        with outside_work() if outside_work is not None else contextlib.nullcontext():
            return await awaitable

    @property
    def simulated(self) -> bool:
        """``True`` under ``ivr simulate`` and :mod:`ivr.testing`: no media, a virtual clock."""
        return self._simulated_outcomes is not None

    def simulated_outcome(self, action: str, default: str) -> str:
        """Under simulation, the outcome an action that needs a real peer (a bot, say) reports
        instead of running: what ``ivr simulate --outcome ACTION=OUTCOME`` says, else
        ``default``."""
        return (self._simulated_outcomes or {}).get(action, default)

    async def run_graph(self, flow: Flow, start: str) -> str:
        """Walk ``flow`` from node ``start`` as the executor does; return its last outcome
        (``sub`` runs its sub-routine with this; ``return`` raises :class:`SubReturn`)."""
        return await self._walk(self, flow, start)

    # -- time and trace ---------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the flow started, on the loop's clock (virtual under simulate)."""
        return self.loop.time() - self.started

    def wall_time(self) -> dt.datetime:
        """The current date and time (aware); ``hours`` reads it. Injectable for tests."""
        return self._wall_clock()

    def trace(self, event: str, detail: str = "") -> None:
        entry = TraceEntry(round(self.elapsed(), 3), self.node.name if self.node else "-", event, detail)
        log.debug("call %s: %s", self.call.id, entry)
        if self._trace_sink is not None:
            self._trace_sink(entry)

    # -- parameters -------------------------------------------------------------------------

    def template_context(self) -> dict[str, Any]:
        call = self.call
        return {
            "call": {
                "id": call.id,
                "from": call.from_user or call.from_uri,
                "to": call.to_user or call.to_uri,
                "from_uri": call.from_uri,
                "to_uri": call.to_uri,
                "from_user": call.from_user,
                "to_user": call.to_user,
                "headers": dict(call.headers),
            },
            "vars": self.vars,
            "config": self.config,
        }

    def render(self, value: Any, *, for_path: bool = False) -> Any:
        """Render a template string (other values unchanged); see :mod:`ivr.flows.templating`."""
        return render(value, self.template_context(), for_path=for_path)

    def setting(self, params: Any, name: str, default: Any) -> Any:
        """A node parameter, else the flow's ``defaults:`` entry, else ``default``."""
        if isinstance(params, dict) and name in params:
            return params[name]
        return self.flow.defaults.get(name, default)

    def duration(self, params: Any, name: str, default: float) -> float:
        return parse_duration(self.setting(params, name, default))

    def barge_in(self) -> set[str]:
        """What may interrupt this node's prompts: a subset of ``{"dtmf", "speech"}``."""
        value = self.node.barge_in if self.node and self.node.barge_in is not None else None
        if value is None:
            value = self.flow.defaults.get("barge_in", "dtmf")
        if isinstance(value, list):
            return set(value)
        return {"none": set(), "both": {"dtmf", "speech"}}.get(value, {value})

    def resolve_file(self, name: str) -> Path:
        """A prompt file named by the flow, confined to the flow's folder; FlowRuntimeError (one
        log line naming the flow, the node and the path) when it is not there, as when a
        template builds the name of a prompt nobody recorded."""
        path = resolve_inside(self.flow.folder, self.render(name, for_path=True))
        if not path.is_file():
            raise FlowRuntimeError(f"prompt file {path} not found")
        return path

    def recordings_folder(self) -> Path:
        """``config["recordings_dir"]`` (or ``config["recordings"]``), else ``recordings/``
        beside the flow."""
        folder = self.config.get("recordings_dir") or self.config.get("recordings")
        return Path(folder) if folder else self.flow.folder / "recordings"

    # -- call control -----------------------------------------------------------------------

    async def ensure_early_media(self) -> None:
        """Media without answering (183 Session Progress) unless the call is answered already;
        a caller whose INVITE had no offer is answered instead (no early media without one)."""
        if self.caller_gone:
            raise CallerHungUp()
        if self.answered or self.early_media:
            return
        if await self.call.controller.early_media():
            self.early_media = True
            self.trace("early", "media before the answer (183)")
        else:
            await self.ensure_answered()

    async def ensure_answered(self) -> None:
        """Answer the call if not yet done (media needs it); a gone caller is reported."""
        if self.caller_gone:
            raise CallerHungUp()
        if not self.answered:
            self.answered = True
            self.trace("answer")
            await self.call.controller.answer()

    # -- events -----------------------------------------------------------------------------

    def _note(self, event: Any) -> Any:
        if isinstance(event, HangupEvent):
            if not self.caller_gone:
                self.caller_gone = True
                self.end_reason = event.reason
                ours = event.reason not in CALLER_END_REASONS
                self.trace("hangup", f"call ended ({event.reason})" if ours else f"caller hung up ({event.reason})")
            raise CallerHungUp()
        if isinstance(event, DtmfEvent):
            self.trace("dtmf", event.digit)
        elif isinstance(event, SpeechEvent):
            self.trace("speech", event.kind)
            if event.kind == "end":
                self.utterance = event.utterance
        return event

    def poll(self) -> None:
        """Take every queued event without waiting: digits to type-ahead; a new hang-up raises
        :class:`CallerHungUp` (once gone, the caller's later events do not matter)."""
        if self.caller_gone:
            return
        if self._pending_get is not None and self._pending_get.done():
            event = self._pending_get.result()
            self._pending_get = None
            self._absorb(event)
        while True:
            try:
                event = self.call.events.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._absorb(event)

    def _absorb(self, event: Any) -> None:
        if isinstance(self._note(event), DtmfEvent):
            self.typeahead.append(event.digit)

    async def next_event(self, timeout: float | None, until: asyncio.Future | None = None) -> Any:
        """The next call event, or ``None`` after ``timeout`` seconds or once ``until`` is done.

        Raises :class:`CallerHungUp` when the caller is (or goes) away.
        """
        if self.caller_gone:
            raise CallerHungUp()
        if self._pending_get is None:
            self._pending_get = asyncio.ensure_future(self.call.events.get())
        waiting = {self._pending_get} | ({until} if until is not None else set())
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._pending_get in done:
            event = self._pending_get.result()
            self._pending_get = None
            return self._note(event)
        return None

    def close(self) -> None:
        if self._pending_get is not None:
            self._pending_get.cancel()
            self._pending_get = None

    # -- playing ----------------------------------------------------------------------------

    def play_items(self, spec: Any) -> list[PlayItem]:
        """Turn a play spec (a file name, ``{say|tone|silence|file: ...}`` or a list) into items."""
        items = []
        for entry in spec if isinstance(spec, list) else [spec]:
            if isinstance(entry, str):
                entry = {"file": entry}
            options = {}
            if "duration" in entry:
                options["duration"] = parse_duration(entry["duration"])
            if "file" in entry:
                items.append(PlayItem("file", str(self.resolve_file(entry["file"])), options))
            elif "say" in entry:
                voice = entry.get("voice", self.flow.defaults.get("voice"))
                text = str(self.render(entry["say"]))
                items.append(PlayItem("say", text, {"voice": voice} if voice else {}))
            elif "tone" in entry:
                options.setdefault("duration", 1.0)
                items.append(PlayItem("tone", str(self.render(entry["tone"])), options))
            elif "silence" in entry:
                items.append(PlayItem("silence", None, {"duration": parse_duration(entry["silence"])}))
            else:
                raise FlowRuntimeError(f"nothing to play in {entry!r}")
        return items

    async def play(self, spec: Any, barge_in: set[str] | None = None, min_speech: float | None = None,
                   early: bool = False) -> str | None:
        """Play ``spec`` to the end; return what barged in (``"dtmf"``, ``"speech"``) or ``None``.

        Digits heard while playing go to the type-ahead buffer (with DTMF barge-in the first one
        also stops the prompt); ``early`` plays it as early media when the call is not yet
        answered. Speech barges in once the utterance has ``min_speech`` seconds
        of voice (default: the flow's ``min_speech``, else 120 ms), so that a cough does not
        stop the prompt; an utterance that ends shorter is ignored.
        """
        if spec is None:
            return None
        barge_in = self.barge_in() if barge_in is None else barge_in
        if min_speech is None:
            min_speech = self.duration(None, "min_speech", speech.DEFAULT_MIN_SPEECH)
        items = self.play_items(spec)
        await (self.ensure_early_media() if early else self.ensure_answered())
        for item in items:
            self.trace("play", _describe(item))
            self.call.play(item)
        last = items[-1].id
        speech_pending = False  # an utterance began but has not yet had min_speech of voice
        while True:
            wait = None
            if speech_pending:
                voiced = speech.utterance_voice_ms(self.call.voice) or 0
                wait = max(min_speech - voiced / 1000, _SPEECH_POLL)
            event = await self.next_event(wait)
            if event is None or isinstance(event, SpeechEvent):
                if isinstance(event, SpeechEvent) and "speech" in barge_in:
                    if event.kind == "end" and speech_pending:
                        self.trace("speech", "too short to barge in")
                    speech_pending = event.kind == "start"
                if speech_pending and speech.speech_long_enough(self.call.voice, min_speech):
                    self.call.stop_playback()
                    self.trace("barge-in", "speech")
                    return "speech"
            elif isinstance(event, PlaybackDone) and event.item_id == last:
                return None
            elif isinstance(event, DtmfEvent):
                self.typeahead.append(event.digit)
                if "dtmf" in barge_in:
                    self.call.stop_playback()
                    self.trace("barge-in", f"dtmf {event.digit}")
                    return "dtmf"


def _describe(item: PlayItem) -> str:
    if item.kind == "file":
        return Path(item.value).name
    if item.kind == "say":
        return f"say {item.value!r}"
    if item.kind == "silence":
        return f"silence {item.options['duration']:g}s"
    return f"tone {item.value} {item.options.get('duration', 0):g}s"
