"""Where an outcome goes: the routing rule the executor applies, as a pure function.

The executor (:func:`ivr.flows.executor.route`) and ``ivr graph`` both call
:func:`outcome_route`, so a diagram shows the routes a call really takes.
"""

from __future__ import annotations

from ivr.flows.model import Flow, Node
from ivr.flows.registry import ActionSpec

__all__ = ["RULES", "outcome_route"]

#: The rules of :func:`outcome_route`, first match wins (docs/flows.md, "Nodes and routing").
RULES = ("on", "route", "on_hangup", "next", "default", "end")


def outcome_route(flow: Flow, node: Node, spec: ActionSpec, outcome: str, *,
                  caller_gone: bool = True) -> tuple[str | None, str]:
    """``(target, rule)`` for ``outcome`` of ``node``; ``target`` is ``None`` when the walk ends.

    ``rule`` names the step of :data:`RULES` that decided: the node's ``on:``, the action's own
    ``route`` (menu options, switch cases, goto), the flow's ``on_hangup`` (for ``hangup`` once
    the caller is gone; the target may be ``None``: never ``next`` then), the node's ``next``,
    the flow's ``default``, else ``end``. Entering ``on_hangup`` only once is the caller's
    business (it depends on the call's state).
    """
    if outcome in node.on:
        return node.on[outcome], "on"
    if spec.routes is not None:
        own = spec.routes(node.params)
        if outcome in own:
            return own[outcome], "route"
    if outcome == "hangup" and caller_gone:
        return flow.on_hangup, "on_hangup"
    if node.next:
        return node.next, "next"
    if flow.default:
        return flow.default, "default"
    return None, "end"
