"""Parsers for the scalar notations a flow uses: times of day and days of the week (durations:
:func:`ivr.audio.parse_duration`)."""

from __future__ import annotations

import re

_TIME_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_time_ranges(value: str) -> list[tuple[int, int]]:
    """``"09:00-12:30, 13:30-18:00"`` -> minutes since midnight ``[(540, 750), (810, 1080)]``.

    An end at or before the start means the range runs past midnight (``"22:00-06:00"``);
    ``24:00`` is allowed as an end.
    """
    ranges = []
    for part in str(value).split(","):
        match = _TIME_RANGE.match(part)
        if not match:
            raise ValueError(f"bad time range {part.strip()!r} (write e.g. 09:00-17:30)")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError(f"bad time of day in {part.strip()!r}")
        ranges.append((h1 * 60 + m1, h2 * 60 + m2))
    return ranges


def parse_days(value: str) -> list[int]:
    """``"mon-fri"``, ``"sat"``, ``"mon,wed"`` -> weekday numbers (Monday = 0)."""
    days: list[int] = []
    for part in str(value).lower().split(","):
        part = part.strip()
        if "-" in part:
            first, last = (p.strip() for p in part.split("-", 1))
            if first not in DAY_NAMES or last not in DAY_NAMES:
                raise ValueError(f"bad day range {part!r} (days are {', '.join(DAY_NAMES)})")
            start, end = DAY_NAMES.index(first), DAY_NAMES.index(last)
            span = (end - start) % 7
            days.extend((start + i) % 7 for i in range(span + 1))
        elif part in DAY_NAMES:
            days.append(DAY_NAMES.index(part))
        else:
            raise ValueError(f"bad day {part!r} (days are {', '.join(DAY_NAMES)})")
    return days
