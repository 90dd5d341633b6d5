"""``ivr check``: schema validation plus the semantic checks a schema cannot express, and
:func:`load_flow`, which refuses a flow with any error.

Semantic checks: one action per node; every target exists; unreachable nodes (warning);
``on:`` keys an action never returns (warning); prompt files exist inside the flow's folder;
patterns compile; schedules have valid time zones, days, ranges and dates; templates compile;
``reject`` where the call may already be answered (warning); sub-flows load.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.config import did_you_mean
from ivr.flows import speech
from ivr.flows.actions import collect_actions
from ivr.flows.diagnostics import Diagnostic, FlowError
from ivr.flows.inner_routes import hoist_inner_routes
from ivr.flows.loader import MarkedMap, position_of, read_flow_document
from ivr.flows.model import Flow, Node, Schedule
from ivr.flows.paths import PathEscapeError, resolve_inside
from ivr.flows.registry import ActionRegistry
from ivr.flows.schema import NODE_KEYS, validate_document
from ivr.flows.templating import (
    is_template,
    template_name_problems,
    template_syntax_error,
)
from ivr.flows.values import parse_days, parse_time_ranges

log = logging.getLogger(__name__)

# Where each built-in action keeps prompts (play specs), for the prompt-file check.
_PROMPT_FIELDS = {
    "menu": ("prompt", "short_prompt", "invalid_prompt", "timeout_prompt", "no_match_prompt", "no_input_prompt"),
    "collect": ("prompt", "invalid_prompt", "timeout_prompt", "no_match_prompt", "no_input_prompt"),
    "listen": ("prompt",),
    "http": ("filler",),
}
_MAX_SUBFLOW_DEPTH = 8


class _Checker:
    def __init__(self, document: MarkedMap, path: Path, actions: ActionRegistry) -> None:
        self.doc = document
        self.path = path
        self.file = str(path)
        self.actions = actions
        self.diagnostics: list[Diagnostic] = []
        self.nodes: MarkedMap = document["nodes"]
        self.unreachable: list[str] = []  # filled by check_reachability, kept on the Flow

    def report(self, where: list[Any], message: str, *, key: bool = False, severity: str = "error") -> None:
        line, col = position_of(self.doc, where, key=key)
        self.diagnostics.append(Diagnostic(self.file, line, col, message, severity))

    def node_action(self, name: str) -> str | None:
        names = [key for key in self.nodes[name] if key not in NODE_KEYS]
        return names[0] if len(names) == 1 else None

    def run(self) -> None:
        for name, node in self.nodes.items():
            self.check_node(name, node)
        for key in ("start", "default", "on_hangup", "on_error"):
            if key in self.doc:
                self.check_target([key], self.doc[key])
        self.check_schedules()
        self.check_reachability()
        self.check_templates(self.doc, [])

    def check_target(self, where: list[Any], target: str) -> None:
        if target not in self.nodes:
            self.report(where, f"unknown node {target!r}{did_you_mean(target, self.nodes)}")

    def check_node(self, name: str, node: MarkedMap) -> None:
        where = ["nodes", name]
        actions = [key for key in node if key not in NODE_KEYS]
        if not actions:
            known = ", ".join(self.actions.names())
            self.report(where, f"node {name!r} has no action (one of: {known})", key=True)
            return
        if len(actions) > 1:
            self.report(where + [actions[1]], f"node {name!r} has more than one action: {', '.join(actions)}",
                        key=True)
            return
        action = actions[0]
        spec = self.actions.get(action)
        if spec is None:  # the schema already reported it
            return
        params = node[action]
        if "next" in node:
            self.check_target(where + ["next"], node["next"])
        for outcome, target in (node.get("on") or {}).items():
            self.check_target(where + ["on", outcome], target)
            declared = not spec.outcomes or outcome in spec.outcomes
            if not declared and not self._is_own_outcome(action, params, outcome):
                known = ", ".join(spec.outcomes)
                self.report(where + ["on", outcome],
                            f"action {action!r} has no outcome {outcome!r} (outcomes: {known})",
                            key=True, severity="warning")
        if spec.routes is not None:
            for outcome, target in spec.routes(params).items():
                self.check_target(self._route_position(where, action, params, outcome), target)
        if spec.enters is not None:
            for target in spec.enters(params):
                self.check_target(self._route_position(where, action, params, ""), target)
        self.check_action_params(where, action, params)

    @staticmethod
    def _is_own_outcome(action: str, params: Any, outcome: str) -> bool:
        # A menu's option keys and a switch's case values are outcomes too.
        if action == "menu":
            return outcome in (params.get("options") or {}) or outcome in (params.get("patterns") or {})
        if action == "switch":
            return outcome in (params.get("cases") or {})
        return False

    @staticmethod
    def _route_position(where: list[Any], action: str, params: Any, outcome: str) -> list[Any]:
        if action == "menu":
            table = "options" if outcome in (params.get("options") or {}) else "patterns"
            return where + [action, table, outcome]
        if action == "switch":
            return where + [action, "cases", outcome]
        if isinstance(params, dict):
            return where + [action, "node"]
        return where + [action]

    def check_action_params(self, where: list[Any], action: str, params: Any) -> None:
        here = where + [action]
        if action == "play":
            self.check_prompt(here, params)
        for field_name in _PROMPT_FIELDS.get(action, ()):
            if isinstance(params, dict) and field_name in params:
                self.check_prompt(here + [field_name], params[field_name])
        if action == "collect":
            low, high = params.get("min_digits", 1), params.get("max_digits")
            if high is not None and low > high:
                self.report(here + ["min_digits"], f"min_digits {low} is more than max_digits {high}")
            if "pattern" in params:
                self.check_regex(here + ["pattern"], params["pattern"])
        if action == "menu":
            if not params.get("options") and not params.get("patterns"):
                self.report(here, "a menu needs options or patterns")
            for pattern in params.get("patterns") or {}:
                self.check_regex(here + ["patterns", pattern], pattern, key=True)
            self.check_menu_phrases(here, params)
        if action == "hours":
            schedule = params if isinstance(params, str) else params["schedule"]
            if schedule not in (self.doc.get("schedules") or {}):
                self.report(here, f"unknown schedule {schedule!r} (define it under schedules:)")
        if action == "record" and not is_template(params["to"]):
            if Path(params["to"]).is_absolute() or ".." in Path(params["to"]).parts:
                self.report(here + ["to"], f"recording path {params['to']!r} must stay inside the recordings "
                                           "folder")
        if action == "sub" and isinstance(params, dict):
            if ("node" in params) == ("flow" in params):
                self.report(here, "sub needs exactly one of node: or flow:")
            elif "flow" in params:
                self.check_file(here + ["flow"], params["flow"])

    def check_menu_phrases(self, where: list[Any], params: Any) -> None:
        """A menu that listens for speech needs phrases; one phrase may not lead to two options."""
        listens = params.get("input", self.doc.get("defaults", {}).get("input", "dtmf"))
        if "speech" not in (listens if isinstance(listens, list) else [listens]):
            return
        options = params.get("options") or {}
        if not speech.option_phrases(options):
            self.report(where + ["input"], "a menu that listens for speech needs options with say: phrases "
                                           "(or digit keys)")
        seen: dict[tuple[str, ...], str] = {}
        for key, option in options.items():
            said = speech.option_phrases({key: option})
            for phrase in said:
                words = speech.phrase_words(phrase)
                if words in seen and seen[words] != key:
                    self.report(where + ["options", key], f"phrase {phrase!r} is said for options "
                                                          f"{seen[words]!r} and {key!r}")
                seen.setdefault(words, key)

    def check_regex(self, where: list[Any], pattern: str, *, key: bool = False) -> None:
        try:
            re.compile(pattern)
        except re.error as exc:
            self.report(where, f"bad pattern {pattern!r}: {exc}", key=key)

    def check_prompt(self, where: list[Any], spec: Any) -> None:
        items = spec if isinstance(spec, list) else [spec]
        for index, item in enumerate(items):
            item_where = where + [index] if isinstance(spec, list) else where
            if isinstance(item, str):
                self.check_file(item_where, item)
            elif isinstance(item, dict) and "file" in item:
                self.check_file(item_where + ["file"], item["file"])

    def check_file(self, where: list[Any], name: str) -> None:
        if is_template(name):
            return  # resolved (and confined) when the call runs
        try:
            resolved = resolve_inside(self.path.parent, name)
        except PathEscapeError as exc:
            self.report(where, str(exc))
            return
        if not resolved.is_file():
            self.report(where, f"file not found: {name!r} (looked in {self.path.parent})")

    def check_schedules(self) -> None:
        for name, schedule in (self.doc.get("schedules") or {}).items():
            where = ["schedules", name]
            try:
                ZoneInfo(schedule["timezone"])
            except (ZoneInfoNotFoundError, ValueError):
                self.report(where + ["timezone"], f"unknown time zone {schedule['timezone']!r}")
            for days, ranges in schedule["weekly"].items():
                try:
                    parse_days(days)
                except ValueError as exc:
                    self.report(where + ["weekly", days], str(exc), key=True)
                try:
                    parse_time_ranges(ranges)
                except ValueError as exc:
                    self.report(where + ["weekly", days], str(exc))
            for index, day in enumerate(schedule.get("holidays") or []):
                try:
                    Schedule.from_document(name, {"timezone": "UTC", "holidays": [day]})
                except ValueError:
                    self.report(where + ["holidays", index], f"bad holiday date {day!r} (write YYYY-MM-DD)")

    def successors(self, name: str) -> Iterator[str]:
        node = self.nodes[name]
        if "next" in node:
            yield node["next"]
        yield from (node.get("on") or {}).values()
        action = self.node_action(name)
        spec = self.actions.get(action) if action else None
        if spec is not None and spec.routes is not None:
            yield from spec.routes(node[action]).values()
        if spec is not None and spec.enters is not None:
            yield from spec.enters(node[action])

    def check_reachability(self) -> None:
        roots = [self.doc[k] for k in ("start", "default", "on_hangup", "on_error") if k in self.doc]
        seen: set[str] = set()
        stack = [r for r in roots if r in self.nodes]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            stack.extend(t for t in self.successors(name) if t in self.nodes)
        self.unreachable = [name for name in self.nodes if name not in seen]
        for name in self.unreachable:
            self.report(["nodes", name], f"node {name!r} is unreachable", key=True, severity="warning")
        self.check_reject_after_answer()

    def check_reject_after_answer(self) -> None:
        # Nodes that may run once the call is answered: anything after a media action.
        answered: set[str] = set()
        stack = []
        for name in self.nodes:
            action = self.node_action(name)
            spec = self.actions.get(action) if action else None
            if spec is not None and spec.needs_media:
                stack.extend(t for t in self.successors(name) if t in self.nodes)
        while stack:
            name = stack.pop()
            if name not in answered:
                answered.add(name)
                stack.extend(t for t in self.successors(name) if t in self.nodes)
        for name in answered:
            if self.node_action(name) == "reject":
                self.report(["nodes", name, "reject"], "reject may run after the call is answered (it then "
                            "fails)", key=True, severity="warning")

    def check_templates(self, value: Any, where: list[Any]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                self.check_templates(item, where + [key])
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.check_templates(item, where + [index])
        elif is_template(value):
            problem = template_syntax_error(value)
            for message in [problem] if problem else template_name_problems(value):
                self.report(where, message)


def _build_flow(document: MarkedMap, path: Path, actions: ActionRegistry) -> Flow:
    nodes = {}
    for name, raw in document["nodes"].items():
        action = next(key for key in raw if key not in NODE_KEYS)
        nodes[name] = Node(
            name=name,
            action=action,
            params=raw[action],
            on=dict(raw.get("on") or {}),
            next=raw.get("next"),
            barge_in=raw.get("barge_in"),
            flush_dtmf=bool(raw.get("flush_dtmf", False)),
            line=position_of(document, ["nodes", name], key=True)[0],
        )
    schedules = {
        name: Schedule.from_document(name, raw) for name, raw in (document.get("schedules") or {}).items()
    }
    return Flow(
        name=document.get("flow") or path.stem,
        path=path,
        start=document["start"],
        nodes=nodes,
        defaults=dict(document.get("defaults") or {}),
        schedules=schedules,
        initial_vars=dict(document.get("vars") or {}),
        default=document.get("default"),
        on_hangup=document.get("on_hangup"),
        on_error=document.get("on_error"),
    )


def check_file(
    path: str | Path, actions: ActionRegistry | None = None, _depth: int = 0
) -> tuple[Flow | None, list[Diagnostic]]:
    """Check one flow file; return the built :class:`Flow` (``None`` on any error) and every
    diagnostic (errors and warnings), sorted by position."""
    path = Path(path)
    actions = actions or collect_actions()
    document, diagnostics = read_flow_document(path)
    if document is None:
        return None, diagnostics
    if not isinstance(document, MarkedMap):
        message = "a flow file must be a mapping (flow:, start:, nodes:)"
        return None, diagnostics + [Diagnostic(str(path), 1, 1, message)]
    schema_problems = validate_document(document, str(path), actions)
    diagnostics += schema_problems
    unreachable: list[str] = []
    if not schema_problems:
        diagnostics += hoist_inner_routes(document, str(path))
        checker = _Checker(document, path, actions)
        checker.run()
        diagnostics += checker.diagnostics
        unreachable = checker.unreachable
    diagnostics.sort(key=lambda d: (d.line, d.col))
    if any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    flow = _build_flow(document, path, actions)
    flow.warnings = [d for d in diagnostics if d.severity == "warning"]
    flow.unreachable = tuple(unreachable)
    flow.mtimes[path.resolve()] = path.stat().st_mtime
    diagnostics += _load_subflows(flow, document, actions, _depth)
    if any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    return flow, diagnostics


def _load_subflows(flow: Flow, document: MarkedMap, actions: ActionRegistry, depth: int) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    for node in flow.nodes.values():
        if node.action != "sub" or not isinstance(node.params, dict) or "flow" not in node.params:
            continue
        name = node.params["flow"]
        line, col = position_of(document, ["nodes", node.name, "sub", "flow"])
        if depth >= _MAX_SUBFLOW_DEPTH:
            message = f"sub-flows nest deeper than {_MAX_SUBFLOW_DEPTH} (a cycle?)"
            diagnostics.append(Diagnostic(str(flow.path), line, col, message))
            continue
        if name in flow.subflows:
            continue
        subflow, sub_diagnostics = check_file(resolve_inside(flow.folder, name), actions, depth + 1)
        diagnostics += sub_diagnostics
        if subflow is None:
            diagnostics.append(Diagnostic(str(flow.path), line, col, f"sub-flow {name!r} has errors"))
        else:
            flow.subflows[name] = subflow
            flow.mtimes.update(subflow.mtimes)
    return diagnostics


def load_flow(path: str | Path, actions: ActionRegistry | None = None) -> Flow:
    """Load and check the flow at ``path``; raise :class:`FlowError` listing every error.

    Pass the process's ``actions`` registry so plugin actions are known (the built-ins alone
    otherwise). Warnings are kept on ``Flow.warnings`` and logged.
    """
    flow, diagnostics = check_file(path, actions)
    if flow is None:
        raise FlowError(diagnostics)
    for warning in flow.warnings:
        log.warning("%s", warning)
    return flow
