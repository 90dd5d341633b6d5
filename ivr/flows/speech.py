"""Speech input for flows: grammars, phrases and how long the caller has been talking (the
session-side steps, waiting for and recognising one utterance, are in
:mod:`ivr.flows.actions.recognition`).

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

import re
from dataclasses import dataclass
from typing import Any

from ivr.call import VoiceActivity

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


def utterance_voice_ms(voice: VoiceActivity | None) -> int | None:
    """How long the caller's current (or last) utterance has been speech, in ms, when a VAD
    tracks it (``None`` otherwise): from its onset to its latest voiced frame, gaps included
    (webrtcvad often calls an /s/ or a stop burst unvoiced) as long as at least half of that
    span is voiced; else only the voiced frames count (clicks and noise are sparse)."""
    state = voice
    if state is None or "voiced_ms" not in state:
        return None
    voiced = int(state["voiced_ms"])
    onset, latest = state.get("speech_start"), state.get("last_voice")
    if onset is None or latest is None or latest < onset:
        return voiced
    span = int(round((latest - onset) * 1000))
    return span if voiced * 2 >= span else voiced


def speech_long_enough(voice: VoiceActivity | None, needed: float) -> bool:
    """Whether the caller's utterance has lasted ``needed`` seconds (see
    :func:`utterance_voice_ms`). Without a VAD that tracks voiced time (a third-party one, or
    ``ivr simulate --speech`` events) the ``start`` event alone is taken as speech."""
    voiced = utterance_voice_ms(voice)
    return voiced is None or voiced >= needed * 1000 - 1e-6
