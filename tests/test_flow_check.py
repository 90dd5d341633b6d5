"""`ivr check`: schema and semantic errors, each reported at the right file:line:col."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from ivr.flows import FlowError, check_file, collect_actions, load_flow
from ivr.flows.cli import add_commands, cmd_check, cmd_schema
from ivr.testing import make_setup

BROKEN = Path(__file__).parent / "flows"
FLOWS = Path(__file__).parent.parent / "flows"


def errors_of(name: str) -> list[str]:
    _, diagnostics = check_file(BROKEN / name)
    return [f"{d.line}:{d.col}: {d.message}" for d in diagnostics if d.severity == "error"]


@pytest.mark.parametrize(
    ("name", "position", "text"),
    [
        ("syntax_error.yaml", "6:3", "YAML"),
        ("duplicate_key.yaml", "6:3", "duplicate key 'a'"),
        ("unknown_action.yaml", "5:5", "unknown action or node key 'playy'"),
        ("missing_target.yaml", "7:34", "unknown node 'suport' (did you mean 'support'?)"),
        ("missing_prompt.yaml", "5:12", "file not found: 'prompts/there_is_no_such_prompt.wav'"),
        ("bad_duration.yaml", "7:16", "bad duration '5 parsecs'"),
        ("bad_pattern.yaml", "7:16", "bad pattern '[0-9'"),
        ("bad_timezone.yaml", "5:15", "unknown time zone 'Europe/Atlantis'"),
        ("path_escape.yaml", "5:11", "escapes the folder"),
        ("path_escape.yaml", "8:18", "absolute paths are not allowed"),
        ("two_actions.yaml", "6:5", "node 'a' has more than one action: play, hangup"),
        ("two_actions.yaml", "7:3", "node 'b' has no action"),
        ("bad_template.yaml", "5:17", "template syntax error"),
        ("bad_value.yaml", "8:20", "nodes.a.menu.max_invalid: 0 is less than the minimum of 1"),
        ("bad_schedule.yaml", "6:14", "bad day range 'mon-fry'"),
        ("bad_schedule.yaml", "6:43", "bad time of day in '10:00-25:00'"),
        ("bad_schedule.yaml", "7:16", "bad holiday date '2026-13-01'"),
    ],
)
def test_each_error_class_points_at_its_source(name: str, position: str, text: str) -> None:
    found = errors_of(name)
    assert any(e.startswith(f"{position}: ") and text in e for e in found), found


def test_unreachable_node_is_a_warning_not_an_error() -> None:
    flow, diagnostics = check_file(BROKEN / "unreachable.yaml")
    assert flow is not None
    assert [(d.line, d.col, d.severity) for d in diagnostics] == [(6, 3, "warning")]
    assert "node 'orphan' is unreachable" in str(diagnostics[0])


def test_load_flow_raises_flow_error_with_formatted_diagnostics() -> None:
    with pytest.raises(FlowError) as caught:
        load_flow(BROKEN / "missing_target.yaml")
    assert f"{BROKEN / 'missing_target.yaml'}:7:34: unknown node 'suport'" in caught.value.lines[0]
    assert caught.value.errors and all(d.severity == "error" for d in caught.value.errors)


def test_example_flows_are_clean() -> None:
    for name in ("attendant.yaml", "voicemail.yaml"):
        flow, diagnostics = check_file(FLOWS / name)
        assert flow is not None and diagnostics == [], diagnostics
    attendant = load_flow(FLOWS / "attendant.yaml")
    assert "voicemail.yaml" in attendant.subflows
    assert len(attendant.mtimes) == 2  # reloads notice a changed sub-flow too


def test_yaml_boolean_lookalike_keys_stay_text(tmp_path: Path) -> None:
    # YAML 1.1 would read `on:` as True and `0:` / `010:` as integers.
    path = tmp_path / "keys.yaml"
    path.write_text(
        "start: m\nnodes:\n  m:\n    menu:\n      prompt: {say: x}\n"
        "      options: {0: a, 010: b}\n    on: {exhausted: a}\n  a: {hangup: }\n  b: {hangup: }\n"
    )
    flow = load_flow(path)
    assert flow.nodes["m"].params["options"] == {"0": "a", "010": "b"}
    assert flow.nodes["m"].on == {"exhausted": "a"}


def test_plugin_action_is_known_once_registered(tmp_path: Path) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text("start: a\nnodes:\n  a:\n    lookup_crm: {key: 42}\n    on: {found: b, bogus: b}\n  b: {hangup: }\n")
    assert "unknown action or node key 'lookup_crm'" in str(check_file(path)[1][0])

    async def lookup(session, params):  # pragma: no cover - never run here
        return "found"

    actions = collect_actions()
    actions.register("lookup_crm", lookup, {"type": "object", "required": ["key"]}, outcomes=("found", "missing"))
    flow, diagnostics = check_file(path, actions)
    assert flow is not None
    assert [(d.line, d.severity) for d in diagnostics] == [(5, "warning")]
    assert "no outcome 'bogus'" in diagnostics[0].message

    path.write_text("start: a\nnodes:\n  a:\n    lookup_crm: {}\n  b: {hangup: }\n")
    _, diagnostics = check_file(path, actions)
    assert "'key' is a required property" in diagnostics[0].message


@pytest.mark.parametrize(("inner", "position", "text"), [
    ("true", "6:13", "nodes.a.set.on: must map outcomes to nodes, got True"),
    ("null", "6:13", "must map outcomes to nodes, got None"),
    ("[b]", "6:13", "must map outcomes to nodes, got ['b']"),
    ("{x: 5}", "6:17", "outcome 'x' must name a node, got 5"),
    ("{x: {y: b}}", "6:17", "outcome 'x' must name a node"),
    ("{'': b}", "6:14", "bad outcome ''"),
])
def test_non_mapping_on_inside_an_action_is_a_diagnostic(tmp_path: Path, inner: str, position: str,
                                                          text: str) -> None:
    """Regression: an ``on:`` inside ``set`` (which the schema leaves free) was hoisted into the
    node's routes as it was, and the checker then crashed with AttributeError/TypeError."""
    path = tmp_path / "inner_on.yaml"
    path.write_text(f"flow: f\nstart: a\nnodes:\n  a:\n    set:\n      'on': {inner}\n    next: b\n"
                    "  b: {hangup: }\n")
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert any(f"{path}:{position}: " in line and text in line for line in info.value.lines), info.value.lines


def test_mapping_on_inside_set_routes_like_the_nodes_own(tmp_path: Path) -> None:
    path = tmp_path / "inner_on.yaml"
    path.write_text("flow: f\nstart: a\nnodes:\n  a:\n    set: {x: 1, 'on': {ok: b}}\n  b: {hangup: }\n")
    flow = load_flow(path)
    assert flow.nodes["a"].on == {"ok": "b"} and flow.nodes["a"].params == {"x": 1}


def test_plugin_cannot_replace_a_builtin_action() -> None:
    async def handler(session, params):  # pragma: no cover
        return "ok"

    with pytest.raises(ValueError):
        collect_actions().register("play", handler)


def test_cli_check_exit_codes_and_output() -> None:
    out = io.StringIO()
    args = argparse.Namespace(files=[str(FLOWS / "attendant.yaml"), str(BROKEN / "bad_value.yaml")], strict=False)
    assert cmd_check(args, make_setup(), out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("attendant.yaml: ok (18 nodes)")
    assert lines[1] == f"{BROKEN / 'bad_value.yaml'}:8:20: nodes.a.menu.max_invalid: 0 is less than the minimum of 1"

    out = io.StringIO()
    args = argparse.Namespace(files=[str(BROKEN / "unreachable.yaml")], strict=False)
    assert cmd_check(args, make_setup(), out) == 0
    args.strict = True
    assert cmd_check(args, make_setup(), io.StringIO()) == 1


def test_cli_schema_is_json_schema_with_plugin_actions() -> None:
    async def handler(session, params):  # pragma: no cover
        return "ok"

    setup = make_setup()
    setup.actions.register("lookup_crm", handler, {"type": "object"}, outcomes=("found",))
    out = io.StringIO()
    assert cmd_schema(argparse.Namespace(), setup, out) == 0
    schema = json.loads(out.getvalue())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    node = schema["$defs"]["node"]["properties"]
    assert {"play", "menu", "collect", "record", "http", "lookup_crm"} <= set(node)


def test_add_commands_registers_the_three_subcommands() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(), setup_factory=lambda args: make_setup())
    args = parser.parse_args(["check", str(BROKEN / "bad_pattern.yaml")])
    assert args.func(args) == 1
    args = parser.parse_args(["simulate", str(FLOWS / "voicemail.yaml"), "--dtmf", "+6s hangup"])
    assert args.func(args) == 0
