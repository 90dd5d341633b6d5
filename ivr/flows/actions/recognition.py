"""Recognising what the caller said, for the actions that listen (``menu``, ``collect``,
``listen``): the node's speech settings, ``ivr_stt`` on an executor thread, and storing the
result (the rules are in :mod:`ivr.flows.speech`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ivr.call import DtmfEvent
from ivr.flows.session import FlowSession
from ivr.flows.speech import (
    DEFAULT_MIN_SPEECH,
    DIGITS_GRAMMAR,
    SpeechResult,
    match_text,
    spoken_digits,
)

__all__ = ["SpeechCancelled", "input_modes", "min_speech", "recognise", "remember", "stt_options"]

log = logging.getLogger(__name__)


def input_modes(session: FlowSession, params: Any) -> set[str]:
    """What a ``menu`` / ``collect`` node listens for: a subset of ``{"dtmf", "speech"}``."""
    value = session.setting(params, "input", ["dtmf"])
    modes = set(value) if isinstance(value, list) else {value}
    return modes or {"dtmf"}


def min_speech(session: FlowSession, params: Any) -> float:
    """Seconds of voice an utterance needs to barge in or count as an answer."""
    return session.duration(params, "min_speech", DEFAULT_MIN_SPEECH)


def stt_options(session: FlowSession, params: Any, grammar: list[str] | str | None) -> dict[str, Any]:
    """The ``options`` of ``ivr_stt`` for this node."""
    options: dict[str, Any] = {"grammar": grammar}
    confidence = session.setting(params, "min_confidence", None)
    if confidence is not None:
        options["min_confidence"] = float(confidence)
    return options


async def recognise(session: FlowSession, params: Any, grammar: list[str] | str | None) -> SpeechResult | None:
    """Recognise the utterance that just ended; ``None`` when nothing matched.

    Raises :class:`SpeechCancelled` when a key is pressed first (the digit goes to the
    type-ahead buffer for the node to read).
    """
    call = session.call
    pcm = session.utterance
    if pcm is None:
        session.trace("speech", "no utterance audio (is the vad plugin loaded?)")
        return None
    options = stt_options(session, params, grammar)
    job = asyncio.ensure_future(session.run_blocking(call.hook.ivr_stt, call=call, pcm=pcm, options=options))
    while not job.done():
        event = await session.next_event(None, until=job)
        if isinstance(event, DtmfEvent):
            session.typeahead.append(event.digit)
            session.trace("speech", f"cancelled by dtmf {event.digit}")
            job.add_done_callback(_discard)
            raise SpeechCancelled(event.digit)
    answer = job.result()
    if not answer:
        session.trace("recognised", "nothing")
        return None
    text, confidence = answer
    if grammar is not None and grammar != DIGITS_GRAMMAR and text not in grammar:
        text = match_text(str(text), grammar)  # an engine that spells phrases its own way
        if text is None:
            session.trace("recognised", f"{answer[0]!r} (not in the grammar)")
            return None
    if grammar == DIGITS_GRAMMAR:
        text = spoken_digits(str(text))
        if text is None:
            session.trace("recognised", f"{answer[0]!r} (not digits)")
            return None
    result = SpeechResult(str(text), float(confidence))
    floor = options.get("min_confidence")
    if floor is not None and result.confidence < floor:
        session.trace("recognised", f"{result.text!r} {result.confidence:.2f} (under {floor:g})")
        return None
    session.trace("recognised", f"{result.text!r} {result.confidence:.2f}")
    return result


class SpeechCancelled(Exception):
    """A key press cancelled speech recognition for the node."""


def _discard(job: asyncio.Future) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.debug("abandoned recognition failed: %r", job.exception())


def remember(session: FlowSession, result: SpeechResult, save_as: str | None = None) -> None:
    """Store what was said: ``vars.speech`` / ``vars.speech_confidence`` (always) and
    ``vars[save_as]`` / ``vars[save_as + "_confidence"]`` when the node names one."""
    for name in {"speech", save_as} - {None}:
        session.vars[name] = result.text
        session.vars[f"{name}_confidence"] = round(result.confidence, 3)
