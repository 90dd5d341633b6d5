"""Digit input: ``menu`` and ``collect``, and the timer rules they share.

Timer rules (docs/flows.md states them with examples):

1. The first-digit timer (``timeout``) starts when the prompt ends, or when a digit barges in,
   whichever comes first.
2. Once a digit has arrived, the inter-digit timer (``inter_digit_timeout``) governs.
3. On a timeout with at least ``min_digits`` digits, ``collect`` succeeds with what it has.
4. Digits typed while a prompt plays (or between nodes) are kept for the next collect, unless
   the node says ``flush_dtmf: true``. With type-ahead digits waiting, the prompt is skipped.
5. DTMF barge-in is on by default; speech barge-in (a VAD ``start``) is opt-in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from ivr.call import DtmfEvent
from ivr.flows.registry import ActionSpec
from ivr.flows.session import FlowSession

_MAX_ENTRY = 64  # digits; a stuck key must not grow an entry without bound


@dataclass(frozen=True)
class Entry:
    """What the caller typed (terminator excluded) and why the entry ended."""

    digits: str
    ended_by: str  # "complete" | "terminator" | "timeout"


async def read_entry(
    session: FlowSession,
    prompt: Any,
    *,
    is_complete: Callable[[str], bool],
    terminator: str | None,
    first_timeout: float,
    inter_digit_timeout: float,
) -> Entry:
    """Play ``prompt`` and read one entry, applying the timer rules of this module."""
    digits = ""
    if session.typeahead and "dtmf" in session.barge_in():
        session.trace("type-ahead", "".join(session.typeahead))
    else:
        await session.play(prompt)
    while True:
        # Type-ahead first, one digit at a time: what the entry does not use stays buffered.
        while session.typeahead:
            digit = session.typeahead.pop(0)
            if terminator and digit == terminator:
                return Entry(digits, "terminator")
            digits += digit
            if is_complete(digits) or len(digits) >= _MAX_ENTRY:
                return Entry(digits, "complete")
        timeout = inter_digit_timeout if digits else first_timeout
        event = await session.next_event(timeout)
        if event is None:
            session.trace("timer", f"{'inter-digit' if digits else 'first-digit'} timeout {timeout:g}s")
            return Entry(digits, "timeout")
        if isinstance(event, DtmfEvent):
            session.typeahead.append(event.digit)


def _menu_routes(params: dict[str, Any]) -> dict[str, str]:
    return {**(params.get("options") or {}), **(params.get("patterns") or {})}


async def menu_action(session: FlowSession, params: dict[str, Any]) -> str:
    """A menu; outcomes: the chosen option key, ``invalid``, ``timeout``, ``exhausted``, ``hangup``.

    A wrong entry or a timeout replays the menu (``short_prompt`` after the first time) unless
    the node routes ``invalid`` / ``timeout`` itself; the counts, kept separately, survive such
    a detour, and ``exhausted`` follows ``max_invalid`` wrong entries or ``max_timeouts`` timeouts.
    """
    node = session.node
    options: dict[str, str] = dict(params.get("options") or {})
    patterns = [(re.compile(p), p) for p in params.get("patterns") or {}]
    max_invalid = int(session.setting(params, "max_invalid", 3))
    max_timeouts = int(session.setting(params, "max_timeouts", 3))
    terminator = params.get("terminator")
    state = session.menu_state.setdefault(node.name, {"played": 0, "invalid": 0, "timeouts": 0})

    def is_complete(digits: str) -> bool:
        longer = any(key != digits and key.startswith(digits) for key in options)
        if digits in options:
            return not longer
        return not longer and not patterns  # a dead end: no option can still match

    while True:
        prompt = params["prompt"] if state["played"] == 0 else params.get("short_prompt", params["prompt"])
        state["played"] += 1
        entry = await read_entry(
            session, prompt,
            is_complete=is_complete,
            terminator=terminator,
            first_timeout=session.duration(params, "timeout", 5.0),
            inter_digit_timeout=session.duration(params, "inter_digit_timeout", 3.0),
        )
        choice = entry.digits if entry.digits in options else None
        if choice is None:
            choice = next((source for regex, source in patterns if regex.fullmatch(entry.digits)), None)
        if choice is not None:
            del session.menu_state[node.name]
            if params.get("save_as"):
                session.vars[params["save_as"]] = entry.digits
            return choice
        failure = "timeout" if entry.ended_by == "timeout" and not entry.digits else "invalid"
        count_key, limit = ("timeouts", max_timeouts) if failure == "timeout" else ("invalid", max_invalid)
        state[count_key] += 1
        session.trace(failure, f"{entry.digits!r} ({state[count_key]}/{limit})")
        if state[count_key] >= limit:
            del session.menu_state[node.name]
            await session.play(params.get(f"{failure}_prompt"))
            return "exhausted"
        if failure in node.on:
            return failure
        await session.play(params.get(f"{failure}_prompt"))


async def collect_action(session: FlowSession, params: dict[str, Any]) -> str:
    """Collect digits; outcomes ``ok``, ``timeout`` (nothing typed), ``invalid``, ``hangup``.

    ``vars[save_as]`` (default ``digits``) gets the digits on ``ok``.
    """
    min_digits = int(params.get("min_digits", 1))
    max_digits = params.get("max_digits")
    terminator = session.setting(params, "terminator", "#")
    pattern = re.compile(params["pattern"]) if params.get("pattern") else None
    attempts = int(params.get("attempts", 1))
    failure = "timeout"
    for attempt in range(attempts):
        if attempt:
            await session.play(params.get(f"{failure}_prompt"))
        entry = await read_entry(
            session, params.get("prompt"),
            is_complete=lambda digits: max_digits is not None and len(digits) >= max_digits,
            terminator=terminator,
            first_timeout=session.duration(params, "timeout", 5.0),
            inter_digit_timeout=session.duration(params, "inter_digit_timeout", 3.0),
        )
        digits = entry.digits
        if entry.ended_by == "timeout" and not digits and min_digits > 0:
            failure = "timeout"
        elif len(digits) < min_digits or (pattern is not None and not pattern.fullmatch(digits)):
            failure = "invalid"
            session.trace("invalid", repr(digits))
        else:
            session.vars[params.get("save_as", "digits")] = digits
            return "ok"
    return failure


SPECS = [
    ActionSpec("menu", menu_action, outcomes=("invalid", "timeout", "exhausted", "hangup"),
               routes=_menu_routes, renders_params=False, builtin=True),
    ActionSpec("collect", collect_action, outcomes=("ok", "timeout", "invalid", "hangup"),
               renders_params=False, builtin=True),
]
