"""``ivr simulate``: run a flow on a virtual call, with the real executor and a virtual clock.

The event loop's clock is virtual: whenever the loop has nothing ready it jumps straight to its
next timer, so a flow with a 30 s menu runs in milliseconds and gives the same trace every time.
Prompts "play" for their real length (a WAV's duration; ``say`` text 70 ms per character).
While an action works outside the loop (a thread, real network I/O: ``http``, a plugin's
``session.run_blocking``) the simulation waits for it; that work takes no virtual time.

Scripts (virtual time starts at 0 when the call arrives):

* DTMF: ``"+3s 1 +1s 2#"`` presses 1 at 3 s, then 2 and # at 4 s (:mod:`ivr.caller_script`,
  the same script as ``ivr call --dtmf``).
* Speech: ``start@1.0,end@2.0``: the VAD reports speech starting at 1 s and ending at 2 s.
* Spoken words: ``say="support@2.0"`` (matched against the grammar, no recogniser) and
  ``speech_wav="menu.wav@2.0"`` (through the real recogniser); see :mod:`ivr.flows.simulate_speech`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import selectors
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from zoneinfo import ZoneInfo

import pluggy

from ivr.audio import parse_duration, wav_duration
from ivr.call import CallContext, HangupEvent, PlaybackDone, PlayItem, RecordingDone
from ivr.caller_script import parse_dtmf_script
from ivr.flows.actions import collect_actions
from ivr.flows.checker import load_flow
from ivr.flows.executor import run_flow
from ivr.flows.model import Flow
from ivr.flows.registry import ActionRegistry
from ivr.flows.session import TraceEntry
from ivr.flows.simulate_speech import (
    SimulatedSpeech,
    parse_say_script,
    parse_wav_script,
)

#: Silence ``trim`` keeps around a message (as ``ivr_plugins.recording.TRIM_MARGIN``).
TRIM_MARGIN = 0.2

SAY_SECONDS_PER_CHAR = 0.07


class SimulationStalled(RuntimeError):
    """The simulated flow waits for something that can never happen (no timer, no event)."""


# -- the virtual clock -----------------------------------------------------------------------


class _VirtualSelector:
    """Wraps the real selector: when idle, time jumps instead of the process sleeping."""

    def __init__(self, loop: "VirtualTimeLoop", real: selectors.BaseSelector) -> None:
        self._loop = loop
        self._real = real

    def select(self, timeout: float | None = None) -> list:
        if self._loop.outside_work_pending:
            # Work outside the loop (a thread, a socket) is running: wait for it in real time.
            # It takes no virtual time unless it outlasts the next timer, which then falls due
            # (so a timeout fires at its virtual time and the trace stays the same every run).
            ready = self._real.select(timeout)
            if not ready and timeout is not None:
                self._loop.virtual_now += timeout
            return ready
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:
            raise SimulationStalled("the flow waits for an event that nothing will send")
        self._loop.virtual_now += timeout
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose ``time()`` is virtual and jumps to the next timer when idle.

    Work outside the loop does not let time jump while it runs: every ``run_in_executor`` job
    (``asyncio.to_thread``, :meth:`FlowSession.run_blocking`) and every block inside
    :meth:`outside_work` (:meth:`FlowSession.run_io`) is waited for in real time.
    """

    def __init__(self) -> None:
        self.virtual_now = 0.0
        self.outside_work_pending = 0
        selector = _VirtualSelector(self, selectors.DefaultSelector())
        super().__init__(selector=selector)  # type: ignore[arg-type]

    def time(self) -> float:
        return self.virtual_now

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future:
        future = super().run_in_executor(executor, func, *args)
        self.outside_work_pending += 1
        future.add_done_callback(self._outside_work_done)
        return future

    def _outside_work_done(self, _future: asyncio.Future) -> None:
        self.outside_work_pending -= 1

    @contextlib.contextmanager
    def outside_work(self) -> Iterator[None]:
        """While inside, the loop waits for real sockets instead of jumping to its next timer."""
        self.outside_work_pending += 1
        try:
            yield
        finally:
            self.outside_work_pending -= 1


# -- the simulated media plugin and call controller -------------------------------------------


def prompt_seconds(item: PlayItem) -> float:
    """How long ``item`` plays: the WAV's length, text length for ``say``, else its duration."""
    if item.kind == "file":
        try:
            return wav_duration(item.value)
        except (OSError, ValueError):
            return 1.0
    if item.kind == "say":
        return max(0.2, len(str(item.value)) * SAY_SECONDS_PER_CHAR)
    return float(item.options.get("duration", 1.0))


@dataclass
class _Recording:
    path: str
    options: dict[str, Any]
    started: float
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    speech: list[tuple[str, float]] = field(default_factory=list)  # VAD events while recording


class SimulatedMedia:
    """Stands in for the playback and recording plugins (the ``call.hook`` of a virtual call)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: deque[PlayItem] = deque()
        self.current: tuple[PlayItem, asyncio.TimerHandle] | None = None
        self.recording: _Recording | None = None
        self.recordings: list[RecordingDone] = []
        self.speech: SimulatedSpeech | None = None
        self.prompts: list[PlayItem] = []  # every item queued, in order

    def ivr_stt(self, call: CallContext, pcm: Any, options: dict[str, Any]) -> tuple[str, float] | None:
        """Recognition of a scripted utterance (see :class:`SimulatedSpeech`)."""
        if self.speech is None:
            return None
        return self.speech.ivr_stt(call, pcm, options)

    def ivr_play(self, call: CallContext, item: PlayItem) -> bool:
        self.prompts.append(item)
        self.queue.append(item)
        if self.current is None:
            self._start_next(call)
        return True

    def _start_next(self, call: CallContext) -> None:
        if not self.queue:
            self.current = None
            return
        item = self.queue.popleft()
        handle = self.loop.call_later(prompt_seconds(item), self._finished, call, item)
        self.current = (item, handle)

    def _finished(self, call: CallContext, item: PlayItem) -> None:
        call.emit(PlaybackDone(item.id))
        self._start_next(call)

    def ivr_stop_playback(self, call: CallContext) -> None:
        flushed = []
        if self.current is not None:
            self.current[1].cancel()
            flushed.append(self.current[0])
            self.current = None
        flushed.extend(self.queue)
        self.queue.clear()
        for item in flushed:
            call.emit(PlaybackDone(item.id, interrupted=True))

    def ivr_start_recording(self, call: CallContext, path: str, options: dict[str, Any]) -> bool:
        recording = _Recording(path, dict(options), self.loop.time())
        self.recording = recording
        max_length = float(options["max_length"])
        recording.timers.append(self.loop.call_later(max_length, self._stop, call, "max_length"))
        self._arm_silence(call)
        return True

    def _arm_silence(self, call: CallContext) -> None:
        if self.recording is not None:
            timeout = float(self.recording.options["silence_timeout"])
            self.recording.timers.append(self.loop.call_later(timeout, self._stop, call, "silence"))

    def _stop(self, call: CallContext, reason: str) -> None:
        recording, self.recording = self.recording, None
        if recording is None:
            return
        for timer in recording.timers:
            timer.cancel()
        done = RecordingDone(recording.path, round(self._kept_length(recording, reason), 3), reason)
        self.recordings.append(done)
        call.emit(done)

    def _kept_length(self, recording: _Recording, reason: str) -> float:
        """The recording's length, with ``trim`` as the recording plugin trims: from the first
        speech start to the last speech end, plus its margins (none without speech)."""
        now = self.loop.time()
        if not recording.options.get("trim") or reason not in ("silence", "key"):
            return now - recording.started
        starts = [at for event, at in recording.speech if event == "start"]
        ends = [at for event, at in recording.speech if event == "end"]
        if not starts and not ends:
            return 0.0
        if not starts or (ends and ends[0] < starts[0]):  # speaking already when it started
            starts.insert(0, recording.started)
        last = ends[-1] if ends and ends[-1] >= starts[-1] else now
        return min(now, last + TRIM_MARGIN) - max(recording.started, starts[0] - TRIM_MARGIN)

    def ivr_stop_recording(self, call: CallContext, reason: str) -> None:
        self._stop(call, reason)

    def ivr_speech(self, call: CallContext, event: str, utterance: Any = None) -> None:
        if self.recording is None:
            return
        self.recording.speech.append((event, self.loop.time()))
        for timer in self.recording.timers[1:]:  # [0] is max_length: speech never extends it
            timer.cancel()
        del self.recording.timers[1:]
        if event == "end":
            self._arm_silence(call)

    def ivr_dtmf(self, call: CallContext, digit: str, source: str) -> None:
        if self.recording is not None and digit in self.recording.options.get("finish_on_key", ""):
            self._stop(call, "key")


#: The call services :class:`SimulatedMedia` provides on a virtual call instead of plugins.
SIMULATED_SERVICES = frozenset({"ivr_play", "ivr_stop_playback", "ivr_start_recording", "ivr_stop_recording",
                                "ivr_stt"})
#: The call events both :class:`SimulatedMedia` and the plugins see.
SHARED_EVENTS = frozenset({"ivr_dtmf", "ivr_speech"})


class PluginRelay:
    """The ``call.hook`` of a virtual call with plugins: the call services go to the simulated
    media (there is no audio), the events to it and to every plugin, other hooks to the plugins."""

    def __init__(self, media: SimulatedMedia, hook: Any) -> None:
        self._media = media
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        if name in SIMULATED_SERVICES:
            return getattr(self._media, name)
        if name in SHARED_EVENTS:
            ours, theirs = getattr(self._media, name), getattr(self._hook, name)

            def both(**kwargs: Any) -> None:
                ours(**kwargs)
                theirs(**kwargs)

            return both
        return getattr(self._hook, name)


class SimulatedController:
    """The signalling side of a virtual call; ``transfer`` answers ``transfer_result``.
    ``on_answer`` runs when the flow answers (the plugins' ``ivr_call_started``)."""

    def __init__(self, transfer_result: str = "ok", on_answer: Callable[[], None] | None = None) -> None:
        self.transfer_result = transfer_result
        self.actions: list[tuple[str, Any]] = []
        self._on_answer = on_answer

    async def answer(self) -> None:
        early = ("early_media", None) in self.actions
        self.actions.append(("answer", None))
        if self._on_answer is not None and not early:
            self._on_answer()

    async def early_media(self) -> bool:
        self.actions.append(("early_media", None))
        if self._on_answer is not None:
            self._on_answer()
        return True

    async def hangup(self) -> None:
        self.actions.append(("hangup", None))

    async def reject(self, status: int) -> None:
        self.actions.append(("reject", status))

    async def transfer(self, target: str) -> str:
        self.actions.append(("transfer", target))
        return self.transfer_result


# -- scripts ----------------------------------------------------------------------------------


def parse_speech_script(script: str) -> list[tuple[float, str]]:
    """``"start@1.0,end@2.0"`` -> ``[(1.0, "start"), (2.0, "end")]``."""
    events = []
    for token in filter(None, (t.strip() for t in script.split(","))):
        kind, _, at = token.partition("@")
        if kind not in ("start", "end") or not at:
            raise ValueError(f"bad speech script token {token!r} (start@1.0 or end@2.5)")
        events.append((parse_duration(at), kind))
    return events


# -- running ----------------------------------------------------------------------------------


@dataclass
class SimulationResult:
    """What a simulated call did: the trace, the final outcome, the variables, the signalling,
    the prompts queued, the recordings made, and the call itself."""

    trace: list[TraceEntry]
    outcome: str
    vars: dict[str, Any]
    controller_actions: list[tuple[str, Any]]
    recordings: list[RecordingDone]
    prompts: list[PlayItem]
    call: CallContext


def run_simulation(
    flow: Flow | str | Path,
    *,
    dtmf: str = "",
    speech: str = "",
    say: str = "",
    speech_wav: str = "",
    at: dt.datetime | str | None = None,
    tz: str = "UTC",
    caller: str = "sip:1001@127.0.0.1",
    callee: str = "sip:ivr@127.0.0.1",
    config: dict[str, Any] | None = None,
    actions: ActionRegistry | None = None,
    plugins: pluggy.PluginManager | None = None,
    transfer_result: str = "ok",
    outcomes: Mapping[str, str] | None = None,
    time_limit: float = 3600.0,
    trace_out: Callable[[TraceEntry], None] | None = None,
) -> SimulationResult:
    """Run ``flow`` once on a virtual call (see the module doc for the scripts).

    ``say`` and ``speech_wav`` script what the caller says (text matched against the grammar,
    or WAV files for the real recogniser). ``at`` is the wall-clock date and time when the call
    arrives (naive values are read in ``tz``). ``config`` is what the flow reads as
    ``{{ config.x }}`` (:meth:`ivr.config.IvrConfig.flow_config`). ``plugins``, a plugin manager
    already configured, gives the actions (unless ``actions`` is given) and sees the call's
    events: ``ivr_call_started`` when the flow answers, ``ivr_dtmf``, ``ivr_speech``,
    ``ivr_call_ended``; the media services (play, record, recognise) stay simulated.
    ``outcomes`` (``{"bot": "failed"}``) are the outcomes of actions that need a real peer
    (:meth:`FlowSession.simulated_outcome`). A run that reaches ``time_limit`` (virtual
    seconds) ends with outcome ``time_limit``. ``trace_out`` receives each trace entry as it
    happens. Must be called outside a running event loop.
    """
    actions = actions or collect_actions(plugins)
    if not isinstance(flow, Flow):
        flow = load_flow(flow, actions)
    config = dict(config or {})
    temp_dir = None
    if "recordings_dir" not in config:
        temp_dir = tempfile.TemporaryDirectory(prefix="ivr-simulate-")
        config["recordings_dir"] = temp_dir.name
    start = _start_time(at, tz)
    utterances = sorted(parse_say_script(say) + parse_wav_script(speech_wav), key=lambda u: u.at)
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(
            _simulate(flow, loop, dtmf, speech, utterances, start, caller, callee, config, actions, transfer_result,
                      plugins, dict(outcomes or {}), time_limit, trace_out)
        )
    finally:
        loop.close()
        if temp_dir is not None:
            temp_dir.cleanup()


def simulate(flow: Flow | str | Path, **options: Any) -> list[TraceEntry]:
    """Run ``flow`` on a virtual call and return its trace (options as :func:`run_simulation`)."""
    return run_simulation(flow, **options).trace


def _start_time(at: dt.datetime | str | None, tz: str) -> dt.datetime:
    zone = ZoneInfo(tz)
    if at is None:
        return dt.datetime.now(zone)
    moment = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


#: Flow outcomes -> the ``ivr_call_ended`` reason a real call would have.
_END_REASONS = {"rejected": "rejected", "transferred": "transferred", "error": "error"}


def _user_of(uri: str) -> str:
    match = re.match(r"^(?:sips?:)?([^@;>]+)@", uri)
    return match.group(1) if match else uri


async def _simulate(
    flow: Flow, loop: VirtualTimeLoop, dtmf: str, speech: str, utterances: list, start: dt.datetime, caller: str,
    callee: str, config: dict[str, Any], actions: ActionRegistry, transfer_result: str,
    plugins: pluggy.PluginManager | None, outcomes: dict[str, str], time_limit: float,
    trace_out: Callable[[TraceEntry], None] | None,
) -> SimulationResult:
    media = SimulatedMedia(loop)
    hook = media if plugins is None else PluginRelay(media, plugins.hook)
    call = CallContext("sim-1", hook, from_uri=caller, to_uri=callee,
                       from_user=_user_of(caller), to_user=_user_of(callee), clock=loop.time)
    on_answer = None if plugins is None else (lambda: plugins.hook.ivr_call_started(call=call))
    controller = SimulatedController(transfer_result, on_answer)
    call.controller = controller
    t0 = loop.time()
    if utterances:
        media.speech = SimulatedSpeech(loop, call, None if plugins is None else plugins.hook)
        media.speech.schedule(t0, utterances)
    # One timer per instant, running its events in script order: the loop's timer heap does
    # not keep the order of timers due at the same time.
    script: dict[float, list[Callable[[], None]]] = {}
    for when, key in parse_dtmf_script(dtmf):
        if key == "hangup":
            script.setdefault(when, []).append(lambda: call.emit(HangupEvent("remote_hangup")))
        else:
            script.setdefault(when, []).append(lambda key=key: call.report_dtmf(key, "rfc4733"))
    for when, kind in parse_speech_script(speech):
        script.setdefault(when, []).append(lambda kind=kind: call.report_speech(kind))
    for when, steps in script.items():
        loop.call_at(t0 + when, lambda steps=steps: [step() for step in steps])
    trace: list[TraceEntry] = []

    def record(entry: TraceEntry) -> None:
        trace.append(entry)
        if trace_out is not None:
            trace_out(entry)

    def wall_clock() -> dt.datetime:
        return start + dt.timedelta(seconds=loop.time() - t0)

    try:
        outcome = await asyncio.wait_for(
            run_flow(flow, call, config, actions, wall_clock=wall_clock, trace=record,
                     simulated_outcomes=outcomes),
            time_limit,
        )
    except asyncio.TimeoutError:
        record(TraceEntry(round(loop.time() - t0, 3), "-", "stopped", f"time limit {time_limit:g}s"))
        outcome = "time_limit"
    if plugins is not None:
        reason = "remote_hangup" if outcome == "caller_hangup" else _END_REASONS.get(outcome, "local_hangup")
        plugins.hook.ivr_call_ended(call=call, reason=reason)
    return SimulationResult(trace, outcome, dict(call.vars), controller.actions, media.recordings, media.prompts,
                            call)
