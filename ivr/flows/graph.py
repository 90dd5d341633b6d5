"""``ivr graph``: a checked flow as a graph description, and a call's path over it.

Pure: :func:`build_graph` turns a :class:`~ivr.flows.model.Flow` into a :class:`FlowGraph`
(boxes, labelled edges, sub-flow clusters) and :func:`mark_path` lays a call's trace over it;
:mod:`ivr.flows.graph_render` draws the result (DOT, SVG, PNG, Mermaid).

What an edge means follows the executor: each outcome a node can return is routed with
:func:`ivr.flows.routing.outcome_route` (``on:``, the action's own targets, ``next``, the flow's
``default``); outcomes that go nowhere end the flow (inside a sub-flow: return) and get an edge
to an "end" mark. ``hangup`` and errors are drawn once per flow, from a "caller hangs up" and an
"any error" point to the flow's ``on_hangup`` / ``on_error`` (and per node only where a node
routes them itself, ``on: {error: ...}``). Unreachable nodes are the checker's
(:attr:`Flow.unreachable`), not computed again here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from ivr.flows.model import Flow, Node
from ivr.flows.registry import ActionRegistry
from ivr.flows.routing import outcome_route
from ivr.flows.session import TraceEntry
from ivr.flows.templating import is_template

__all__ = ["Cluster", "FlowGraph", "GraphEdge", "GraphNode", "PathStep", "build_graph", "mark_path",
           "path_of_trace"]

#: Actions after which the flow does not go on: the call ends (or the sub-flow returns).
ENDING_ACTIONS = {"hangup": "hangs up", "reject": "rejects", "return": "returns"}
_SUMMARY_WIDTH = 24
# collect's and menu's speech-era failures, and the names a flow written before speech routes
# (ivr.flows.actions.digits.failure_outcome).
_FAILURE_ALIASES = {"no_input": "timeout", "no_match": "invalid"}


@dataclass(frozen=True)
class GraphNode:
    """A box. ``kind``: ``node`` (a flow node), ``entry`` (where the call arrives), ``event``
    (caller hangs up / any error), ``end`` (where an outcome with no target goes)."""

    id: str
    label: str
    summary: tuple[str, ...] = ()
    kind: str = "node"
    action: str = ""
    start: bool = False
    unreachable: bool = False
    ending: str = ""  # "hangs up" | "rejects" | "returns" for those actions
    cluster: str = ""  # the sub-flow cluster id ("" for the flow drawn)
    visits: tuple[int, ...] = ()  # step numbers of a marked path


@dataclass(frozen=True)
class GraphEdge:
    """An arrow. ``rule`` is how the executor chose it: one of
    :data:`ivr.flows.routing.RULES`, or ``sub`` (a ``sub`` node enters a sub-routine),
    ``error`` (a node's own ``on: {error: ...}``), ``on_error`` / ``on_hangup`` (the flow's),
    ``start`` (the call arrives), ``trace`` (a step of a call's path no other edge explains:
    a return from a sub-routine, a jump to an error handler)."""

    source: str
    target: str
    label: str
    rule: str
    outcomes: tuple[str, ...] = ()
    steps: tuple[tuple[int, float], ...] = ()  # (step number, seconds) of a marked path

    @property
    def dangling(self) -> bool:
        """The outcome goes nowhere: the flow ends (a sub-flow returns) after it."""
        return self.rule == "end"


@dataclass(frozen=True)
class Cluster:
    """A sub-flow drawn inside the flow calling it."""

    id: str
    title: str
    parent: str = ""


@dataclass
class FlowGraph:
    """Everything :mod:`ivr.flows.graph_render` draws."""

    title: str
    nodes: dict[str, GraphNode] = field(default_factory=dict)
    edges: list[GraphEdge] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    #: sub node id -> the id prefix of the nodes it enters (for following a trace).
    sub_prefix: dict[str, str] = field(default_factory=dict)
    caption: str = ""  # the outcome of a marked path

    def edges_from(self, source: str) -> list[GraphEdge]:
        return [edge for edge in self.edges if edge.source == source]


@dataclass(frozen=True)
class PathStep:
    """One node a call ran, with when it was entered and the outcome it gave (``""`` if none)."""

    time: float
    node: str  # a GraphNode id
    outcome: str = ""
    error: bool = False
    resumed: bool = False  # a sub node taking back the call after its sub-routine returned


# -- summaries ---------------------------------------------------------------------------------


def _short(text: Any, width: int = _SUMMARY_WIDTH) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _prompt(spec: Any) -> str:
    """A play spec in a few words: a file's name, the text said, a tone."""
    if isinstance(spec, list):
        return " + ".join(_prompt(item) for item in spec)
    if isinstance(spec, str):
        return spec if is_template(spec) else Path(spec).name
    if isinstance(spec, dict):
        if "file" in spec:
            return _prompt(spec["file"])
        if "say" in spec:
            return f'"{spec["say"]}"'
        for key in ("tone", "silence", "dtmf"):
            if key in spec:
                return f"{key} {spec[key]}"
    return str(spec)


def summarize(node: Node) -> tuple[str, ...]:
    """The node's action and its key setting, one short line each (what the box shows)."""
    action, params = node.action, node.params
    lines: list[str]
    if action == "play":
        lines = [f"play {_prompt(params)}"]
    elif action in ("menu", "collect", "listen"):
        lines = [f"{action} {_prompt(params.get('prompt', ''))}".rstrip()]
        if action == "collect":
            low, high = params.get("min_digits", 1), params.get("max_digits")
            lines.append(f"{low}-{high} digits" if high and high != low else f"{low} digits")
        if params.get("save_as"):
            lines.append(f"save_as {params['save_as']}")
    elif action == "set" and isinstance(params, dict):
        lines = [f"set {key} = {value}" for key, value in params.items()] or ["set"]
    elif action == "switch":
        lines = [f"switch {params['value']}"]
    elif action in ("transfer", "hours", "pause", "goto", "return", "reject"):
        value = params.get("to", params.get("schedule", params.get("status"))) if isinstance(params, dict) else params
        lines = [f"{action} {value}" if value not in (None, "") else action]
    elif action == "record":
        lines = [f"record {params['to']}"]
    elif action == "http":
        method = params.get("method", "POST" if "json" in params or "body" in params else "GET")
        lines = [f"http {method} {params['url']}"]
    elif action == "sub":
        target = params if isinstance(params, str) else params.get("node") or params.get("flow")
        lines = [f"sub {target}"]
    elif isinstance(params, dict) and params:
        settings = [f"{key} {value}" for key, value in list(params.items())[:2]]
        lines = [f"{action} {settings[0]}", *settings[1:]]
    else:
        lines = [f"{action} {params}" if params not in (None, "") else action]
    return tuple(_short(line) for line in lines)


# -- outcomes ----------------------------------------------------------------------------------


def _listens_for_speech(flow: Flow, params: Any) -> bool:
    value = params.get("input", flow.defaults.get("input", "dtmf"))
    return "speech" in (value if isinstance(value, list) else [value])


def _routed_failure(node: Node, failure: str) -> str:
    alias = _FAILURE_ALIASES.get(failure)
    if failure not in node.on and alias is not None and alias in node.on:
        return alias
    return failure


def node_outcomes(flow: Flow, node: Node, actions: ActionRegistry) -> tuple[list[str], bool]:
    """The outcomes ``node`` can return (``hangup`` and ``error`` aside: drawn per flow), and
    whether it may return others too (an action that declares none, e.g. ``sub``).

    Follows the built-ins: a menu repeats on a wrong entry or silence unless the node routes
    ``invalid`` / ``timeout`` (or ``no_match`` / ``no_input``) itself; ``collect`` returns the
    speech failures under their digit names when only those are routed.
    """
    spec = actions.get(node.action)
    if node.action in ENDING_ACTIONS or spec is None:
        return [], False
    own = list(spec.routes(node.params)) if spec.routes is not None else []
    if node.action == "menu":
        failures = [f for f in ("invalid", "timeout", "no_match", "no_input") if f in node.on]
        found = own + ["exhausted"] + failures
    elif node.action == "collect":
        failures = (["no_match", "no_input", "invalid"] if _listens_for_speech(flow, node.params)
                    else ["invalid", "timeout"])
        found = ["ok"] + [_routed_failure(node, f) for f in failures]
    elif node.action == "switch":
        found = own + ["default"]
    else:
        found = own + list(spec.outcomes)
    found += list(node.on)
    unique = [o for i, o in enumerate(found) if o not in found[:i] and o not in ("hangup", "error")]
    return unique, not spec.outcomes and not own


# -- building ----------------------------------------------------------------------------------


class _Builder:
    def __init__(self, root: Flow, actions: ActionRegistry) -> None:
        self.root = root
        self.actions = actions
        self.graph = FlowGraph(title=root.name)
        self.flow_prefix: dict[Path, str] = {}

    def add_flow(self, flow: Flow, prefix: str, cluster: str) -> None:
        for node in flow.nodes.values():
            self.graph.nodes[prefix + node.name] = GraphNode(
                id=prefix + node.name, label=node.name, summary=summarize(node), action=node.action,
                start=not prefix and node.name == flow.start, unreachable=node.name in flow.unreachable,
                ending=ENDING_ACTIONS.get(node.action, ""), cluster=cluster,
            )
        for node in flow.nodes.values():
            self.add_routes(flow, node, prefix, cluster)
        for event, target, text in (("hangup", flow.on_hangup, "caller hangs up"),
                                    ("error", flow.on_error, "any error")):
            if target:
                event_id = f"{prefix}@{event}"
                self.graph.nodes[event_id] = GraphNode(event_id, text, kind="event", cluster=cluster)
                self.graph.edges.append(GraphEdge(event_id, prefix + target, f"on_{event}", f"on_{event}"))

    def add_routes(self, flow: Flow, node: Node, prefix: str, cluster: str) -> None:
        spec = self.actions.get(node.action)
        if spec is None:
            return
        node_id = prefix + node.name
        self.add_sub(flow, node, prefix, cluster)
        outcomes, open_ended = node_outcomes(flow, node, self.actions)
        groups: dict[tuple[str | None, str], list[str]] = {}
        rules: dict[str | None, str] = {}  # an explicit route's target -> its rule (on, route)
        for outcome in outcomes:
            target, rule = outcome_route(flow, node, spec, outcome)
            if rule in ("on", "route"):  # one arrow per target: "0, exhausted"
                rule = rules.setdefault(target, rule)
            groups.setdefault((target, rule), []).append(outcome)
        if open_ended:  # any outcome not listed goes the way an unknown one would
            groups.setdefault(outcome_route(flow, node, spec, "\0any"), []).append("*")
        for special in ("hangup", "error"):
            if special in node.on:
                groups.setdefault((node.on[special], "on" if special == "hangup" else "error"), []).append(special)
        every = set(outcomes) | ({"*"} if open_ended else set())
        for (target, rule), names in groups.items():
            listed = ", ".join(n for n in names if n != "*")
            if rule in ("next", "default"):  # "next" alone: every outcome of the node goes there
                label = rule if set(names) == every or not listed else f"{listed} ({rule})"
            else:
                label = listed or "any"
            if target is None:
                end_id = f"{node_id}@end"
                text = "returns" if cluster else "flow ends"
                self.graph.nodes[end_id] = GraphNode(end_id, text, kind="end", cluster=cluster)
                target_id = end_id
            else:
                target_id = prefix + target
            self.graph.edges.append(GraphEdge(node_id, target_id, label, rule, tuple(names)))

    def add_sub(self, flow: Flow, node: Node, prefix: str, cluster: str) -> None:
        if node.action != "sub":
            return
        params = node.params
        node_id = prefix + node.name
        if isinstance(params, str) or "node" in params:
            target = params if isinstance(params, str) else params["node"]
            self.graph.sub_prefix[node_id] = prefix
            self.graph.edges.append(GraphEdge(node_id, prefix + target, "sub", "sub"))
            return
        subflow = flow.subflows[params["flow"]]
        key = subflow.path.resolve()
        if key not in self.flow_prefix:
            sub_cluster = f"{prefix}{params['flow']}"
            self.flow_prefix[key] = sub_cluster + "/"
            self.graph.clusters.append(Cluster(sub_cluster, f"sub-flow {subflow.name} ({params['flow']})", cluster))
            self.add_flow(subflow, sub_cluster + "/", sub_cluster)
        sub_prefix = self.flow_prefix[key]
        self.graph.sub_prefix[node_id] = sub_prefix
        self.graph.edges.append(GraphEdge(node_id, sub_prefix + params.get("start", subflow.start), "sub", "sub"))


def build_graph(flow: Flow, actions: ActionRegistry) -> FlowGraph:
    """The graph of ``flow`` (checked: from :func:`ivr.flows.checker.check_file`), its sub-flows
    drawn as clusters; ``actions`` must be the registry it was checked with."""
    builder = _Builder(flow, actions)
    builder.flow_prefix[flow.path.resolve()] = ""  # a sub-flow calling this file back enters it
    builder.graph.nodes["@start"] = GraphNode("@start", "call", kind="entry")
    builder.graph.edges.append(GraphEdge("@start", flow.start, "", "start"))
    builder.add_flow(flow, "", "")
    return builder.graph


# -- a call's path -----------------------------------------------------------------------------


def path_of_trace(graph: FlowGraph, entries: Iterable[TraceEntry]) -> tuple[list[PathStep], str]:
    """The nodes a traced call ran, in order, as graph node ids; and how the call ended.

    Follows ``sub`` / ``return`` to know which flow's node an ``enter`` names. The first step is
    the call arriving (``@start``).
    """
    steps = [PathStep(0.0, "@start")]
    prefixes = [""]
    ending = ""
    for entry in entries:
        current = prefixes[-1] + entry.node
        if entry.event == "enter":
            steps.append(PathStep(entry.time, current))
        elif entry.event == "outcome" and steps[-1].node == current:
            steps[-1] = replace(steps[-1], outcome=entry.detail)
        elif entry.event == "error":
            if steps[-1].node == current:
                steps[-1] = replace(steps[-1], error=True, outcome="error")
        elif entry.event == "sub":
            prefixes.append(graph.sub_prefix.get(current, prefixes[-1]))
        elif entry.event == "return" and len(prefixes) > 1:
            prefixes.pop()
            steps.append(PathStep(entry.time, prefixes[-1] + entry.node, entry.detail, resumed=True))
        elif entry.event == "end":
            ending = f"{entry.detail} at {entry.time:.1f}s"
    return steps, ending


def mark_path(graph: FlowGraph, steps: list[PathStep], ending: str = "") -> FlowGraph:
    """A copy of ``graph`` with the path drawn: each step's node gets its step number, each
    move its edge ``(number, seconds)`` (an edge of its own when no route explains it)."""
    marked = FlowGraph(graph.title, dict(graph.nodes), list(graph.edges), list(graph.clusters),
                       dict(graph.sub_prefix), caption=f"call: {ending}" if ending else "call")
    unknown = [step.node for step in steps if step.node not in marked.nodes]
    if unknown:
        raise ValueError(f"the trace names nodes this flow does not have: {', '.join(dict.fromkeys(unknown))}")
    for number, step in enumerate(steps):
        node = marked.nodes[step.node]
        marked.nodes[step.node] = replace(node, visits=node.visits + (number,))
    for number, (before, after) in enumerate(zip(steps, steps[1:]), start=1):
        index = _edge_for(marked, before, after)
        if index is None:
            label = "returns" if after.resumed else (before.outcome or "")
            marked.edges.append(GraphEdge(before.node, after.node, label, "trace"))
            index = len(marked.edges) - 1
        edge = marked.edges[index]
        marked.edges[index] = replace(edge, steps=edge.steps + ((number, after.time),))
    return marked


def _edge_for(graph: FlowGraph, before: PathStep, after: PathStep) -> int | None:
    """The index of the edge a move took: the one from ``before`` to ``after`` that carries the
    outcome ``before`` gave, else any between them (a sub's entry, ``next``)."""
    candidates = [i for i, edge in enumerate(graph.edges)
                  if edge.source == before.node and edge.target == after.node and edge.rule != "trace"]
    if before.error:
        candidates = [i for i in candidates if graph.edges[i].rule == "error"]
    for index in candidates:
        if before.outcome in graph.edges[index].outcomes:
            return index
    return candidates[0] if candidates else None

