"""Logging of the ``ivr`` process: one line per call event on the ``ivr.calls`` logger, as text
or as JSON lines (``log_format: json``)."""

from __future__ import annotations

import json
import logging
from typing import Any

from ivr.call import CallContext

__all__ = ["CallLog", "JsonLogFormatter", "configure_logging", "call_log"]

#: The logger of call events: one record per event, its fields in ``record.fields``.
call_log = logging.getLogger("ivr.calls")


class CallLog:
    """Engine observer: one ``ivr.calls`` log line per call event, with the event's fields."""

    def __call__(self, event: str, call: CallContext, details: dict[str, Any]) -> None:
        fields = {"event": event, "call_id": call.id, "from": call.from_uri, "to": call.to_uri,
                  "flow": call.flow, **details}
        summary = " ".join(f"{k}={v}" for k, v in details.items() if not isinstance(v, dict))
        call_log.info("call %s %s %s", call.id, event, summary, extra={"fields": fields})


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any call-event fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "text", level: str = "info") -> None:
    """Set up the root logger of the ``ivr`` process (applications only, never a library)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
