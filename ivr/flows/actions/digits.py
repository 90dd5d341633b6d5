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

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Callable

from ivr.call import DtmfEvent, SpeechEvent
from ivr.flows import speech
from ivr.flows.actions import recognition
from ivr.flows.registry import ActionSpec
from ivr.flows.session import FlowSession
from ivr.flows.speech import SpeechResult

_MAX_ENTRY = 64  # digits; a stuck key must not grow an entry without bound


@dataclass(frozen=True)
class Entry:
    """What the caller typed (terminator excluded) or said, and why the entry ended."""

    digits: str
    ended_by: str  # "complete" | "terminator" | "timeout" | "speech" (speech None: no match)
    speech: SpeechResult | None = None


@dataclass(frozen=True)
class SpeechInput:
    """How a node listens for speech beside its digits (``input: [dtmf, speech]``)."""

    grammar: list[str] | str | None
    params: Any  # the node's parameters (min_confidence, max_speech)
    min_speech: float
    max_speech: float
    dtmf: bool  # digits count too (else they are dropped)


async def read_entry(
    session: FlowSession,
    prompt: Any,
    *,
    is_complete: Callable[[str], bool],
    terminator: str | None,
    first_timeout: float,
    inter_digit_timeout: float,
    speech_input: SpeechInput | None = None,
) -> Entry:
    """Play ``prompt`` and read one entry, applying the timer rules of this module.

    With ``speech_input``, an utterance (of at least ``min_speech`` of voice) is an entry too:
    it is recognised and returned as ``Entry("", "speech", result)``. A key press cancels
    speech for the rest of the entry (module :mod:`ivr.flows.speech`).
    """
    digits = ""
    listening = speech_input is not None
    speaking = False
    if speech_input is not None and not speech_input.dtmf and session.typeahead:
        # Keys are not an answer here: dropped before they could skip the prompt and stop the
        # listening (rule 4 is for keyed entries).
        session.trace("ignored", "dtmf " + "".join(session.typeahead))
        session.typeahead.clear()
    if session.typeahead and "dtmf" in session.barge_in():
        session.trace("type-ahead", "".join(session.typeahead))
        listening = False  # keys already pressed: this entry is a keyed one
    else:
        barged = await session.play(prompt, min_speech=speech_input.min_speech if speech_input else None)
        speaking = listening and barged == "speech"
    # When the running timer ends (loop time); None: (re)start it. Only what the entry takes in
    # (a digit, heard speech starting or ending) restarts it: events it ignores (speech while it
    # does not listen, ignored keys) must not hold the caller's timeout off for ever.
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while True:
        if speech_input is not None and not speech_input.dtmf and session.typeahead:
            session.trace("ignored", "dtmf " + "".join(session.typeahead))
            session.typeahead.clear()
        # Type-ahead first, one digit at a time: what the entry does not use stays buffered.
        while session.typeahead:
            deadline = None
            if listening or speaking:
                session.trace("speech", "cancelled by dtmf")
                listening = speaking = False
            digit = session.typeahead.pop(0)
            if terminator and digit == terminator:
                return Entry(digits, "terminator")
            digits += digit
            if is_complete(digits) or len(digits) >= _MAX_ENTRY:
                return Entry(digits, "complete")
        if speaking:
            timeout = speech_input.max_speech
        else:
            timeout = inter_digit_timeout if digits else first_timeout
        if deadline is None:
            deadline = loop.time() + timeout
        event = await session.next_event(max(0.0, deadline - loop.time()))
        if event is None:
            if speaking:  # the VAD never ended the utterance: a stuck line or endless talk
                session.trace("speech", f"longer than max_speech {timeout:g}s")
                return Entry("", "speech")
            session.trace("timer", f"{'inter-digit' if digits else 'first-digit'} timeout {timeout:g}s")
            return Entry(digits, "timeout")
        if isinstance(event, DtmfEvent):
            session.typeahead.append(event.digit)
        elif isinstance(event, SpeechEvent) and listening:
            if event.kind == "start":
                speaking = True
                deadline = None
            elif speaking:  # an end we saw start (one begun during an unbargeable prompt is not heard)
                speaking = False
                deadline = None
                if not speech.speech_long_enough(session.call.voice, speech_input.min_speech):
                    session.trace("speech", "too short, ignored")
                    continue
                try:
                    result = await recognition.recognise(session, speech_input.params, speech_input.grammar)
                except recognition.SpeechCancelled:
                    continue  # the digit is in the type-ahead buffer
                return Entry("", "speech", result)


def speech_input_for(session: FlowSession, params: dict[str, Any], grammar: list[str] | str | None) -> SpeechInput | None:
    """The node's :class:`SpeechInput`, or ``None`` when it listens for digits only."""
    modes = recognition.input_modes(session, params)
    if "speech" not in modes:
        return None
    return SpeechInput(
        grammar=grammar,
        params=params,
        min_speech=recognition.min_speech(session, params),
        max_speech=session.duration(params, "max_speech", speech.DEFAULT_MAX_SPEECH),
        dtmf="dtmf" in modes,
    )


def failure_outcome(session: FlowSession, failure: str) -> str:
    """``no_input`` / ``no_match`` as routed by the node, else their digit-era names
    ``timeout`` / ``invalid`` when only those are routed (flows written before speech)."""
    node = session.node
    alias = _FAILURE_ALIASES.get(failure)
    if node is not None and failure not in node.on and alias is not None and alias in node.on:
        return alias
    return failure


_FAILURE_ALIASES = {"no_input": "timeout", "no_match": "invalid"}


def _menu_routes(params: dict[str, Any]) -> dict[str, str]:
    options = {key: speech.option_target(option) for key, option in (params.get("options") or {}).items()}
    return {**options, **(params.get("patterns") or {})}


def _failure_prompt(params: dict[str, Any], failure: str) -> Any:
    """``no_match_prompt`` (else ``invalid_prompt``), ``no_input_prompt`` (else ``timeout_prompt``)..."""
    alias = _FAILURE_ALIASES.get(failure)
    return params.get(f"{failure}_prompt", params.get(f"{alias}_prompt") if alias else None)


async def menu_action(session: FlowSession, params: dict[str, Any]) -> str:
    """A menu; outcomes: the chosen option key, ``invalid``, ``timeout``, ``exhausted``, ``hangup``,
    and with speech input ``no_match`` and ``no_input``.

    A wrong entry or a timeout replays the menu (``short_prompt`` after the first time) unless
    the node routes ``invalid`` / ``timeout`` itself; the counts, kept separately, survive such
    a detour, and ``exhausted`` follows ``max_invalid`` wrong entries or ``max_timeouts`` timeouts.
    With ``input: [dtmf, speech]`` an option may also be said (its ``say`` phrases, or its
    digits): unrecognised speech counts as a wrong entry (``no_match``), silence as a timeout
    (``no_input``).
    """
    node = session.node
    options: dict[str, Any] = dict(params.get("options") or {})
    patterns = [(re.compile(p), p) for p in params.get("patterns") or {}]
    max_invalid = int(session.setting(params, "max_invalid", 3))
    max_timeouts = int(session.setting(params, "max_timeouts", 3))
    terminator = params.get("terminator")
    state = session.menu_state.setdefault(node.name, {"played": 0, "invalid": 0, "timeouts": 0})
    phrases = speech.option_phrases(options)
    speech_input = speech_input_for(session, params, list(phrases))

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
            speech_input=speech_input,
        )
        choice = None
        if entry.speech is not None:
            choice = phrases.get(entry.speech.text)
            recognition.remember(session, entry.speech)
        elif entry.digits in options:
            choice = entry.digits
        elif entry.ended_by != "speech":
            choice = next((source for regex, source in patterns if regex.fullmatch(entry.digits)), None)
        if choice is not None:
            del session.menu_state[node.name]
            if params.get("save_as"):
                session.vars[params["save_as"]] = choice if entry.speech is not None else entry.digits
            return choice
        if entry.ended_by == "speech":
            failure = "no_match"
        elif entry.ended_by == "timeout" and not entry.digits:
            failure = "no_input" if speech_input is not None else "timeout"
        else:
            failure = "invalid"
        count_key, limit = ("timeouts", max_timeouts) if failure in ("timeout", "no_input") else ("invalid", max_invalid)
        state[count_key] += 1
        session.trace(failure, f"{entry.digits!r} ({state[count_key]}/{limit})")
        if state[count_key] >= limit:
            del session.menu_state[node.name]
            await session.play(_failure_prompt(params, failure))
            return "exhausted"
        routed = failure_outcome(session, failure)
        if routed in node.on:
            return routed
        await session.play(_failure_prompt(params, failure))


async def collect_action(session: FlowSession, params: dict[str, Any]) -> str:
    """Collect digits; outcomes ``ok``, ``timeout`` (nothing typed), ``invalid``, ``hangup``, and
    with speech input (digits said: "four two") ``no_match`` and ``no_input``.

    ``vars[save_as]`` (default ``digits``) gets the digits on ``ok``.
    """
    min_digits = int(params.get("min_digits", 1))
    max_digits = params.get("max_digits")
    terminator = session.setting(params, "terminator", "#")
    pattern = re.compile(params["pattern"]) if params.get("pattern") else None
    attempts = int(params.get("attempts", 1))
    speech_input = speech_input_for(session, params, speech.DIGITS_GRAMMAR)
    failure = "timeout"
    for attempt in range(attempts):
        if attempt:
            await session.play(_failure_prompt(params, failure))
        entry = await read_entry(
            session, params.get("prompt"),
            is_complete=lambda digits: max_digits is not None and len(digits) >= max_digits,
            terminator=terminator,
            first_timeout=session.duration(params, "timeout", 5.0),
            inter_digit_timeout=session.duration(params, "inter_digit_timeout", 3.0),
            speech_input=speech_input,
        )
        digits = entry.speech.text if entry.speech is not None else entry.digits
        if entry.speech is not None:
            recognition.remember(session, entry.speech)
        if entry.ended_by == "speech" and entry.speech is None:
            failure = "no_match"
        elif entry.ended_by == "timeout" and not digits and min_digits > 0:
            failure = "no_input" if speech_input is not None else "timeout"
        elif len(digits) < min_digits or (pattern is not None and not pattern.fullmatch(digits)):
            failure = "invalid"
            session.trace("invalid", repr(digits))
        else:
            session.vars[params.get("save_as", "digits")] = digits
            return "ok"
    return failure_outcome(session, failure)


SPECS = [
    ActionSpec("menu", menu_action, outcomes=("invalid", "timeout", "exhausted", "no_match", "no_input", "hangup"),
               routes=_menu_routes, renders_params=False),
    ActionSpec("collect", collect_action, outcomes=("ok", "timeout", "invalid", "no_match", "no_input", "hangup"),
               renders_params=False),
]
