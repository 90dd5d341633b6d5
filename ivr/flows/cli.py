"""The flow subcommands of ``ivr``: ``check``, ``schema`` and ``simulate``.

:func:`add_commands` adds them to the ``ivr`` argument parser; each sets ``func`` to a function
taking the parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, TextIO

from ivr.flows.actions import collect_actions
from ivr.flows.checker import check_file
from ivr.flows.diagnostics import FlowError
from ivr.flows.registry import ActionRegistry
from ivr.flows.schema import flow_schema
from ivr.flows.store import flow_files

log = logging.getLogger(__name__)


def default_actions() -> ActionRegistry:
    """The built-in actions plus those of every plugin the engine would load."""
    try:
        from ivr.plugins import make_plugin_manager
    except ImportError as exc:  # the flow tools still work on built-in actions alone
        log.debug("plugin actions unavailable: %s", exc)
        return collect_actions()
    return collect_actions(make_plugin_manager())


def add_commands(
    subparsers: argparse._SubParsersAction,
    actions_factory: Callable[[], ActionRegistry] = default_actions,
) -> None:
    """Register ``check``, ``schema`` and ``simulate`` on ``subparsers``."""
    check = subparsers.add_parser("check", help="validate flow files (errors as file:line:col: message)")
    check.add_argument("files", nargs="+", metavar="FLOW", help="flow files or folders of *.yaml")
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.set_defaults(func=lambda args: cmd_check(args, actions_factory()))

    schema = subparsers.add_parser("schema", help="print the flow JSON Schema (plugin actions included)")
    schema.set_defaults(func=lambda args: cmd_schema(args, actions_factory()))

    simulate = subparsers.add_parser("simulate", help="run a flow on a virtual call and print the trace")
    simulate.add_argument("flow", metavar="FLOW")
    simulate.add_argument("--dtmf", default="", help='keys and times, e.g. "1 +2s 2# @10 hangup"')
    simulate.add_argument("--speech", default="", help='VAD events, e.g. "start@1.0,end@2.5"')
    simulate.add_argument("--say", default="", help='spoken text, matched against the grammar, e.g. "support@2.0"')
    simulate.add_argument("--speech-wav", default="", help='a WAV file said at a time, through the real recogniser, '
                                                           'e.g. "support.wav@2.0"')
    simulate.add_argument("--at", help="date and time the call arrives, e.g. 2026-11-26T10:00")
    simulate.add_argument("--tz", default="UTC", help="time zone of --at (default UTC)")
    simulate.add_argument("--from", dest="caller", default="sip:1001@127.0.0.1", help="caller URI")
    simulate.add_argument("--to", dest="callee", default="sip:ivr@127.0.0.1", help="called URI")
    simulate.add_argument("--transfer-result", default="ok", choices=["ok", "failed", "busy", "no_answer"],
                          help="what a transfer returns (default ok)")
    simulate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="a config value for templates ({{ config.KEY }}); repeatable")
    simulate.set_defaults(func=lambda args: cmd_simulate(args, actions_factory()))


def cmd_check(args: argparse.Namespace, actions: ActionRegistry, out: TextIO | None = None) -> int:
    """Print every diagnostic of every file; 1 when any file has an error."""
    out = out or sys.stdout
    failed = False
    for folder in [Path(name) for name in args.files if Path(name).is_dir() and not flow_files([name])]:
        out.write(f"{folder}: no *.yaml or *.yml flow files in this folder\n")
        failed = True
    for name in flow_files(args.files):
        flow, diagnostics = check_file(name, actions)
        for diagnostic in diagnostics:
            out.write(f"{diagnostic}\n")
        strict_failure = getattr(args, "strict", False) and diagnostics
        if flow is None or strict_failure:
            failed = True
        else:
            out.write(f"{name}: ok ({len(flow.nodes)} nodes)\n")
    return 1 if failed else 0


def cmd_schema(args: argparse.Namespace, actions: ActionRegistry, out: TextIO | None = None) -> int:
    """Print the flow JSON Schema."""
    (out or sys.stdout).write(json.dumps(flow_schema(actions), indent=2) + "\n")
    return 0


def cmd_simulate(args: argparse.Namespace, actions: ActionRegistry, out: TextIO | None = None) -> int:
    """Run the flow on a virtual call, print the trace line by line; 1 if it cannot run."""
    from ivr.flows.simulate import run_simulation

    out = out or sys.stdout
    config = {}
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = value
    try:
        result = run_simulation(
            args.flow, dtmf=args.dtmf, speech=args.speech, say=getattr(args, "say", ""),
            speech_wav=getattr(args, "speech_wav", ""), at=args.at, tz=args.tz, caller=args.caller,
            callee=args.callee, config=config, actions=actions, transfer_result=args.transfer_result,
            trace_out=lambda entry: out.write(f"{entry}\n"),
        )
    except FlowError as exc:
        out.write(f"{exc}\n")
        return 1
    except (ValueError, KeyError) as exc:  # bad script, date or time zone
        out.write(f"ivr simulate: {exc}\n")
        return 2
    return 0 if result.outcome != "error" else 1
