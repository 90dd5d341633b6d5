"""The flow subcommands of ``ivr``: ``check``, ``schema``, ``simulate`` and ``graph``.

:func:`add_commands` adds them to the ``ivr`` argument parser; each sets ``func`` to a function
taking the parsed arguments and returning the exit status. All of them take ``--config`` and
``--set`` as ``ivr serve`` does, and run with the same plugins, configured the same way.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import BinaryIO, Callable, TextIO

from ivr.config import ConfigError, did_you_mean
from ivr.flows.checker import check_file
from ivr.flows.diagnostics import FlowError
from ivr.flows.graph_render import FORMATS as GRAPH_FORMATS
from ivr.flows.registry import ActionRegistry
from ivr.flows.schema import flow_schema
from ivr.flows.store import flow_files
from ivr.loading import Setup, load_setup

log = logging.getLogger(__name__)

#: ``setup_factory(args) -> Setup``: what the commands run with (tests pass their own).
SetupFactory = Callable[[argparse.Namespace], Setup]


def default_setup(args: argparse.Namespace) -> Setup:
    """The configuration of ``--config`` and ``--set``, with the plugins and actions ``ivr
    serve`` would load (:func:`ivr.loading.load_setup`)."""
    return load_setup(getattr(args, "config", None), getattr(args, "set", []) or [])


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--set``, as ``ivr serve`` takes them."""
    parser.add_argument("--config", "-c", help="the YAML configuration `ivr serve` runs with "
                                               "(plugins, their sections, variables)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a configuration value on top, e.g. variables.pbx=10.0.0.5 or "
                             "plugins.acme.table=accounts.csv (value read as YAML); repeatable")


def add_simulation_arguments(parser: argparse.ArgumentParser) -> None:
    """What a simulated call does: the caller's keys and speech, the date, the peers' answers."""
    parser.add_argument("--dtmf", default="", help='keys and times, e.g. "1 +2s 2# @10 hangup"')
    parser.add_argument("--speech", default="", help='VAD events, e.g. "start@1.0,end@2.5"')
    parser.add_argument("--say", default="", help='spoken text, matched against the grammar, e.g. "support@2.0"')
    parser.add_argument("--speech-wav", default="", help='a WAV file said at a time, through the real recogniser, '
                                                         'e.g. "support.wav@2.0"')
    parser.add_argument("--at", help="date and time the call arrives, e.g. 2026-11-26T10:00")
    parser.add_argument("--tz", default="UTC", help="time zone of --at (default UTC)")
    parser.add_argument("--from", dest="caller", default="sip:1001@127.0.0.1", help="caller URI")
    parser.add_argument("--to", dest="callee", default="sip:ivr@127.0.0.1", help="called URI")
    parser.add_argument("--transfer-result", default="ok", choices=["ok", "failed", "busy", "no_answer"],
                        help="what a transfer returns (default ok)")
    parser.add_argument("--outcome", action="append", default=[], metavar="ACTION=OUTCOME",
                        help="the outcome of an action that needs a real peer, e.g. bot=failed; repeatable")


def add_commands(subparsers: argparse._SubParsersAction, setup_factory: SetupFactory = default_setup) -> None:
    """Register ``check``, ``schema``, ``simulate`` and ``graph`` on ``subparsers``."""
    check = subparsers.add_parser("check", help="validate flow files (errors as file:line:col: message)")
    check.add_argument("files", nargs="+", metavar="FLOW", help="flow files or folders of *.yaml")
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    add_config_arguments(check)
    check.set_defaults(func=lambda args: _with_setup(args, setup_factory, cmd_check, "check"))

    schema = subparsers.add_parser("schema", help="print the flow JSON Schema (plugin actions included)")
    add_config_arguments(schema)
    schema.set_defaults(func=lambda args: _with_setup(args, setup_factory, cmd_schema, "schema"))

    simulate = subparsers.add_parser("simulate", help="run a flow on a virtual call and print the trace")
    simulate.add_argument("flow", metavar="FLOW")
    add_simulation_arguments(simulate)
    add_config_arguments(simulate)
    simulate.set_defaults(func=lambda args: _with_setup(args, setup_factory, cmd_simulate, "simulate"))

    graph = subparsers.add_parser("graph", help="draw a flow (DOT, SVG, PNG, Mermaid), or a call's path through it")
    graph.add_argument("flow", metavar="FLOW")
    graph.add_argument("-o", "--output", metavar="FILE",
                       help="write FILE: .svg, .png, .dot/.gv or .mmd (Mermaid); default: DOT to stdout")
    graph.add_argument("--format", choices=sorted(set(GRAPH_FORMATS.values())),
                       help="the output format when the file name does not tell (or for stdout)")
    traced = graph.add_mutually_exclusive_group()
    traced.add_argument("--trace", action="store_true",
                        help="simulate a call (the arguments below, as ivr simulate) and draw its path")
    traced.add_argument("--trace-file", metavar="FILE",
                        help="draw the path of a recorded call: ivr simulate's output, or a CDR file of ivr serve")
    graph.add_argument("--call-id", help="with --trace-file CDR: the call to draw (default: the last line)")
    add_simulation_arguments(graph)
    add_config_arguments(graph)
    graph.set_defaults(func=lambda args: _with_setup(args, setup_factory, cmd_graph, "graph"))


def _with_setup(args: argparse.Namespace, setup_factory: SetupFactory,
                command: Callable[[argparse.Namespace, Setup], int], name: str) -> int:
    """Load the setup; a configuration that cannot be read stops the command (status 2), the
    setup's problems are printed (``check`` fails on them, the others go on)."""
    try:
        setup = setup_factory(args)
    except ConfigError as exc:
        print(f"ivr {name}: {exc}", file=sys.stderr)
        return 2
    for line in setup.problems:
        print(f"ivr {name}: {line}", file=sys.stderr)
    status = command(args, setup)
    return max(status, 1) if name == "check" and setup.problems else status


def cmd_check(args: argparse.Namespace, setup: Setup, out: TextIO | None = None) -> int:
    """Print every diagnostic of every file; 1 when any file has an error."""
    out = out or sys.stdout
    failed = False
    for folder in [Path(name) for name in args.files if Path(name).is_dir() and not flow_files([name])]:
        out.write(f"{folder}: no *.yaml or *.yml flow files in this folder\n")
        failed = True
    for name in flow_files(args.files):
        flow, diagnostics = check_file(name, setup.actions)
        for diagnostic in diagnostics:
            out.write(f"{diagnostic}\n")
        strict_failure = getattr(args, "strict", False) and diagnostics
        if flow is None or strict_failure:
            failed = True
        else:
            out.write(f"{name}: ok ({len(flow.nodes)} nodes)\n")
    return 1 if failed else 0


def cmd_schema(args: argparse.Namespace, setup: Setup, out: TextIO | None = None) -> int:
    """Print the flow JSON Schema."""
    (out or sys.stdout).write(json.dumps(flow_schema(setup.actions), indent=2) + "\n")
    return 0


def parse_outcomes(items: list[str], actions: ActionRegistry) -> dict[str, str]:
    """``["bot=failed"]`` -> ``{"bot": "failed"}``; ValueError for an item without ``=`` or
    naming no action."""
    outcomes = {}
    for item in items:
        action, sep, outcome = (part.strip() for part in item.partition("="))
        if not sep or not action or not outcome:
            raise ValueError(f"--outcome {item!r}: expected ACTION=OUTCOME, e.g. bot=failed")
        if action not in actions:
            raise ValueError(f"--outcome {item!r}: no action named {action!r}{did_you_mean(action, actions.names())}")
        outcomes[action] = outcome
    return outcomes


def cmd_simulate(args: argparse.Namespace, setup: Setup, out: TextIO | None = None) -> int:
    """Run the flow on a virtual call, print the trace line by line; 1 if the flow ended in
    ``error`` or ran into the time limit, 2 for bad arguments."""
    from ivr.flows.simulate import run_simulation

    out = out or sys.stdout
    try:
        result = run_simulation(
            args.flow, dtmf=args.dtmf, speech=args.speech, say=args.say, speech_wav=args.speech_wav,
            at=args.at, tz=args.tz, caller=args.caller, callee=args.callee, config=setup.flow_config(),
            actions=setup.actions, plugins=setup.plugins, transfer_result=args.transfer_result,
            outcomes=parse_outcomes(args.outcome, setup.actions), trace_out=lambda entry: out.write(f"{entry}\n"),
        )
    except FlowError as exc:
        out.write(f"{exc}\n")
        return 1
    except (ValueError, KeyError) as exc:  # bad script, date or time zone
        out.write(f"ivr simulate: {exc}\n")
        return 2
    if result.outcome == "time_limit":
        out.write("ivr simulate: the flow was still running at the time limit; stopped\n")
        return 1
    return 0 if result.outcome != "error" else 1


def cmd_graph(args: argparse.Namespace, setup: Setup, out: BinaryIO | None = None,
              err: TextIO | None = None) -> int:
    """Draw the flow (with ``--trace`` / ``--trace-file``, a call's path over it) to
    ``args.output`` or ``out``. A flow with errors prints its diagnostics to ``err`` and writes
    nothing (exit 1); so does a picture Graphviz cannot draw. Bad scripts or trace files: 2."""
    from ivr.flows.graph import build_graph, mark_path, path_of_trace
    from ivr.flows.graph_render import RenderError, render
    from ivr.flows.trace_file import parse_trace_text, read_trace_file

    err = err or sys.stderr
    output = Path(args.output) if args.output else None
    fmt = args.format or (GRAPH_FORMATS.get(output.suffix.lower()) if output else "dot")
    if fmt is None:
        err.write(f"ivr graph: cannot tell the format of {output} (use .svg, .png, .dot, .gv, .mmd or --format)\n")
        return 2
    flow, diagnostics = check_file(args.flow, setup.actions)
    for diagnostic in diagnostics:
        err.write(f"{diagnostic}\n")
    if flow is None:
        return 1
    graph = build_graph(flow, setup.actions)
    try:
        if args.trace:
            trace_text = io.StringIO()
            if cmd_simulate(args, setup, out=trace_text) == 2:
                err.write(trace_text.getvalue())
                return 2
            entries = parse_trace_text(trace_text.getvalue())
        elif args.trace_file:
            entries = read_trace_file(args.trace_file, args.call_id)
        if args.trace or args.trace_file:
            graph = mark_path(graph, *path_of_trace(graph, entries))
        data = render(graph, fmt)
    except (OSError, ValueError) as exc:
        err.write(f"ivr graph: {exc}\n")
        return 2
    except RenderError as exc:
        err.write(f"ivr graph: {exc}\n")
        return 1
    if output is None:
        (out or sys.stdout.buffer).write(data)
        return 0
    # Written whole or not at all: a half-drawn picture never replaces a good one.
    partial = output.with_name(f".{output.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, output)
    return 0
