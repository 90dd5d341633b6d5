"""A test plugin for the end-to-end tests: writes what the engine reports about each call
(start, speech, DTMF, prompts, end with the flow's variables) to a JSON-lines file.

``ivr serve`` loads it with ``plugins: {load: [e2e_events], e2e_events: {path: events.jsonl}}``
once this file sits in the server's working folder (``python -m ivr`` puts that folder on
``sys.path``). Times are ``time.monotonic()`` of the server process, the clock of its media ticks.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ivr import hookimpl

log = logging.getLogger(__name__)

_path: Path | None = None


def _write(event: str, call: Any, **fields: Any) -> None:
    if _path is None:
        return
    entry = {"event": event, "call_id": call.id, "time": time.monotonic(), **fields}
    with _path.open("a", encoding="utf-8") as out:  # one short line per event: no interleaving
        out.write(json.dumps(entry, default=str) + "\n")


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    global _path
    section = (config.get("plugins") or {}).get("e2e_events") or {}
    _path = Path(section["path"]).resolve() if section.get("path") else None
    log.info("e2e events to %s", _path)


@hookimpl
def ivr_call_started(call: Any) -> None:
    _write("started", call, flow=call.flow)


@hookimpl
def ivr_speech(call: Any, event: str) -> None:
    vad = call.data.get("vad", {})
    _write("speech", call, what=event, speech_start=vad.get("speech_start"),
           last_speech_end=vad.get("last_speech_end"))


@hookimpl
def ivr_dtmf(call: Any, digit: str, source: str) -> None:
    _write("dtmf", call, digit=digit, source=source)


@hookimpl
def ivr_play(call: Any, item: Any) -> None:
    # Returns None: the playback plugin still plays the item (firstresult takes the first answer).
    _write("play", call, kind=item.kind, value=item.value)


@hookimpl
def ivr_call_ended(call: Any, reason: str) -> None:
    _write("ended", call, reason=reason, vars=dict(call.vars), recordings=list(call.recordings),
           digits="".join(call.digits))
