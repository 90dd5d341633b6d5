"""The engine: simplesip calls in, one CallContext and one flow task per call, and the batched
media pipeline run inside the endpoint's 20 ms media clock.

Life of a call::

    INVITE -> Endpoint.on_incoming_call -> admission (server limits) -> ivr_incoming_call
           -> route (plugin answer, routes, flow named like the called user, default flow)
           -> flow task (the flow answers through call.controller) -> ivr_call_started
           -> media ticks (ivr_audio_in / ivr_audio_out) + DTMF (ivr_dtmf_received)
           -> BYE/CANCEL/flow end/error/shutdown -> HangupEvent + ivr_call_ended (once)

Observers (the server's CDR, metrics and call log) get ``(event, call, details)`` for ``incoming``,
``rejected``, ``answered``, ``dtmf``, ``hook_error``, ``ended`` (the call is over) and
``finished`` (its flow has returned too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Protocol

import numpy as np
import pluggy

from ivr.audio import FRAME_SAMPLES
from ivr.call import CallContext, HangupEvent, current_call
from ivr.call_controller import CallController
from ivr.config import IvrConfig
from ivr.plugins import HookCallError, MediaPipeline, call_hook
from ivr.sip_adapter import (
    SIP_END_REASONS,
    headers_dict,
    make_endpoint,
    policy_headers,
    policy_hold,
    rtp_stats,
    via_source,
)

log = logging.getLogger(__name__)

Observer = Callable[[str, CallContext, dict[str, Any]], None]
#: Server policy run before any plugin sees an INVITE: a SIP status to reject with, or None.
Admission = Callable[[Any, CallContext], "int | None"]

#: How long a flow may take to notice a hang-up (HangupEvent) before its task is cancelled.
FLOW_EXIT_GRACE = 2.0
#: Before the flow's BYE: outbound audio counts as still playing until it has been silent this long
#: (two ticks: the frame after the last loud one may still carry the prompt's end) ...
PLAYBACK_IDLE = 0.045
#: ... for at most this long: flows wait for their prompts (PlaybackDone, sent with the last frame)
#: before they hang up, so this is a guard for audio still queued; it is short because a plugin
#: that sends endless audio (music, comfort noise) would hold every hang-up this long.
PLAYBACK_DRAIN_LIMIT = 0.5

__all__ = ["Admission", "CallController", "Engine", "FlowRunner", "Observer", "SIP_END_REASONS"]


class FlowRunner(Protocol):
    """What the engine needs of the flow layer (ivr.flows), injectable for tests."""

    def flow_names(self) -> list[str]:
        """Names of the flows that can be routed to."""

    async def run(self, name: str, call: CallContext) -> str:
        """Run flow ``name`` on ``call`` to its end; return the final outcome."""


class Engine:
    """Runs IVR calls on a simplesip ``Endpoint`` with the plugins of ``pm``.

    ``endpoint_factory(config) -> endpoint`` and ``flows`` are injectable (tests use fakes);
    by default the real ``simplesip.aio.endpoint.Endpoint`` and the flows named in the config.
    """

    def __init__(
        self,
        config: IvrConfig,
        pm: pluggy.PluginManager,
        *,
        flows: FlowRunner | None = None,
        endpoint_factory: Callable[[IvrConfig], Any] | None = None,
    ) -> None:
        self.config = config
        self.pm = pm
        self.flows = flows
        self._endpoint_factory = endpoint_factory or make_endpoint
        self.endpoint: Any = None
        self.accepting = True
        self.admission: Admission | None = None
        self.observers: list[Observer] = []
        self.calls: dict[str, CallContext] = {}  # every call not yet ended
        self._media: dict[str, CallContext] = {}  # answered calls in the media clock
        self._tasks: dict[str, asyncio.Task] = {}
        self._pending_reason: dict[str, str] = {}
        self._last_sound: dict[str, float] = {}  # call id -> monotonic time of its last loud frame
        self._pipeline = MediaPipeline(pm)
        self.drain_cut = False  # set by cut_drain(): stop() ends the calls without waiting
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Configure plugins, start the endpoint and register any accounts."""
        self._loop = asyncio.get_running_loop()
        if self.flows is None:
            raise RuntimeError("Engine needs a FlowRunner (ivr.flow_runner.FlowStoreRunner for the configured flows)")
        self.pm.hook.ivr_configure.call_historic(kwargs={"config": self.config.raw})
        try:
            call_hook(self.pm, "ivr_startup", config=self.config.raw, recordings=self.config.recordings)
        except HookCallError:
            pass  # logged with the plugin's name; the engine serves without that plugin's preparation
        self.endpoint = self._endpoint_factory(self.config)
        self.endpoint.on_incoming_call = self._on_incoming_call
        self.endpoint.on_tick = self.on_tick
        await self.endpoint.start()
        if self.config.accounts:
            account = self.config.accounts[0]
            try:
                await self.endpoint.register()
            except Exception as exc:  # direct calls still work; the PBX may come up later
                log.error("registration of %s at %s:%s failed: %s", account.username, account.server,
                          account.port, exc)

    def reconfigure(self, config: IvrConfig) -> None:
        """Apply a reloaded configuration (routes, limits, plugin sections) to new calls."""
        self.config = config
        self.pm.hook.ivr_configure.call_historic(kwargs={"config": config.raw})
        reload = getattr(self.flows, "reload", None)
        if reload is not None:
            reload(config)

    def cut_drain(self) -> None:
        """End the drain of :meth:`stop` now: the calls still going get their BYE at once."""
        self.drain_cut = True

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Stop taking calls, let live calls go on up to ``drain_timeout`` seconds, then end the
        rest with BYE (recordings finalised, reason ``shutdown``) and stop the endpoint."""
        self.accepting = False
        deadline = time.monotonic() + drain_timeout
        while self.calls and time.monotonic() < deadline and not self.drain_cut:
            await asyncio.sleep(0.05)
        for call in list(self.calls.values()):
            self._safe_hook(call, "ivr_stop_recording", call=call, reason="shutdown")
            if call.controller is not None:
                try:
                    await call.controller.hangup("shutdown")
                except Exception as exc:
                    log.warning("call %s: hang-up at shutdown failed: %r", call.id, exc)
                    await self.end_call(call, "shutdown")
        # Flows see their HangupEvent and return; those that do not are cancelled.
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=FLOW_EXIT_GRACE)
        stuck = list(self._tasks.values())
        for task in stuck:
            task.cancel()
        if stuck:  # let the cancelled tasks unwind (their CDR lines are written on the way out)
            await asyncio.wait(stuck, timeout=1.0)
        if self.endpoint is not None:
            if getattr(self.endpoint, "registered", False):
                try:  # so the PBX stops sending calls here at once
                    await asyncio.wait_for(self.endpoint.unregister(), 2.0)
                except Exception as exc:
                    log.warning("unregistering failed: %r", exc)
            await self.endpoint.stop()

    # -- incoming calls -----------------------------------------------------------------------

    def _on_incoming_call(self, sip_call: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self.handle_incoming(sip_call))
        self._tasks[sip_call.id] = task
        task.add_done_callback(lambda _t, cid=sip_call.id: self._tasks.pop(cid, None))

    async def handle_incoming(self, sip_call: Any) -> None:
        """Admit, route and run one incoming call to its end; observers get ``finished`` last
        (once the flow has returned too: the CDR waits for the flow's outcome)."""
        call: CallContext | None = None
        try:
            call = self._new_call(sip_call)
            current_call.set(call)  # this task's context: its log lines name the call
            await self._admit_and_run(sip_call, call)
        except Exception as exc:  # a fault of ours: the caller still gets a final response
            log.error("call %s: set-up failed: %r", sip_call.id, exc, exc_info=exc)
            await self._refuse_after_fault(sip_call, call, exc)
        finally:
            if call is not None:
                self.notify("finished", call, {"reason": call.end_reason})

    async def _refuse_after_fault(self, sip_call: Any, call: CallContext | None, exc: Exception) -> None:
        """End a call whose set-up raised: 500 while unanswered (BYE once answered), and the
        call's end recorded like any other."""
        try:
            if call is None:
                await sip_call.reject(500)
                return
            call.failed = call.failed or f"set-up: {exc!r}"
            await call.controller.hangup("error")
        except Exception as second:  # the call may be gone already; nothing more to answer
            log.warning("call %s: ending after a set-up fault failed: %r", sip_call.id, second)
            if call is not None:
                await self.end_call(call, "error")

    def _new_call(self, sip_call: Any) -> CallContext:
        headers = headers_dict(getattr(sip_call, "headers", None))
        call = CallContext(
            sip_call.id, self.pm.hook,
            from_uri=str(getattr(sip_call, "from_uri", "")), to_uri=str(getattr(sip_call, "to_uri", "")),
            from_user=getattr(sip_call, "from_user", "") or "", to_user=getattr(sip_call, "to_user", "") or "",
            headers=headers, source=getattr(sip_call, "source", None) or via_source(headers),
        )
        call.controller = CallController(self, sip_call, call)
        self.calls[call.id] = call
        sip_call.on_dtmf = lambda digit, source, duration_ms=None: self._on_dtmf(call, digit, source, duration_ms)
        sip_call.on_ended = lambda reason=None: self._on_sip_ended(call, reason)
        self.notify("incoming", call, {})
        return call

    async def _admit_and_run(self, sip_call: Any, call: CallContext) -> None:
        status = 503 if not self.accepting else (self.admission(sip_call, call) if self.admission else None)
        headers = policy_headers(self.admission, status, call) if status is not None else None
        if status is None:
            decision = self._safe_hook(call, "ivr_incoming_call", call=call)
            if call.failed:
                status = 500
            elif isinstance(decision, int) and not isinstance(decision, bool):
                status = decision
            else:
                call.flow = decision if isinstance(decision, str) else self.route(call)
                if call.flow is None:
                    status = 404
        if status is not None:
            await policy_hold(self.admission, call)
            await call.controller.reject(status, headers)
            return
        await self._run_flow(call)

    def route(self, call: CallContext) -> str | None:
        """The flow for ``call``: configured route of the called user, a flow of that name, the
        default flow, else the first flow loaded."""
        names = self.flows.flow_names() if self.flows else []
        if call.to_user in self.config.routes:
            return self.config.routes[call.to_user]
        if call.to_user in names:
            return call.to_user
        if self.config.default_flow:
            return self.config.default_flow
        return names[0] if names else None

    async def _run_flow(self, call: CallContext) -> None:
        assert self.flows is not None and call.flow is not None
        reason = "local_hangup"
        try:
            outcome = await self.flows.run(call.flow, call)
            call.data.setdefault("engine", {})["flow_outcome"] = outcome
            log.debug("call %s: flow %s ended with %r", call.id, call.flow, outcome)
        except asyncio.CancelledError:
            reason = "shutdown"
        except Exception as exc:
            log.error("call %s: flow %s failed: %r", call.id, call.flow, exc, exc_info=exc)
            call.failed = call.failed or f"flow: {exc!r}"
            reason = "error"
        if call.end_time is None:
            try:
                await call.controller.hangup("error" if call.failed else reason)
            except Exception as exc:
                log.warning("call %s: hang-up failed: %r", call.id, exc)
                await self.end_call(call, "error")

    # -- events from simplesip ----------------------------------------------------------------

    def _on_dtmf(self, call: CallContext, digit: str, source: str, duration_ms: int | None) -> None:
        self.notify("dtmf", call, {"digit": digit, "source": source})
        if self.pm.hook.ivr_dtmf_received.get_hookimpls():
            self._safe_hook(call, "ivr_dtmf_received", call=call, digit=digit, source=source,
                            duration_ms=duration_ms)
        else:  # no dtmf plugin to merge sources: every report is a key press
            call.report_dtmf(digit, source)

    def _on_sip_ended(self, call: CallContext, reason: Any) -> None:
        ours = self._pending_reason.get(call.id)
        if ours is None:
            ours = SIP_END_REASONS.get(str(reason), "remote_hangup" if call.answer_time else "cancelled")
        if reason == "session_expired":  # the CDR says why this "error" happened (RFC 4028)
            call.failed = call.failed or "session expired: the peer stopped refreshing the session"
        if self._loop is not None and call.end_time is None:
            self._loop.create_task(self.end_call(call, ours))

    # -- ending and failing calls -------------------------------------------------------------

    def claim_end_reason(self, call: CallContext, reason: str) -> str:
        """Record why we are ending ``call``: simplesip reports the end (``on_ended``) while the
        BYE is under way, and the first reason claimed is the one that stands."""
        return self._pending_reason.setdefault(call.id, reason)

    def media_up(self, call: CallContext, answered: bool = True) -> None:
        """``call``'s media is up: answered, or early media before the answer. The first time,
        it joins the media clock and ``ivr_call_started`` runs; observers hear of the answer."""
        first = call.id not in self._media
        self._media[call.id] = call
        if answered:
            self.notify("answered", call, {})
        if first:
            self._safe_hook(call, "ivr_call_started", call=call)

    async def end_call(self, call: CallContext, reason: str) -> None:
        """End ``call`` once: out of the media clock, HangupEvent to the flow, ivr_call_ended."""
        if call.end_time is not None:
            return
        call.end_time = time.time()
        call.end_reason = reason
        self._media.pop(call.id, None)
        self.calls.pop(call.id, None)
        self._pending_reason.pop(call.id, None)
        self._last_sound.pop(call.id, None)
        call.emit(HangupEvent(reason))
        try:
            call_hook(self.pm, "ivr_call_ended", call=call, reason=reason)
        except HookCallError as exc:
            self.notify("hook_error", call, {"plugin": exc.plugin, "hook": exc.hook_name})
        self.notify("ended", call, {"reason": reason, "stats": rtp_stats(call)})
        task = self._tasks.get(call.id)
        if task is not None and task is not asyncio.current_task() and self._loop is not None:
            # The flow sees the HangupEvent and returns; one that does not is cancelled.
            self._loop.call_later(FLOW_EXIT_GRACE, task.cancel)

    def _safe_hook(self, target: CallContext, hook_name: str, /, **kwargs: Any) -> Any:
        """Call a hook for ``target``; a plugin that raises fails that call alone."""
        try:
            return call_hook(self.pm, hook_name, **kwargs)
        except HookCallError as exc:
            self.fail_call(target, exc.plugin, hook_name, exc.__cause__ or exc)
            return None

    def fail_call(self, call: CallContext, plugin: str, hook_name: str, error: BaseException) -> None:
        """A plugin raised for ``call``: take it out of the media clock and end it (``error``)."""
        if call.failed is not None and call.id not in self._media:
            return
        call.failed = f"{plugin} in {hook_name}: {error!r}"
        self._media.pop(call.id, None)
        log.error("call %s failed: plugin %s raised in %s: %r", call.id, plugin, hook_name, error)
        self.notify("hook_error", call, {"plugin": plugin, "hook": hook_name})
        if call.answer_time is not None and call.controller is not None and self._loop is not None:
            self._loop.create_task(self._hangup_quietly(call, "error"))

    async def _hangup_quietly(self, call: CallContext, reason: str) -> None:
        try:
            await call.controller.hangup(reason)
        except Exception as exc:
            log.warning("call %s: hang-up failed: %r", call.id, exc)
            await self.end_call(call, reason)

    def notify(self, event: str, call: CallContext, details: dict[str, Any]) -> None:
        """Hand a call event to every observer (module docstring)."""
        for observer in self.observers:
            try:
                observer(event, call, details)
            except Exception:  # an observer (CDR, metrics) must never break call handling
                log.exception("observer %r failed on %s", observer, event)

    # -- media clock --------------------------------------------------------------------------

    def on_tick(self, calls: list[Any], pcm_in: np.ndarray, now: float, tick: int) -> np.ndarray | None:
        """The endpoint's 20 ms tick: one batched ``ivr_audio_in`` then ``ivr_audio_out`` over
        every answered call, at the media clock's ``now`` and ``tick`` (``AudioBatch.now`` and
        ``.tick``); returns the outbound frames (rows of other calls stay silent). On a catch-up
        tick after a stall (the clock is not ``sending``) ``AudioBatch.send`` is False, so that
        playback holds its place instead of losing the frames that will not be sent."""
        media = self._media
        rows = [i for i, sip_call in enumerate(calls) if sip_call.id in media]
        if not rows:
            return None
        contexts = [media[calls[i].id] for i in rows]
        all_rows = len(rows) == len(calls)
        clock = getattr(self.endpoint, "media_clock", None)
        send = clock is None or clock.sending
        outbound, failures = self._pipeline.run(contexts, pcm_in if all_rows else pcm_in[rows], now, tick, send)
        for failure in failures:
            self.fail_call(contexts[failure.index], failure.plugin, failure.hook_name, failure.error)
        for index in np.flatnonzero(np.any(outbound != 0, axis=1)):
            self._last_sound[contexts[index].id] = now
        if all_rows:
            return outbound
        frames = np.zeros((len(calls), FRAME_SAMPLES), dtype=np.int16)
        frames[rows] = outbound
        return frames

    async def drain_playback(self, call: CallContext) -> None:
        """Wait until ``call``'s outbound audio has gone quiet (its prompt has been sent), then
        ``hangup_tail`` more so the caller's jitter buffer plays it out; returns early if the
        call ends meanwhile."""
        deadline = time.monotonic() + PLAYBACK_DRAIN_LIMIT
        while call.id in self._media and time.monotonic() < deadline:
            if time.monotonic() - self._last_sound.get(call.id, float("-inf")) >= PLAYBACK_IDLE:
                break
            await asyncio.sleep(0.02)
        tail = self.config.hangup_tail
        if tail > 0 and call.id in self._media:
            await asyncio.sleep(tail)

    @property
    def media_call_count(self) -> int:
        """Answered calls currently in the media clock."""
        return len(self._media)
