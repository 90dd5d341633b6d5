"""The in-memory form of a checked flow: :class:`Flow`, :class:`Node`, :class:`Schedule`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ivr.flows.diagnostics import Diagnostic
from ivr.flows.values import parse_days, parse_time_ranges


@dataclass(frozen=True)
class Node:
    """One named step: an ``action`` with its ``params`` and where its outcomes go."""

    name: str
    action: str
    params: Any
    on: dict[str, str] = field(default_factory=dict)
    next: str | None = None
    barge_in: Any = None
    flush_dtmf: bool = False
    line: int = 0


@dataclass(frozen=True)
class Schedule:
    """Weekly opening hours in a time zone, with holiday dates."""

    name: str
    zone: ZoneInfo
    weekly: dict[int, list[tuple[int, int]]]  # weekday -> [(start_minute, end_minute)]
    holidays: frozenset[dt.date]

    @classmethod
    def from_document(cls, name: str, document: dict[str, Any]) -> "Schedule":
        """Build from a flow's ``schedules`` entry; raises ``ValueError`` / ``KeyError``."""
        weekly: dict[int, list[tuple[int, int]]] = {}
        for days, ranges in document.get("weekly", {}).items():
            for day in parse_days(days):
                weekly.setdefault(day, []).extend(parse_time_ranges(ranges))
        holidays = frozenset(_as_date(value) for value in document.get("holidays", []) or [])
        return cls(name, ZoneInfo(document["timezone"]), weekly, holidays)

    def state_at(self, moment: dt.datetime) -> str:
        """``open``, ``closed`` or ``holiday`` at ``moment`` (aware; converted to the zone)."""
        local = moment.astimezone(self.zone)
        if local.date() in self.holidays:
            return "holiday"
        minute = local.hour * 60 + local.minute
        weekday = local.weekday()
        for start, end in self.weekly.get(weekday, []):
            if start < end and start <= minute < end:
                return "open"
            if end <= start and minute >= start:  # runs past midnight: the evening part
                return "open"
        for start, end in self.weekly.get((weekday - 1) % 7, []):
            if end <= start and minute < end:  # the morning part of yesterday's overnight range
                return "open"
        return "closed"


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


@dataclass
class Flow:
    """A checked flow. Calls hold on to the object they started with (hot reload safe)."""

    name: str
    path: Path
    start: str
    nodes: dict[str, Node]
    defaults: dict[str, Any] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    initial_vars: dict[str, Any] = field(default_factory=dict)
    default: str | None = None
    on_hangup: str | None = None
    on_error: str | None = None
    subflows: dict[str, "Flow"] = field(default_factory=dict)  # sub: {flow: file} -> its Flow
    warnings: list[Diagnostic] = field(default_factory=list)
    #: Nodes no call can reach (``ivr check`` warns about them; ``ivr graph`` marks them).
    unreachable: tuple[str, ...] = ()
    mtimes: dict[Path, float] = field(default_factory=dict)  # every file this flow was built from

    @property
    def folder(self) -> Path:
        """The folder every file path of the flow resolves inside."""
        return self.path.parent
