"""A call's trace from a file: ``ivr simulate``'s output, or the ``path`` of a CDR line.

``ivr serve`` keeps the steps of each call's flow (:func:`path_recorder`: the trace entries
``enter``, ``outcome``, ``sub``, ``return``, ``error`` and ``end``, at most
:data:`MAX_PATH_STEPS`) and its CDR line carries them as ``"path": [[seconds, node, event,
detail], ...]``; ``ivr graph --trace-file`` draws them over the flow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ivr.flows.session import TraceEntry, TraceSink

__all__ = ["MAX_PATH_STEPS", "PATH_EVENTS", "parse_trace_text", "path_recorder", "read_trace_file"]

#: The trace events a CDR's path keeps: enough to follow the call through the flow.
PATH_EVENTS = frozenset({"enter", "outcome", "sub", "return", "error", "end"})
#: A call that loops (a menu left to repeat for an hour) keeps its first steps only; the CDR
#: says ``path_truncated``.
MAX_PATH_STEPS = 1000


def path_recorder(steps: list[list[Any]]) -> TraceSink:
    """A trace sink appending ``[seconds, node, event, detail]`` to ``steps`` for each entry of
    :data:`PATH_EVENTS`, up to :data:`MAX_PATH_STEPS` (the ``end`` entry always)."""

    def record(entry: TraceEntry) -> None:
        if entry.event in PATH_EVENTS and (len(steps) < MAX_PATH_STEPS or entry.event == "end"):
            steps.append([entry.time, entry.node, entry.event, entry.detail])

    return record


def parse_trace_text(text: str) -> list[TraceEntry]:
    """The entries of ``ivr simulate``'s output (``seconds node event detail`` a line).

    Raises ``ValueError`` naming the first line that is not a trace line.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(None, 3)
        try:
            seconds = float(parts[0])
            if len(parts) < 3:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"line {number} is not a trace line (seconds node event detail): {line.strip()!r}") from None
        entries.append(TraceEntry(seconds, parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return entries


def _cdr_entries(records: list[dict[str, Any]], call_id: str | None, name: str) -> list[TraceEntry]:
    if call_id is not None:
        records = [record for record in records if record.get("call_id") == call_id]
        if not records:
            raise ValueError(f"{name}: no CDR line for call {call_id!r}")
    if not records:
        raise ValueError(f"{name}: no CDR lines")
    record = records[-1]
    if not isinstance(record.get("path"), list):
        raise ValueError(f"{name}: the CDR line of call {record.get('call_id')!r} has no path "
                         "(written before ivr serve recorded flow paths?)")
    return [TraceEntry(float(t), str(node), str(event), str(detail)) for t, node, event, detail in record["path"]]


def read_trace_file(path: str | Path, call_id: str | None = None) -> list[TraceEntry]:
    """The trace in ``path``: a CDR file (JSON lines; the call ``call_id``, else the last one)
    or the text ``ivr simulate`` prints. ``ValueError`` when it is neither."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a CDR file: {exc}") from None
        return _cdr_entries(records, call_id, str(path))
    if call_id is not None:
        raise ValueError(f"{path}: --call-id needs a CDR file (this is a trace)")
    return parse_trace_text(text)
