"""Run a flow on a call: walk the node graph, run each action, route its outcome.

Routing of an outcome, first match wins: the node's ``on:``; the action's own targets (a menu's
``options``, a switch's ``cases``, a goto); for ``hangup`` once the caller is gone, the flow's
``on_hangup`` (never ``next``); the node's ``next``; the flow's ``default``. With no target the
flow (or the sub-routine) ends. An action that raises goes to the node's ``on: {error: ...}``,
else the flow's ``on_error``, else the flow ends with ``error``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Callable, Mapping

from ivr.call import CallContext
from ivr.flows.diagnostics import FlowRuntimeError
from ivr.flows.model import Flow, Node
from ivr.flows.registry import ActionRegistry, ActionSpec
from ivr.flows.routing import outcome_route
from ivr.flows.session import (
    CallerHungUp,
    FlowFinished,
    FlowSession,
    SubReturn,
    TraceSink,
)
from ivr.flows.templating import render_deep

log = logging.getLogger(__name__)

# Steps allowed without the clock moving: a goto/set cycle that never waits would otherwise
# spin the event loop that serves every other call.
_MAX_STEPS_WITHOUT_WAITING = 1000


def route(session: FlowSession, flow: Flow, node: Node, spec: ActionSpec, outcome: str) -> str | None:
    """The node an outcome leads to, or ``None`` when this graph walk ends (module doc)."""
    target, rule = outcome_route(flow, node, spec, outcome, caller_gone=session.caller_gone)
    if rule == "on_hangup":
        if target and not session.in_hangup_handler:
            session.in_hangup_handler = True
            return target
        return None
    return target


async def run_node(session: FlowSession, node: Node) -> str:
    """Run one node's action; return its outcome (``hangup`` when the caller went away)."""
    spec = session.actions.get(node.action)
    if spec is None:
        raise FlowRuntimeError(f"unknown action {node.action!r} (is its plugin loaded?)")
    try:
        session.poll()
        if node.flush_dtmf and session.typeahead:
            session.trace("flush", "".join(session.typeahead))
            session.typeahead.clear()
        if spec.needs_media:
            await session.ensure_answered()
        params = render_deep(node.params, session.template_context()) if spec.renders_params else node.params
        outcome = await spec.handler(session, params)
    except CallerHungUp:
        return "hangup"
    if not isinstance(outcome, str) or not outcome:
        raise FlowRuntimeError(f"action {node.action!r} returned {outcome!r}, not an outcome name")
    return outcome


async def run_graph(session: FlowSession, flow: Flow, start: str) -> str:
    """Walk ``flow`` from ``start`` until no target is left; return the last outcome.

    Sub-routines (``sub``) call this recursively; ``return`` ends the innermost walk.
    """
    previous_flow = session.flow
    session.flow = flow
    name: str | None = start
    outcome = "ok"
    steps_at_same_time, last_time = 0, session.loop.time()
    try:
        while name is not None:
            node = flow.nodes[name]
            session.node = node
            session.trace("enter", node.action)
            spec = session.actions.get(node.action)
            try:
                outcome = await run_node(session, node)
            except (FlowFinished, SubReturn, asyncio.CancelledError):
                raise
            except Exception as exc:  # any action failure goes to on_error, whatever raised it
                name = _error_target(session, flow, node, exc)
                continue
            session.trace("outcome", outcome)
            name = route(session, flow, node, spec, outcome) if spec else None
            now = session.loop.time()
            steps_at_same_time = steps_at_same_time + 1 if now == last_time else 0
            last_time = now
            if steps_at_same_time > _MAX_STEPS_WITHOUT_WAITING:
                raise FlowRuntimeError(f"node {node.name!r}: the flow loops without ever waiting")
            await asyncio.sleep(0)
        return outcome
    finally:
        session.flow = previous_flow


#: What the caller hears when the flow fails and routes no error itself (no ``on_error``).
ERROR_PROMPT = "Sorry, something went wrong. Please call again later. Goodbye."


async def _apologise(session: FlowSession) -> None:
    """Say :data:`ERROR_PROMPT` to an answered caller before the failed flow hangs up, so that
    a failure is not silence; whatever goes wrong here only shortens the apology."""
    session.node = None
    try:
        await session.play({"say": ERROR_PROMPT}, barge_in=set())
    except CallerHungUp:
        pass
    except Exception as exc:  # no TTS, say: the call still ends
        log.warning("call %s: the error prompt could not be played: %r", session.call.id, exc)


def _error_target(session: FlowSession, flow: Flow, node: Node, exc: Exception) -> str:
    if isinstance(exc, FlowRuntimeError):
        message = str(exc)
        log.warning("call %s: flow %s node %s: %s", session.call.id, flow.name, node.name, message)
    else:  # a bug or an outage in an action: its type matters as much as its text
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.error("call %s: flow %s node %s: action %s raised %s", session.call.id, flow.name, node.name,
                  node.action, message, exc_info=exc)
    session.vars["error"] = message
    session.call.errors.append(f"{flow.name}/{node.name}: {message}")
    session.trace("error", message)
    if "error" in node.on:
        return node.on["error"]
    if flow.on_error and not session.in_error_handler:
        session.in_error_handler = True
        return flow.on_error
    if session.sub_depth:
        # Unhandled inside a sub-routine: the calling node fails, so the caller's handlers apply.
        raise FlowRuntimeError(message)
    raise FlowFinished("error")


async def run_flow(
    flow: Flow,
    call: CallContext,
    config: dict[str, Any],
    actions: ActionRegistry,
    *,
    wall_clock: Callable[[], dt.datetime] | None = None,
    trace: TraceSink | None = None,
    simulated_outcomes: Mapping[str, str] | None = None,
) -> str:
    """Run ``flow`` on ``call`` until it ends; return the final outcome.

    Called by the engine before the call is answered: the flow answers (through
    ``call.controller.answer()``) at the first action that needs media. The call has ended when
    this returns; the result is one of ``hangup`` (the flow hung up, also when it simply ran out
    of nodes), ``caller_hangup``, ``rejected``, ``transferred`` or ``error``.
    ``wall_clock`` (for ``hours``) and ``trace`` (one :class:`TraceEntry` per step) are for
    tests and ``ivr simulate``; ``simulated_outcomes`` (not ``None``) marks a simulated call
    (:attr:`FlowSession.simulated`) and holds the outcomes of actions that need a real peer.
    """
    session = FlowSession(flow, call, config, actions, walk=run_graph, wall_clock=wall_clock,
                          trace_sink=trace, simulated_outcomes=simulated_outcomes)
    call.flow = flow.name
    result: str | None = None
    try:
        try:
            await run_graph(session, flow, flow.start)
        except FlowFinished as finished:
            result = finished.outcome
        except SubReturn as returned:
            session.trace("return", returned.outcome)
        except FlowRuntimeError as exc:
            log.warning("call %s: flow %s stopped: %s", call.id, flow.name, exc)
            call.errors.append(f"{flow.name}: {exc}")
            session.trace("error", str(exc))
            result = "error"
        if result == "error" and session.answered and not session.caller_gone:
            await _apologise(session)
    finally:
        session.close()
    if session.caller_gone:
        # The call ended under the flow: the caller hung up, or it failed (``error``: the peer
        # answered our REFER with 481, a plugin raised).
        result = "error" if session.end_reason == "error" else "caller_hangup"
    elif session.final is not None:
        result = session.final
    if not session.caller_gone and session.final is None:
        # Ran out of nodes (or failed): the flow owns the call, so it ends it.
        session.final = "hangup"
        session.node = None
        session.trace("hangup", "end of flow")
        try:
            await call.controller.hangup()
        except Exception:  # the call may already be gone; the flow's work is done either way
            log.exception("call %s: hanging up at the end of flow %s failed", call.id, flow.name)
    result = result or "hangup"
    session.node = None
    session.trace("end", result)
    return result
