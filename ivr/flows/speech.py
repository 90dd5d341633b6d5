"""Speech input for flows: settings, grammars, waiting for one utterance, recognising it.

A node that listens for speech (``menu``/``collect`` with ``input: [dtmf, speech]``, or
``listen``) works on the speech events a VAD plugin reports: :class:`~ivr.call.SpeechEvent`
``start`` when the caller starts talking and ``end`` once they stop, the ``end`` carrying the
utterance's audio (int16 at the media rate; the session keeps the last one as
``session.utterance``). The flow hands it to ``ivr_stt`` (the stt plugin, or any other engine)
on an executor thread, because recognition is CPU work that must not stall the event loop every
call's media runs in. How long the caller has been talking comes from ``call.voice``
(:class:`~ivr.call.VoiceActivity`).

Rules (docs/flows.md states them with examples):

* An utterance with less than ``min_speech`` of voice (default 120 ms) is noise (a cough, an
  "mm"): it neither barges in nor counts as an answer.
* A key press cancels speech for the rest of the node: an utterance in progress or being
  recognised is dropped, and the node reads digits.
* No key and no speech before ``timeout``: ``no_input``. Speech the recogniser does not
  match (or matches below ``min_confidence``): ``no_match``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ivr.call import DtmfEvent

if TYPE_CHECKING:  # pragma: no cover
    from ivr.flows.session import FlowSession

log = logging.getLogger(__name__)

#: ``grammar`` value asking the recogniser for a string of spoken digits ("four two" -> "42").
DIGITS_GRAMMAR = "digits"
DEFAULT_MIN_SPEECH = 0.12
DEFAULT_MAX_SPEECH = 15.0
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_WORD_DIGITS = {word: str(i) for i, word in enumerate(_DIGIT_WORDS)} | {"oh": "0"}
_NOT_A_WORD = re.compile(r"[^a-z0-9' ]+")


@dataclass(frozen=True)
class SpeechResult:
    """What the recogniser made of one utterance: ``text`` (a grammar phrase as written in the
    flow, a digit string, or dictated words) and ``confidence`` in [0, 1]."""

    text: str
    confidence: float


def input_modes(session: FlowSession, params: Any) -> set[str]:
    """What a ``menu`` / ``collect`` node listens for: a subset of ``{"dtmf", "speech"}``."""
    value = session.setting(params, "input", ["dtmf"])
    modes = set(value) if isinstance(value, list) else {value}
    return modes or {"dtmf"}


def min_speech(session: FlowSession, params: Any) -> float:
    """Seconds of voice an utterance needs to barge in or count as an answer."""
    return session.duration(params, "min_speech", DEFAULT_MIN_SPEECH)


def phrase_words(text: str) -> tuple[str, ...]:
    """Words of ``text`` for comparing phrases: lower case, punctuation dropped, digits
    spelled one by one ("Press 1!" -> ``("press", "one")``)."""
    spaced = re.sub(r"\d", lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", _NOT_A_WORD.sub(" ", text.lower()))
    return tuple(spaced.split())


def spoken_digits(text: str) -> str | None:
    """``"four two"`` or ``"42"`` -> ``"42"``; ``None`` when ``text`` is not only digits."""
    words = phrase_words(text)
    if not words or any(word not in _WORD_DIGITS for word in words):
        return None
    return "".join(_WORD_DIGITS[word] for word in words)


def match_text(text: str, grammar: list[str] | str | None) -> str | None:
    """The grammar's answer for ``text`` heard exactly (the way ``ivr simulate --say`` and
    recognisers without grammar support are matched): the phrase as written in the flow, the
    digit string for :data:`DIGITS_GRAMMAR`, ``text`` itself for dictation, else ``None``."""
    if grammar is None:
        return text.strip() or None
    if grammar == DIGITS_GRAMMAR:
        return spoken_digits(text)
    wanted = phrase_words(text)
    return next((phrase for phrase in grammar if phrase_words(str(phrase)) == wanted), None)


def option_phrases(options: dict[str, Any]) -> dict[str, str]:
    """A menu's spoken phrases -> option key. An option's ``say`` lists its phrases; an
    option without ``say`` whose key is digits can be said as those digits ("one")."""
    phrases: dict[str, str] = {}
    for key, option in options.items():
        said = option.get("say") if isinstance(option, dict) else None
        if said is None:
            said = [key] if str(key).isdigit() else []
        for phrase in [said] if isinstance(said, str) else said:
            phrases.setdefault(str(phrase), str(key))
    return phrases


def option_target(option: Any) -> str:
    """The node an option leads to: the option itself, or its ``goto``."""
    return option["goto"] if isinstance(option, dict) else option


def utterance_voice_ms(session: FlowSession) -> int | None:
    """How long the caller's current (or last) utterance has been speech, in ms, when a VAD
    tracks it (``None`` otherwise): from its onset to its latest voiced frame, gaps included
    (webrtcvad often calls an /s/ or a stop burst unvoiced) as long as at least half of that
    span is voiced; else only the voiced frames count (clicks and noise are sparse)."""
    state = session.call.voice
    if state is None or "voiced_ms" not in state:
        return None
    voiced = int(state["voiced_ms"])
    onset, latest = state.get("speech_start"), state.get("last_voice")
    if onset is None or latest is None or latest < onset:
        return voiced
    span = int(round((latest - onset) * 1000))
    return span if voiced * 2 >= span else voiced


def speech_long_enough(session: FlowSession, needed: float) -> bool:
    """Whether the caller's utterance has lasted ``needed`` seconds (see
    :func:`utterance_voice_ms`). Without a VAD that tracks voiced time (a third-party one, or
    ``ivr simulate --speech`` events) the ``start`` event alone is taken as speech."""
    voiced = utterance_voice_ms(session)
    return voiced is None or voiced >= needed * 1000 - 1e-6


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
    job = session.loop.run_in_executor(None, lambda: call.hook.ivr_stt(call=call, pcm=pcm, options=options))
    # under ivr simulate the clock is virtual: let it follow real time while the thread works
    real_io = getattr(session.loop, "real_io", None)
    with real_io() if real_io is not None else contextlib.nullcontext():
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
