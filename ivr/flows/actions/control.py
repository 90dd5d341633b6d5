"""Control actions: ``set``, ``switch``, ``goto``, ``sub``/``return``, ``hours``, ``transfer``,
``hangup`` and ``reject``."""

from __future__ import annotations

from typing import Any

from ivr.flows.diagnostics import FlowRuntimeError
from ivr.flows.registry import ActionSpec
from ivr.flows.session import FlowFinished, FlowSession, SubReturn
from ivr.flows.templating import render_deep

_MAX_SUB_DEPTH = 16


async def set_action(session: FlowSession, params: dict[str, Any]) -> str:
    """Set flow variables (values may be templates); outcome ``ok``."""
    context = session.template_context()
    values = {name: render_deep(value, context) for name, value in params.items()}
    session.vars.update(values)  # all rendered first: `set` reads the old values, like a swap
    session.trace("set", ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return "ok"


async def switch_action(session: FlowSession, params: dict[str, Any]) -> str:
    """Branch on a value: the outcome is the matching ``cases`` key, else ``default``."""
    value = str(session.render(params["value"]))
    cases = {str(key) for key in params["cases"]}
    return value if value in cases else "default"


def _switch_routes(params: dict[str, Any]) -> dict[str, str]:
    return {str(key): target for key, target in params["cases"].items()}


async def goto_action(session: FlowSession, params: str) -> str:
    """Go to a node; outcome ``ok`` (routed to the named node)."""
    return "ok"


def _goto_routes(params: str) -> dict[str, str]:
    return {"ok": params}


async def sub_action(session: FlowSession, params: Any) -> str:
    """Run a node (``sub: name``) or another flow file (``sub: {flow: file.yaml}``) as a
    sub-routine; its ``return`` value (or its last outcome) is this node's outcome."""
    if session.sub_depth >= _MAX_SUB_DEPTH:
        raise FlowRuntimeError(f"sub-routines nest deeper than {_MAX_SUB_DEPTH}")
    if isinstance(params, str):
        flow, start = session.flow, params
    elif "node" in params:
        flow, start = session.flow, params["node"]
    else:
        flow = session.flow.subflows[params["flow"]]
        start = params.get("start", flow.start)
        for name, value in flow.initial_vars.items():
            session.vars.setdefault(name, value)
    caller = session.node
    session.sub_depth += 1
    session.trace("sub", f"{flow.name}:{start}")
    try:
        outcome = await session.run_graph(flow, start)
    except SubReturn as returned:
        outcome = returned.outcome
    finally:
        session.sub_depth -= 1
        session.node = caller
    session.trace("return", outcome)
    return outcome


def _sub_enters(params: Any) -> list[str]:
    if isinstance(params, str):
        return [params]
    return [params["node"]] if "node" in params else []


async def return_action(session: FlowSession, params: Any) -> str:
    """End the innermost sub-routine with outcome ``params`` (default ``ok``)."""
    raise SubReturn(str(session.render(params)) if params else "ok")


async def hours_action(session: FlowSession, params: Any) -> str:
    """Check a schedule at the current time: ``open``, ``closed`` or ``holiday``."""
    name = params if isinstance(params, str) else params["schedule"]
    schedule = session.flow.schedules.get(name)
    if schedule is None:
        raise FlowRuntimeError(f"unknown schedule {name!r}")
    moment = session.wall_time()
    state = schedule.state_at(moment)
    session.trace("hours", f"{name} at {moment.astimezone(schedule.zone):%a %Y-%m-%d %H:%M %Z}: {state}")
    return state


async def transfer_action(session: FlowSession, params: Any) -> str:
    """Blind transfer (the engine sends REFER); outcomes ``failed``, ``busy``, ``no_answer``.

    On success the call has left the IVR, so the flow ends (result ``transferred``).
    """
    target = str(session.render(params if isinstance(params, str) else params["to"]))
    session.trace("transfer", target)
    outcome = await session.call.controller.transfer(target)
    if outcome == "ok":
        session.final = "transferred"
        raise FlowFinished("transferred")
    return outcome


async def hangup_action(session: FlowSession, params: Any) -> str:
    """Hang up and end the flow."""
    if not session.caller_gone and session.final is None:
        session.final = "hangup"
        session.trace("hangup")
        await session.call.controller.hangup()
    raise FlowFinished("hangup")


async def reject_action(session: FlowSession, params: Any) -> str:
    """Refuse the call with a SIP status (default 486); only before it is answered."""
    status = params if isinstance(params, int) else (params or {}).get("status", 486)
    if session.answered:
        raise FlowRuntimeError("reject after the call was answered (use hangup)")
    session.final = "rejected"
    session.trace("reject", str(status))
    await session.call.controller.reject(int(status))
    raise FlowFinished("rejected")


SPECS = [
    ActionSpec("set", set_action, outcomes=("ok",), needs_media=False, renders_params=False),
    ActionSpec("switch", switch_action, outcomes=("default",), routes=_switch_routes,
               needs_media=False, renders_params=False),
    ActionSpec("goto", goto_action, outcomes=("ok",), routes=_goto_routes, needs_media=False,
               renders_params=False),
    ActionSpec("sub", sub_action, outcomes=(), enters=_sub_enters, needs_media=False, renders_params=False),
    ActionSpec("return", return_action, outcomes=(), needs_media=False, renders_params=False),
    ActionSpec("hours", hours_action, outcomes=("open", "closed", "holiday"), needs_media=False,
               renders_params=False),
    ActionSpec("transfer", transfer_action, outcomes=("failed", "busy", "no_answer", "hangup"),
               renders_params=False),
    ActionSpec("hangup", hangup_action, outcomes=(), needs_media=False, renders_params=False),
    ActionSpec("reject", reject_action, outcomes=(), needs_media=False, renders_params=False),
]
