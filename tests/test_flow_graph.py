"""`ivr graph`: the drawn flow (DOT parsed by Graphviz itself, SVG by xml), marks, a call's path,
Mermaid, plugin actions, refusals, and the docs' pictures kept fresh."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import graphviz
import pluggy

from ivr import hookspecs
from ivr.cdr import CdrWriter
from ivr.cli import build_parser
from ivr.flows import collect_actions, run_simulation
from ivr.flows.cli import cmd_graph, cmd_simulate
from ivr.flows.trace_file import (
    MAX_PATH_STEPS,
    parse_trace_text,
    path_recorder,
    read_trace_file,
)
from ivr.hookspecs import hookimpl
from ivr.loading import Setup, load_setup

ROOT = Path(__file__).parent.parent
FLOWS = ROOT / "flows"
BROKEN = Path(__file__).parent / "flows"
SVG = "{http://www.w3.org/2000/svg}"
DIAL_204 = ["--at", "2026-11-26T10:00", "--tz", "Europe/Paris", "--dtmf", "+3s 9 +1s 204"]


@lru_cache(maxsize=1)
def default_setup() -> Setup:
    """What ``ivr graph`` runs with when given no --config: the plugins ``ivr serve`` loads."""
    return load_setup()


def graph(argv: list[str], actions=None) -> tuple[int, bytes, str]:
    """Run ``ivr graph ARGV``; (exit status, stdout bytes, stderr text)."""
    args = build_parser().parse_args(["graph", *argv])
    out, err = io.BytesIO(), io.StringIO()
    setup = replace(default_setup(), actions=actions) if actions is not None else default_setup()
    status = cmd_graph(args, setup, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def parsed(dot_source: bytes | str) -> tuple[dict[str, dict], dict[tuple[str, str], list[dict]], list[dict]]:
    """The DOT as Graphviz reads it: nodes by name, edges by (tail, head), clusters."""
    layout = json.loads(graphviz.Source(dot_source if isinstance(dot_source, str) else dot_source.decode())
                        .pipe(format="json0"))
    objects = layout["objects"]
    nodes = {o["name"]: o for o in objects if "nodes" not in o}
    clusters = [o for o in objects if "nodes" in o]
    names = {o["_gvid"]: o["name"] for o in objects}
    edges: dict[tuple[str, str], list[dict]] = {}
    for edge in layout.get("edges", []):
        edges.setdefault((names[edge["tail"]], names[edge["head"]]), []).append(edge)
    return nodes, edges, clusters


def labels(edges: dict, tail: str, head: str) -> list[str]:
    return [e.get("label", "") for e in edges[(tail, head)]]


def classes(attrs: dict) -> set[str]:
    return set(attrs.get("class", "").split())


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the example flows ---------------------------------------------------------------------------


def test_attendant_every_node_a_box_every_outcome_a_labelled_edge() -> None:
    status, dot, err = graph([str(FLOWS / "attendant.yaml")])
    assert status == 0 and err == ""
    nodes, edges, clusters = parsed(dot)
    own = {"check_hours", "office_schedule", "welcome", "main_menu", "sales", "support", "operator",
           "dial_extension", "extension_target", "transferring", "transfer", "unavailable", "closed", "holiday",
           "voicemail", "sorry", "goodbye", "end"}
    sub = {f"voicemail.yaml/{n}" for n in ("greeting", "record", "saved", "saved_return", "no_message",
                                           "no_message_return")}
    assert set(nodes) == own | sub | {"@start", "@error"}
    # labels: the node's name, its action and its key setting
    assert "<B>welcome</B>" in nodes["welcome"]["label"] and "play welcome.wav" in nodes["welcome"]["label"]
    assert "menu main_menu.wav" in nodes["main_menu"]["label"]
    assert "collect extension.wav" in nodes["dial_extension"]["label"] and "3 digits" in nodes["dial_extension"]["label"]
    assert "hours office" in nodes["office_schedule"]["label"]
    # menu options, on:, the switch's cases and its default, next, as the executor routes them
    assert labels(edges, "main_menu", "sales") == ["1"]
    assert labels(edges, "main_menu", "dial_extension") == ["9"]
    assert labels(edges, "main_menu", "operator") == ["0, exhausted"]
    assert labels(edges, "dial_extension", "main_menu") == ["invalid, timeout"]  # routed: no repeat
    assert labels(edges, "check_hours", "welcome") == ["open"]
    assert labels(edges, "check_hours", "office_schedule") == ["default"]
    assert labels(edges, "office_schedule", "holiday") == ["holiday"]
    assert labels(edges, "transfer", "unavailable") == ["next"]  # failed, busy, no_answer
    assert labels(edges, "@error", "sorry") == ["on_error"]
    assert not any(tail == "main_menu" and "invalid" in e.get("label", "")
                   for (tail, _), found in edges.items() for e in found)  # unrouted: the menu repeats
    # the start and the hang-up are distinct; the sub-flow is a cluster entered by a sub edge
    assert "start" in classes(nodes["check_hours"]) and nodes["check_hours"]["penwidth"] == "3"
    assert labels(edges, "@start", "check_hours") == [""]
    assert "hangup" in classes(nodes["end"]) and nodes["end"]["shape"] == "octagon"
    assert "return" in classes(nodes["voicemail.yaml/saved_return"])
    [cluster] = clusters
    assert cluster["name"] == "cluster_voicemail.yaml" and "sub-flow voicemail" in cluster["label"]
    assert {nodes_by_id for nodes_by_id in cluster["nodes"]} == {nodes[n]["_gvid"] for n in sub}
    [enter] = edges[("voicemail", "voicemail.yaml/greeting")]
    assert enter["label"] == "sub" and "sub" in classes(enter)
    assert labels(edges, "voicemail.yaml/record", "voicemail.yaml/no_message") == ["no_audio"]
    assert not any("dangling" in classes(n) or "unreachable" in classes(n) for n in nodes.values())


def test_svg_has_the_same_nodes_and_marks(tmp_path: Path) -> None:
    out = tmp_path / "attendant.svg"
    status, stdout, _ = graph([str(FLOWS / "attendant.yaml"), "-o", str(out)])
    assert status == 0 and stdout == b""
    svg = ET.parse(out).getroot()
    groups = {g.findtext(f"{SVG}title"): g for g in svg.iter(f"{SVG}g") if g.get("class", "").startswith(("node", "edge"))}
    assert "node switch start" == groups["check_hours"].get("class")
    assert "hangup" in groups["end"].get("class")
    texts = [t.text for t in groups["main_menu"].iter(f"{SVG}text")]
    assert texts == ["main_menu", "menu main_menu.wav"]
    assert [t.text for t in groups["main_menu->operator"].iter(f"{SVG}text")] == ["0, exhausted"]
    assert "sub" in groups["voicemail->voicemail.yaml/greeting"].get("class")


def test_png_is_a_picture(tmp_path: Path) -> None:
    out = tmp_path / "attendant.png"
    assert graph([str(FLOWS / "attendant.yaml"), "-o", str(out)])[0] == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    assert 600 < width < 1600  # legible at docs width: not a mile-wide strip


def test_plugin_action_from_a_bundled_plugin_shows_its_outcomes() -> None:
    status, dot, _ = graph([str(FLOWS / "bot.yaml")])
    assert status == 0
    nodes, edges, _ = parsed(dot)
    assert "<B>assistant</B><BR/>" in nodes["assistant"]["label"] and ">bot url {{ config" in nodes["assistant"]["label"]
    assert labels(edges, "assistant", "after_bot") == ["done"]
    assert labels(edges, "assistant", "operator") == ["failed, key"]
    assert labels(edges, "assistant", "goodbye") == ["max_duration"]
    assert labels(edges, "check_hours", "voicemail") == ["closed, holiday"]


class CrmPlugin:
    """A plugin adding an action with declared outcomes, as a third party would."""

    @hookimpl
    def ivr_register_actions(self, register):
        async def crm_lookup(session, params):  # pragma: no cover - never run here
            return "found"

        register("crm_lookup", crm_lookup, schema={"type": "object"}, outcomes=("found", "missing", "slow"))


def test_plugin_action_registered_through_pluggy_shows_its_registered_outcomes(tmp_path: Path) -> None:
    pm = pluggy.PluginManager("ivr")
    pm.add_hookspecs(hookspecs)
    pm.register(CrmPlugin())
    actions = collect_actions(pm)
    flow = write(tmp_path, "crm.yaml", "start: look\nnodes:\n  look:\n    crm_lookup: {number: 42}\n"
                                       "    on: {found: vip, missing: bye}\n    next: bye\n"
                                       "  vip: {play: {say: Hello}, next: bye}\n  bye: {hangup: }\n")
    status, dot, err = graph([str(flow)], actions)
    assert status == 0, err
    nodes, edges, _ = parsed(dot)
    assert "crm_lookup number 42" in nodes["look"]["label"]
    assert labels(edges, "look", "vip") == ["found"]
    assert sorted(labels(edges, "look", "bye")) == ["missing", "slow (next)"]
    # without the plugin the flow does not check: nothing is drawn
    status, dot, err = graph([str(flow)], collect_actions())
    assert status == 1 and dot == b"" and "unknown action or node key 'crm_lookup'" in err


# -- marks: unreachable, dangling, default, on_hangup, sub: node ---------------------------------


def test_unreachable_node_is_marked_from_the_checkers_analysis() -> None:
    status, dot, err = graph([str(BROKEN / "unreachable.yaml")])
    assert status == 0
    assert "unreachable.yaml:6:3: warning: node 'orphan' is unreachable" in err
    nodes, _, _ = parsed(dot)
    assert "unreachable" in classes(nodes["orphan"]) and "dashed" in nodes["orphan"]["style"]
    assert "<I>unreachable</I>" in nodes["orphan"]["label"]
    assert not any("unreachable" in classes(n) for name, n in nodes.items() if name != "orphan")


def test_outcome_that_goes_nowhere_is_marked(tmp_path: Path) -> None:
    flow = write(tmp_path, "dangling.yaml",
                 "start: ask\nnodes:\n"
                 "  ask:\n    collect: {prompt: {say: PIN}, max_digits: 4}\n    on: {ok: thanks}\n"
                 "  thanks: {play: {say: Thanks}, next: bye}\n  bye: {hangup: }\n")
    status, dot, _ = graph([str(flow)])
    assert status == 0
    nodes, edges, _ = parsed(dot)
    [(tail, head)] = [key for key in edges if key[1].endswith("@end")]
    assert (tail, head) == ("ask", "ask@end")
    [edge] = edges[(tail, head)]
    assert edge["label"] == "invalid, timeout" and "dangling" in classes(edge)
    assert "dangling" in classes(nodes["ask@end"]) and nodes["ask@end"]["label"] == "flow ends"


def test_default_on_hangup_and_sub_node_routes(tmp_path: Path) -> None:
    flow = write(tmp_path, "routes.yaml",
                 "start: menu\ndefault: bye\non_hangup: report\nnodes:\n"
                 "  menu:\n    menu: {prompt: {say: Menu}, options: {'1': help}}\n"
                 "  help: {sub: faq, on: {done: menu}}\n"
                 "  faq: {play: {say: FAQ}, next: faq_end}\n  faq_end: {return: done}\n"
                 "  report: {set: {reported: 'yes'}}\n  bye: {hangup: }\n")
    status, dot, err = graph([str(flow)])
    assert status == 0, err
    nodes, edges, _ = parsed(dot)
    [exhausted] = edges[("menu", "bye")]
    assert exhausted["label"] == "exhausted (default)" and "dashed" in exhausted["style"]
    assert labels(edges, "@hangup", "report") == ["on_hangup"] and nodes["@hangup"]["label"] == "caller hangs up"
    assert labels(edges, "help", "faq") == ["sub"]
    assert labels(edges, "help", "menu") == ["done"]
    assert labels(edges, "help", "bye") == ["default"]  # any other outcome of the sub-routine
    assert labels(edges, "report", "bye") == ["default"]
    assert "return" in classes(nodes["faq_end"])


# -- refusals --------------------------------------------------------------------------------------


def test_broken_flows_print_diagnostics_and_write_nothing(tmp_path: Path) -> None:
    for name, diagnostic in (("syntax_error.yaml", ":6:3: YAML"),
                             ("missing_target.yaml", ":7:34: unknown node 'suport'")):
        out = tmp_path / "broken.svg"
        status, stdout, err = graph([str(BROKEN / name), "-o", str(out)])
        assert status == 1 and stdout == b""
        assert f"{BROKEN / name}{diagnostic}" in err
        assert list(tmp_path.iterdir()) == []
    keep = write(tmp_path, "keep.svg", "<svg>the previous picture</svg>")
    assert graph([str(BROKEN / "missing_target.yaml"), "-o", str(keep)])[0] == 1
    assert keep.read_text() == "<svg>the previous picture</svg>"  # not replaced by a half picture
    status, _, err = graph([str(FLOWS / "attendant.yaml"), "-o", str(tmp_path / "x.jpg")])
    assert status == 2 and "cannot tell the format" in err and not (tmp_path / "x.jpg").exists()


def test_bad_trace_inputs_are_refused(tmp_path: Path) -> None:
    status, _, err = graph([str(FLOWS / "attendant.yaml"), "--trace", "--dtmf", "1 x"])
    assert status == 2 and "bad DTMF script token" in err
    junk = write(tmp_path, "junk.txt", "this is not a trace\n")
    status, _, err = graph([str(FLOWS / "attendant.yaml"), "--trace-file", str(junk)])
    assert status == 2 and "line 1 is not a trace line" in err
    other = write(tmp_path, "other.txt", "   0.000  nowhere          enter     play\n")
    status, _, err = graph([str(FLOWS / "attendant.yaml"), "--trace-file", str(other)])
    assert status == 2 and "nodes this flow does not have: nowhere" in err


# -- a call's path ----------------------------------------------------------------------------------


def path_of(dot: bytes) -> list[tuple[int, str, str, float]]:
    """(step, tail, head, seconds) of every edge label ``#step seconds``, in step order."""
    _, edges, _ = parsed(dot)
    steps = []
    for (tail, head), found in edges.items():
        for edge in found:
            for number, seconds in re.findall(r"#(\d+) ([\d.]+)s", edge.get("label", "")):
                assert "path" in classes(edge) and edge["penwidth"] == "3"
                steps.append((int(number), tail, head, float(seconds)))
    return sorted(steps)


def test_trace_draws_the_simulated_path_in_order_with_times() -> None:
    status, dot, err = graph([str(FLOWS / "attendant.yaml"), "--trace", *DIAL_204])
    assert status == 0, err
    assert path_of(dot) == [
        (1, "@start", "check_hours", 0.0), (2, "check_hours", "office_schedule", 0.0),
        (3, "office_schedule", "welcome", 0.0), (4, "welcome", "main_menu", 2.4),
        (5, "main_menu", "dial_extension", 3.0), (6, "dial_extension", "extension_target", 4.0),
        (7, "extension_target", "transferring", 4.0), (8, "transferring", "transfer", 6.5),
    ]
    nodes, _, _ = parsed(dot)
    visited = {name for name, attrs in nodes.items() if "visited" in classes(attrs)}
    assert visited == {"@start", "check_hours", "office_schedule", "welcome", "main_menu", "dial_extension",
                       "extension_target", "transferring", "transfer"}
    assert nodes["transfer"]["fillcolor"] == "#fff3b0" and ">#8<" in nodes["transfer"]["label"]
    assert "call: transferred at 6.5s" in parsed_title(dot)


def parsed_title(dot: bytes) -> str:
    return json.loads(graphviz.Source(dot.decode()).pipe(format="json0"))["label"]


def test_trace_through_a_sub_flow_and_back() -> None:
    status, dot, err = graph([str(FLOWS / "attendant.yaml"), "--trace", "--at", "2026-11-28T10:00",
                              "--tz", "Europe/Paris", "--speech", "start@10,end@15"])
    assert status == 0, err
    moves = [(tail, head) for _, tail, head, _ in path_of(dot)]
    assert moves[3:] == [
        ("closed", "voicemail"), ("voicemail", "voicemail.yaml/greeting"),
        ("voicemail.yaml/greeting", "voicemail.yaml/record"), ("voicemail.yaml/record", "voicemail.yaml/saved"),
        ("voicemail.yaml/saved", "voicemail.yaml/saved_return"), ("voicemail.yaml/saved_return", "voicemail"),
        ("voicemail", "goodbye"), ("goodbye", "end"),
    ]
    _, edges, _ = parsed(dot)
    [back] = edges[("voicemail.yaml/saved_return", "voicemail")]  # no route: an edge of the trace's own
    assert "trace" in classes(back) and back["label"].startswith("returns<BR/>")
    [onwards] = edges[("voicemail", "goodbye")]
    assert onwards["label"].startswith("next<BR/>")  # the sub node's outcome took its own edge


def test_a_menu_loop_numbers_every_pass(tmp_path: Path) -> None:
    status, dot, _ = graph([str(FLOWS / "attendant.yaml"), "--trace", "--at", "2026-11-26T10:00",
                            "--tz", "Europe/Paris", "--dtmf", "+3s 9 @25 9 +1s 204"])
    assert status == 0
    steps = path_of(dot)
    passes = [number for number, tail, head, _ in steps if (tail, head) == ("main_menu", "dial_extension")]
    assert len(passes) == 2 and ("dial_extension", "main_menu") in [(t, h) for _, t, h, _ in steps]


def test_trace_file_from_simulate_output_draws_the_same_path(tmp_path: Path) -> None:
    args = build_parser().parse_args(["simulate", str(FLOWS / "attendant.yaml"), *DIAL_204])
    text = io.StringIO()
    assert cmd_simulate(args, default_setup(), out=text) == 0
    trace = write(tmp_path, "call.txt", text.getvalue())
    traced = graph([str(FLOWS / "attendant.yaml"), "--trace", *DIAL_204])
    from_file = graph([str(FLOWS / "attendant.yaml"), "--trace-file", str(trace)])
    assert from_file[0] == 0 and from_file[1] == traced[1]
    assert parse_trace_text(text.getvalue())[0].event == "enter"


def test_trace_file_from_a_cdr_line(tmp_path: Path) -> None:
    """The path ivr serve records (path_recorder, as FlowStoreRunner uses it) goes into the CDR
    line, and --trace-file draws that call."""
    from ivr.call import CallContext

    steps: list = []
    result = run_simulation(FLOWS / "attendant.yaml", dtmf="+3s 9 +1s 204", at="2026-11-26T10:00",
                            tz="Europe/Paris", trace_out=path_recorder(steps))
    assert {step[2] for step in steps} <= {"enter", "outcome", "sub", "return", "error", "end"}
    cdr_path = tmp_path / "cdr.jsonl"
    writer = CdrWriter(cdr_path)
    for call_id, path in (("first", [[0.0, "check_hours", "enter", "switch"]]), ("second", steps)):
        call = CallContext(call_id, None, from_uri="sip:1001@127.0.0.1", to_uri="sip:ivr@127.0.0.1")
        call.data["flow_path"] = path
        writer("finished", call, {})
    writer.close()
    records = [json.loads(line) for line in cdr_path.read_text().splitlines()]
    assert records[1]["path"] == steps and "path_truncated" not in records[1]
    assert [e.node for e in read_trace_file(cdr_path, "first")] == ["check_hours"]
    status, dot, err = graph([str(FLOWS / "attendant.yaml"), "--trace-file", str(cdr_path)])  # the last call
    assert status == 0, err
    assert path_of(dot) == path_of(graph([str(FLOWS / "attendant.yaml"), "--trace", *DIAL_204])[1])
    assert result.outcome == "transferred"
    status, _, err = graph([str(FLOWS / "attendant.yaml"), "--trace-file", str(cdr_path), "--call-id", "nope"])
    assert status == 2 and "no CDR line for call 'nope'" in err


def test_path_recorder_keeps_a_bounded_path() -> None:
    from ivr.flows import TraceEntry

    steps: list = []
    record = path_recorder(steps)
    for index in range(MAX_PATH_STEPS + 50):
        record(TraceEntry(float(index), "menu", "enter", "menu"))
        record(TraceEntry(float(index), "menu", "dtmf", "1"))  # not a path event
    record(TraceEntry(9999.0, "-", "end", "hangup"))
    assert len(steps) == MAX_PATH_STEPS + 1 and steps[-1] == [9999.0, "-", "end", "hangup"]


# -- Mermaid ---------------------------------------------------------------------------------------


def test_mermaid_output(tmp_path: Path) -> None:
    out = tmp_path / "attendant.mmd"
    assert graph([str(FLOWS / "attendant.yaml"), "-o", str(out)])[0] == 0
    text = out.read_text()
    assert text.startswith("flowchart TD\n")
    ids = {name: ident for ident, name in re.findall(r'^\s+(n\d+_\w+?)(?:\[|\{\{|>)"<b>(\w+)</b>', text, re.M)}
    assert f'{ids["main_menu"]} -->|"1"| {ids["sales"]}' in text
    assert f'{ids["main_menu"]} -->|"0, exhausted"| {ids["operator"]}' in text
    assert f'{ids["check_hours"]} -->|"default"| {ids["office_schedule"]}' in text
    assert 'subgraph c_voicemail_yaml["sub-flow voicemail (voicemail.yaml)"]' in text
    assert re.search(rf"class {ids['check_hours']} start", text)
    assert re.search(rf"class {ids['end']} hangup", text)
    assert f'{ids["end"]}{{{{"<b>end</b><br/>hangup"}}}}' in text
    assert f'{ids["saved_return"]}>"<b>saved_return</b><br/>return saved"]' in text
    assert ids["end"] != "end" and not re.search(r"^\s+end[\[({]", text, re.M)  # `end` closes subgraphs only

    status, traced, _ = graph([str(FLOWS / "attendant.yaml"), "--trace", "--format", "mmd", *DIAL_204])
    traced_text = traced.decode()
    assert status == 0 and f'{ids["main_menu"]} ==>|"9<br/>#5 3.0s"| {ids["dial_extension"]}' in traced_text
    assert re.search(r"linkStyle \d+ stroke:#d62728,stroke-width:3px", traced_text)
    assert re.search(rf"class [\w,]*{ids['transfer']}[\w,]* visited", traced_text)


# -- the docs ----------------------------------------------------------------------------------------


def test_mermaid_text_is_escaped(tmp_path: Path) -> None:
    flow = write(tmp_path, "quotes.yaml", "start: a\nnodes:\n  a: {play: {say: '# \"hi\"'}, next: b}\n"
                                          "  b: {hangup: }\n")
    status, text, err = graph([str(flow), "--format", "mmd"])
    assert status == 0, err
    assert '<br/>play #quot;#35; #quot;hi#quot;#quot;"]' in text.decode()


def test_docs_pictures_are_fresh(tmp_path: Path) -> None:
    """`make graphs` output checked in (docs/img/*.svg, the block in docs/flows.md) is current."""
    check = subprocess.run([sys.executable, str(ROOT / "docs" / "make_graphs.py"), "--check"],
                           capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 0, check.stdout + check.stderr
    # and the check does catch a stale picture: the same docs with a flow changed under them
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    attendant = tmp_path / "flows" / "attendant.yaml"
    attendant.write_text(attendant.read_text().replace('"9": dial_extension, ', ""))
    stale = subprocess.run([sys.executable, str(ROOT / "docs" / "make_graphs.py"), "--check", "--root",
                            str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert stale.returncode == 1
    assert "docs/flows.md" in stale.stdout and "docs/img/attendant.svg" in stale.stdout
    assert "voicebot.svg" not in stale.stdout
    fixed = subprocess.run([sys.executable, str(ROOT / "docs" / "make_graphs.py"), "--root", str(tmp_path)],
                           capture_output=True, text=True, cwd=ROOT)
    assert fixed.returncode == 0
    assert subprocess.run([sys.executable, str(ROOT / "docs" / "make_graphs.py"), "--check", "--root",
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT).returncode == 0


def test_graph_shares_simulates_arguments() -> None:
    simulate = {a.dest for a in _subparser("simulate")._actions}
    graph_args = {a.dest for a in _subparser("graph")._actions}
    assert simulate <= graph_args
    assert {"output", "format", "trace", "trace_file", "call_id"} <= graph_args


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def test_trace_of_errors_follows_on_error_and_a_nodes_own_error_route(tmp_path: Path) -> None:
    flow = write(tmp_path, "errors.yaml",
                 "start: a\non_error: sorry\nnodes:\n"
                 "  a: {set: {x: '{{ vars.missing }}'}, on: {error: b}, next: bye}\n"
                 "  b: {set: {y: '{{ vars.missing }}'}, next: bye}\n"
                 "  sorry: {play: {say: Sorry}, next: bye}\n  bye: {hangup: }\n")
    status, dot, err = graph([str(flow), "--trace"])
    assert status == 0, err
    assert [(tail, head) for _, tail, head, _ in path_of(dot)] == [
        ("@start", "a"), ("a", "b"), ("b", "sorry"), ("sorry", "bye")]
    _, edges, _ = parsed(dot)
    [own] = edges[("a", "b")]
    assert "error" in classes(own) and own["label"].startswith("error<BR/>")  # the node's on: {error: b}
    [jump] = edges[("b", "sorry")]  # on_error: no edge of the flow goes there, the trace draws one
    assert "trace" in classes(jump) and jump["label"].startswith("error<BR/>")
    assert labels(edges, "@error", "sorry") == ["on_error"]
