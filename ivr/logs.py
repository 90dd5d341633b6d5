"""Logging of the ``ivr`` process: one line per call event on the ``ivr.calls`` logger, as text
or as JSON lines (``log_format: json``)."""

from __future__ import annotations

import json
import logging
from typing import Any

from ivr.call import CallContext, current_call

__all__ = ["CallContextFilter", "CallLog", "JsonLogFormatter", "call_log", "configure_logging"]

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
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s%(call_tag)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
