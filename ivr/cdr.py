"""Call detail records: one JSON line per finished call in the file ``cdr:`` names."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO

from ivr.call import CallContext
from ivr.flows.trace_file import MAX_PATH_STEPS

__all__ = ["CdrWriter", "call_outcome"]


def call_outcome(call: CallContext, reason: str | None) -> str:
    """How a call ended, for CDRs and metrics: ``rejected_<status>`` for a call refused with a SIP
    status, else the end ``reason``."""
    return f"rejected_{call.reject_status}" if call.reject_status else str(reason)


class CdrWriter:
    """Engine observer: at ``finished``, one JSON line describing the call (line-buffered, so a
    crash loses at most the line being written)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = path.open("a", encoding="utf-8", buffering=1)

    def __call__(self, event: str, call: CallContext, details: dict[str, Any]) -> None:
        if event != "finished" or self._file is None:
            return
        record = {
            "call_id": call.id, "from": call.from_uri, "to": call.to_uri, "flow": call.flow,
            "start": _iso(call.start_time), "answer": _iso(call.answer_time),
            "end": _iso(call.end_time), "outcome": call_outcome(call, call.end_reason),
            "status": call.reject_status,
            "flow_outcome": call.data.get("engine", {}).get("flow_outcome"),
            "digits": "".join(call.digits), "recordings": list(call.recordings),
            "transfers": list(call.transfers),
            "error": call.failed or "; ".join(call.errors) or None,
            # [seconds, node, event, detail] for each enter/outcome/sub/return/error/end of the
            # flow (ivr.flows.trace_file; `ivr graph FLOW --trace-file CDR` draws it)
            "path": call.data.get("flow_path", []),
        }
        if len(record["path"]) > MAX_PATH_STEPS:
            record["path_truncated"] = True
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z"
