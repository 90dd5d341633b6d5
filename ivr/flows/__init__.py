"""The flow language: load and check YAML call flows, run them on calls, simulate them.

Engine entry points: :func:`load_flow`, :class:`FlowStore`, :func:`collect_actions` (the
:class:`ActionRegistry`) and
:func:`run_flow`. docs/flows.md is the language reference.
"""

from ivr.flows.actions import collect_actions
from ivr.flows.checker import check_file, load_flow
from ivr.flows.diagnostics import Diagnostic, FlowError, FlowRuntimeError
from ivr.flows.executor import run_flow
from ivr.flows.model import Flow, Node, Schedule
from ivr.flows.registry import ActionRegistry, ActionSpec
from ivr.flows.schema import flow_schema
from ivr.flows.session import FlowSession, TraceEntry
from ivr.flows.simulate import run_simulation, simulate
from ivr.flows.store import FlowStore

__all__ = [
    "ActionRegistry",
    "ActionSpec",
    "Diagnostic",
    "Flow",
    "FlowError",
    "FlowRuntimeError",
    "FlowSession",
    "FlowStore",
    "Node",
    "Schedule",
    "TraceEntry",
    "check_file",
    "collect_actions",
    "flow_schema",
    "load_flow",
    "run_flow",
    "run_simulation",
    "simulate",
]
