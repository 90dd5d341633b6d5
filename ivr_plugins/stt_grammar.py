"""Grammars for the stt plugin: phrase lists and digit strings compiled to JSGF.

A phrase list (a menu: ``["sales", "buy something", "1"]``) becomes one public rule with one
alternative per phrase; the decoded words map back to the phrase exactly as the flow wrote it.
``"digits"`` is any string of spoken digits ("four two" -> ``"42"``, "oh" is zero).

Telephone-band pronunciations: over G.711 the shipped 16 kHz model hears some words without
their high-frequency consonants. A phone-loop decode of espeak-ng speech through mu-law
(``bench/stt_accuracy.py``) shows "six" as the bare vowel ``IY`` (both /s/ lie above the 4 kHz
band, the /k/ burst is lost with them) and "support" without its final /t/ burst. Those words
get extra alternatives in the grammar, as separate dictionary words (``six_nb0``) that map
back to the word: pocketsphinx's own alternate pronunciations (``six(2)``) did not change the
FSG search's answers at all. Measured on the full bench set: 89.1 % without, 93.6 % with them;
more alternatives ("no" as ``M OW``, "five" as ``AY V``) cost more than they gained
(docs/speech.md).
"""

from __future__ import annotations

import re
from typing import Sequence

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: The ``grammar`` option value for a string of spoken digits.
DIGITS = "digits"

#: word -> extra pronunciations (CMU phones) heard on narrowband lines; see the module doc.
NARROWBAND_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "six": ("IY",),
    "support": ("S AH P AO R",),
}
_ALTERNATIVE_SUFFIX = re.compile(r"_nb\d+$")
_NOT_A_WORD = re.compile(r"[^a-z0-9' ]+")


def normalise_phrase(phrase: str) -> tuple[str, ...]:
    """The words the decoder sees for ``phrase``: lower case, digits spelled out one by one
    (a caller says "one two", not "twelve", when reading a menu's digits), punctuation dropped."""
    text = _NOT_A_WORD.sub(" ", phrase.lower())
    text = re.sub(r"\d", lambda m: f" {DIGIT_WORDS[int(m.group())]} ", text)
    return tuple(text.split())


def _spoken(word: str) -> str:
    """A word as a JSGF token, with its telephone-band alternatives."""
    alternatives = NARROWBAND_ALTERNATIVES.get(word, ())
    if not alternatives:
        return word
    return "(" + " | ".join([word] + [f"{word}_nb{i}" for i in range(len(alternatives))]) + ")"


def _alternative_words(words: set[str]) -> dict[str, str]:
    return {f"{word}_nb{i}": phones
            for word in sorted(words) for i, phones in enumerate(NARROWBAND_ALTERNATIVES.get(word, ()))}


class Grammar:
    """A list of phrases compiled to JSGF, with the way back from decoded words to the phrase."""

    def __init__(self, phrases: Sequence[str]) -> None:
        self.phrase_by_words: dict[tuple[str, ...], str] = {}
        for phrase in phrases:
            words = normalise_phrase(str(phrase))
            if not words:
                raise ValueError(f"grammar phrase {phrase!r} has no words")
            # the first spelling wins when two phrases normalise alike ("1" and "one")
            self.phrase_by_words.setdefault(words, str(phrase))
        if not self.phrase_by_words:
            raise ValueError("empty grammar")
        self.key: tuple[tuple[str, ...], ...] = tuple(sorted(self.phrase_by_words))

    @property
    def words(self) -> set[str]:
        """Every dictionary word the grammar uses (each must have a pronunciation)."""
        return {word for words in self.key for word in words}

    @property
    def extra_pronunciations(self) -> dict[str, str]:
        """Words to add to the decoder's dictionary for this grammar (telephone-band alternatives)."""
        return _alternative_words(self.words)

    def jsgf(self) -> str:
        """The grammar as JSGF text: one public rule, one alternative per phrase."""
        alternatives = " | ".join(" ".join(_spoken(w) for w in words) for words in self.key)
        return f"#JSGF V1.0;\ngrammar choices;\npublic <choice> = {alternatives};\n"

    def phrase_for(self, hypothesis: str) -> str | None:
        """The phrase that ``hypothesis`` (decoded words, fillers removed) spells, if any."""
        words = tuple(_ALTERNATIVE_SUFFIX.sub("", word) for word in hypothesis.split())
        return self.phrase_by_words.get(words)


class DigitsGrammar:
    """Any non-empty string of spoken digits ("oh" for zero); the answer is the digit string."""

    key = (("<digits>",),)
    _values = {word: str(i) for i, word in enumerate(DIGIT_WORDS)} | {"oh": "0"}

    @property
    def words(self) -> set[str]:
        return set(self._values)

    @property
    def extra_pronunciations(self) -> dict[str, str]:
        return _alternative_words(self.words)

    def jsgf(self) -> str:
        digit = " | ".join(_spoken(word) for word in self._values)
        return f"#JSGF V1.0;\ngrammar digits;\npublic <digits> = <digit>+;\n<digit> = {digit};\n"

    def phrase_for(self, hypothesis: str) -> str | None:
        words = [_ALTERNATIVE_SUFFIX.sub("", word) for word in hypothesis.split()]
        if not words or any(word not in self._values for word in words):
            return None
        return "".join(self._values[word] for word in words)


def compile_grammar(grammar: Sequence[str] | str | None) -> Grammar | DigitsGrammar | None:
    """A phrase list, :data:`DIGITS`, or ``None`` (dictation) as a compiled grammar."""
    if grammar is None:
        return None
    if isinstance(grammar, str):
        if grammar == DIGITS:
            return DigitsGrammar()
        raise ValueError(f"grammar must be a list of phrases, {DIGITS!r} or None, not {grammar!r}")
    return Grammar(grammar)
