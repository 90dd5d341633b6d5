"""An action's own ``on:`` (``menu: {..., on: {...}}``), moved to its node before the checks.

The docs allow routes inside the action's mapping as well as beside it; the checker and the
executor only read the node's ``on:``, so the inner one is merged into it first, marks kept, and
an inner ``on:`` that is not ``{outcome: node}`` becomes a diagnostic instead of a crash later.
"""

from __future__ import annotations

from ivr.flows.diagnostics import Diagnostic
from ivr.flows.loader import MarkedMap, Position
from ivr.flows.schema import NODE_KEYS


def _inner_routes_problem(params: MarkedMap) -> tuple[Position, str] | None:
    """Where and why ``params["on"]`` is not an ``{outcome: node}`` mapping (None when it is)."""
    routes = params["on"]
    if not isinstance(routes, MarkedMap):
        return params.value_marks["on"], f"must map outcomes to nodes, got {routes!r}"
    for outcome, target in routes.items():
        if not isinstance(outcome, str) or not outcome:
            return routes.key_marks[outcome], f"bad outcome {outcome!r}"
        if not isinstance(target, str):
            return routes.value_marks[outcome], f"outcome {outcome!r} must name a node, got {target!r}"
    return None


def hoist_inner_routes(document: MarkedMap, filename: str) -> list[Diagnostic]:
    """Move an action's own ``on:`` (``menu: {..., on: {...}}``) to its node, marks kept.

    The schema checks the inner ``on:`` of built-ins that document one; of any other action
    (``set``, a plugin's) it is checked here: it must be a mapping like the node's own.
    """
    diagnostics = []
    for name, node in document["nodes"].items():
        for action in [key for key in node if key not in NODE_KEYS]:
            params = node[action]
            if not isinstance(params, MarkedMap) or "on" not in params:
                continue
            problem = _inner_routes_problem(params)
            if problem is not None:
                (line, col), message = problem
                diagnostics.append(Diagnostic(filename, line, col, f"nodes.{name}.{action}.on: {message}"))
                continue
            inner = params.pop("on")
            if "on" not in node:
                node["on"] = inner
                node.key_marks["on"] = params.key_marks["on"]
                node.value_marks["on"] = params.value_marks["on"]
                continue
            for outcome, target in inner.items():
                if outcome in node["on"]:
                    line, col = inner.key_marks[outcome]
                    message = f"outcome {outcome!r} is routed twice"
                    diagnostics.append(Diagnostic(filename, line, col, message))
                node["on"][outcome] = target
                node["on"].key_marks[outcome] = inner.key_marks[outcome]
                node["on"].value_marks[outcome] = inner.value_marks[outcome]
    return diagnostics
