"""Logging of the ``ivr`` process: one line per call event on the ``ivr.calls`` logger, as text
or as JSON lines (``log_format: json``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from ivr.call import CallContext, current_call

__all__ = ["CallContextFilter", "CallLog", "FloodFilter", "JsonLogFormatter", "call_log", "configure_logging"]

#: The logger of call events: one record per event, its fields in ``record.fields``.
call_log = logging.getLogger("ivr.calls")


class CallLog:
    """Engine observer: one ``ivr.calls`` log line per call event, with the event's fields."""

    def __call__(self, event: str, call: CallContext, details: dict[str, Any]) -> None:
        fields = {"event": event, "call_id": call.id, "from": call.from_uri, "to": call.to_uri,
                  "flow": call.flow, **details}
        summary = " ".join(f"{k}={v}" for k, v in details.items() if not isinstance(v, dict))
        call_log.info("call %s %s %s", call.id, event, summary, extra={"fields": fields})


class CallContextFilter(logging.Filter):
    """Names the call a record is about: the call whose work wrote it
    (:data:`ivr.call.current_call`) or, for a call event, the event's call. Adds ``call_tag``
    for text lines (`` [call=ID flow=F from=A to=B]``, empty outside calls) and ``call_fields``
    for JSON ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "fields", None)
        call = current_call.get()
        if event:
            who = {key: event.get(key) for key in ("call_id", "flow", "from", "to")}
        elif call is not None:
            who = {"call_id": call.id, "flow": call.flow, "from": call.from_user or call.from_uri,
                   "to": call.to_user or call.to_uri}
        else:
            record.call_tag, record.call_fields = "", {}
            return True
        record.call_fields = {} if event else who
        record.call_tag = " [call={call_id} flow={flow} from={from} to={to}]".format(**who)
        return True


class FloodFilter(logging.Filter):
    """Keeps a flood from writing one line per bad request: at most ``burst`` records of the same
    kind (logger and message template, whatever their arguments) per ``interval`` seconds; the
    rest are counted, and the first record of the kind after the window says how many were left
    out (``(1234 more like this in the last 10 s)``). Call events (``ivr.calls``) and the
    security log (``ivr.security``, fail2ban's input) are never held back. What was left out
    still counts where it matters: the metrics count every rejected message."""

    EXEMPT = ("ivr.calls", "ivr.security")

    def __init__(self, burst: int = 20, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._kinds: dict[tuple[str, str], list[float | int]] = {}  # kind -> [window start, seen, left out]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(self.EXEMPT) or record.levelno >= logging.ERROR:
            return True
        now = self.clock()
        kind = (record.name, str(record.msg))
        state = self._kinds.get(kind)
        if state is None or now - state[0] >= self.interval:
            left_out = int(state[2]) if state else 0
            self._kinds[kind] = [now, 1, 0]
            if left_out:
                record.msg = f"{record.msg} ({left_out} more like this in the last {self.interval:g} s)"
            if len(self._kinds) > 10_000:  # kinds come from code, not from peers; a safety net
                self._kinds.clear()
            return True
        state[1] += 1
        if state[1] <= self.burst:
            return True
        state[2] += 1
        return False


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any call-event fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "call_fields", {}) or {})
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "text", level: str = "info") -> None:
    """Set up the root logger of the ``ivr`` process (applications only, never a library)."""
    handler = logging.StreamHandler()
    handler.addFilter(FloodFilter())
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s%(call_tag)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
