"""The stt plugin: grammar compilation, decoder pooling, and real recognition of espeak-ng
speech carried over G.711 (accuracy asserted on a subset of the bench set)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ivr_plugins import stt
from tests.helpers.speech_corpus import (
    MENU_PHRASES,
    VOICES,
    build_corpus,
    synthesise,
    through_g711,
)


@pytest.fixture(scope="module")
def recognizer() -> stt.SpeechRecognizer:
    return stt.SpeechRecognizer(pool_size=2)


def test_normalise_phrase_spells_digits_and_drops_punctuation() -> None:
    assert stt.normalise_phrase("Press 1, then #!") == ("press", "one", "then")
    assert stt.normalise_phrase("  Buy   Something ") == ("buy", "something")


def test_grammar_maps_words_back_to_the_phrase_as_given() -> None:
    grammar = stt.Grammar(["Sales", "1", "buy something", "one"])
    assert "public <choice> = buy something | one | sales;" in grammar.jsgf()
    assert grammar.phrase_for("one") == "1"  # first spelling wins
    assert grammar.phrase_for("buy") is None  # a partial phrase is no answer
    with pytest.raises(ValueError):
        stt.Grammar(["!!"])


def test_decoder_pool_lends_each_decoder_to_one_thread_at_a_time() -> None:
    pool = stt.DecoderPool(object, max_size=2)
    in_use: set[int] = set()
    clash = threading.Event()
    lock = threading.Lock()

    def work(_: int) -> None:
        with pool.borrow() as decoder:
            with lock:
                if id(decoder) in in_use:
                    clash.set()
                in_use.add(id(decoder))
            threading.Event().wait(0.002)
            with lock:
                in_use.discard(id(decoder))

    with ThreadPoolExecutor(max_workers=6) as executor:
        list(executor.map(work, range(60)))
    assert not clash.is_set()
    assert pool.size == 2


#: Every bench voice (three of them female or female-like), each at one of the three bench
#: speeds, so that every voice and every speed is in the sample; clean and 20 dB SNR.
REPRESENTATIVE = (("en-us", 130), ("en", 190), ("en-gb-x-rp", 160), ("en+f3", 190), ("en+m3", 130), ("en-us+f2", 160))


def test_menu_phrases_recognised_at_90_percent(recognizer: stt.SpeechRecognizer) -> None:
    # 17 phrases x 6 voices x 2 noise levels = 204 utterances (the full bench set is 612)
    corpus = [u for voice, speed in REPRESENTATIVE
              for u in build_corpus(voices=(voice,), speeds=(speed,), snrs=(None, 20.0))]
    assert {u.voice for u in corpus} == set(VOICES) and len(corpus) == 204
    grammar = list(MENU_PHRASES)
    with ThreadPoolExecutor(max_workers=2) as executor:
        results = list(executor.map(lambda u: recognizer.recognise(u.pcm, grammar), corpus))
    right = [r is not None and r.text == u.phrase for u, r in zip(corpus, results)]
    misses = [(u.condition, u.phrase, r and r.text) for u, r, ok in zip(corpus, results, right) if not ok]
    assert np.mean(right) >= 0.90, misses


def test_telephone_band_alternatives_map_back_to_the_word() -> None:
    grammar = stt.Grammar(["six", "support", "sales"])
    assert "(six | six_nb0)" in grammar.jsgf()
    assert grammar.extra_pronunciations == {"six_nb0": "IY", "support_nb0": "S AH P AO R"}
    assert grammar.phrase_for("six_nb0") == "six"
    assert grammar.phrase_for("support_nb0") == "support"


def test_digits_grammar_returns_the_digit_string(recognizer: stt.SpeechRecognizer) -> None:
    digits = stt.compile_grammar("digits")
    assert digits.phrase_for("four two oh six_nb0") == "4206"
    assert digits.phrase_for("four sales") is None
    with pytest.raises(ValueError):
        stt.compile_grammar("everything")
    result = recognizer.recognise(through_g711(synthesise("four two one nine", "en-us", 150)), "digits")
    assert result is not None and result.text == "4219"


def test_hook_returns_phrase_as_given_with_confidence_and_keeps_last_result() -> None:
    class Call:
        data: dict = {}

    call = Call()
    pcm = through_g711(synthesise("operator", "en-us", 160))
    answer = stt.ivr_stt(call=call, pcm=pcm, options={"grammar": ["Sales", "Support", "Operator"]})
    assert answer is not None
    text, confidence = answer
    assert text == "Operator"
    assert 0.5 < confidence <= 1.0
    assert call.data["stt"]["last"].text == "Operator"
    # a confidence floor the answer cannot reach turns it into "nothing recognised"
    assert stt.ivr_stt(call=call, pcm=pcm, options={"grammar": ["Sales", "Operator"], "min_confidence": 1.01}) is None


def test_out_of_grammar_speech_scores_lower_than_in_grammar(recognizer: stt.SpeechRecognizer) -> None:
    grammar = ["sales", "support", "operator"]
    inside = recognizer.recognise(through_g711(synthesise("support", "en-us", 160)), grammar)
    outside = recognizer.recognise(through_g711(synthesise("weather forecast", "en-us", 160)), grammar)
    assert inside is not None and inside.text == "support"
    assert outside is None or outside.confidence < inside.confidence


def test_silence_and_empty_audio_give_no_answer(recognizer: stt.SpeechRecognizer) -> None:
    assert recognizer.recognise(np.zeros(0, np.int16), ["yes", "no"]) is None
    assert stt.ivr_stt(call=None, pcm=np.zeros(8000, np.int16), options={"grammar": ["yes", "no"]}) is None


def test_unknown_word_is_reported(recognizer: stt.SpeechRecognizer) -> None:
    with pytest.raises(ValueError, match="xyzzyplugh"):
        recognizer.recognise(np.zeros(800, np.int16), ["xyzzyplugh"])


def test_dictation_returns_english_words(recognizer: stt.SpeechRecognizer) -> None:
    result = recognizer.recognise(through_g711(synthesise("hello world", "en-us", 140)), None)
    assert result is not None
    assert result.text and result.text.replace(" ", "").isalpha()
    assert 0.0 <= result.confidence <= 1.0
