"""The ``stt`` plugin: offline speech recognition with pocketsphinx.

``ivr_stt(call, pcm, options)`` recognises one 8 kHz int16 utterance (as the vad plugin cut it)
and returns ``(text, confidence)`` or ``None``. ``options["grammar"]`` is a list of expected
phrases (a menu: ``["sales", "support", "operator"]``) or ``None`` for free dictation with
pocketsphinx's general English language model, or ``"digits"`` for a spoken digit string
(``text`` is then ``"42"``). With a phrase grammar, ``text`` is always one of the given
phrases, spelled exactly as given, so a flow can compare it with its options. Grammars, and
the telephone-band pronunciations they add, are in :mod:`ivr_plugins.stt_grammar`.

How an utterance is decoded (the reasons are in docs/speech.md, with the measurements):

1. The utterance is padded with 0.3 s of silence on both sides: the vad cuts tight, and the
   decoder needs silence to enter and leave the grammar.
2. It is resampled to 16 kHz with soxr (front end ``resample``, the default) because the shipped
   acoustic model was trained on 16 kHz features; the other front end, ``narrowband``, keeps
   8 kHz and moves the model's upper mel filter edge to 3500 Hz instead (far less accurate, see
   the docs). A steady noise floor (about -35 dBFS) is added: telephone audio is often near
   digital silence, which the model never saw.
3. A grammar is compiled to JSGF (``public <choice> = sales | buy something | ...;``) and decoded
   with pocketsphinx's finite-state-grammar search; dictation uses the n-gram search.
4. Confidence (see :func:`confidence_from_scores`): a per-frame acoustic score that compares
   the recognised words with the best-scoring senone of every frame (what an unconstrained
   phone loop would achieve); for dictation it is averaged with the lattice posterior.

Decoders are not thread-safe and take 0.2 s (grammar) to 1 s (dictation) to create, so each
grammar gets a :class:`DecoderPool`: up to ``pool_size`` decoders, each lent to one thread at a
time. ``ivr_stt`` blocks (CPU work): the engine calls it from an executor thread.

Configuration (``plugins.stt``): ``front_end`` (``resample`` | ``narrowband``), ``pool_size``
(decoders per grammar, default: CPU count), ``max_grammars`` (pools kept, least recently used
dropped, default 32), ``padding`` (seconds, default 0.3), ``min_confidence`` (below it
``ivr_stt`` answers ``None``; default 0.2), ``words`` (extra pronunciations,
``{"simplesip": "S IH M P AH L S IH P"}``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import soxr

from ivr import hookimpl
from ivr.audio import SAMPLE_RATE

# Grammar and normalise_phrase are part of this plugin's public API (defined beside it).
from ivr_plugins.stt_grammar import (  # noqa: F401
    DigitsGrammar,
    Grammar,
    compile_grammar,
    normalise_phrase,
)

log = logging.getLogger(__name__)

NAME = "stt"
#: RMS of the noise floor added after resampling (int16 units at the decoder's rate, about
#: -35 dBFS). Measured: 2 -> 51 %, 100 -> 78 %, 600 -> 89 % on the menu set (docs/speech.md).
NOISE_FLOOR_RMS = 600.0

#: Front end name -> the sample rate the decoder's features are computed at.
FRONT_ENDS: dict[str, int] = {"resample": 16000, "narrowband": 8000}


@dataclass(frozen=True)
class Recognition:
    """One decoded utterance: ``text``, ``confidence`` in [0, 1], the decoder's lattice
    ``posterior`` (dictation only), the number of samples decoded (after padding and
    resampling) and the acoustic ``log_ratio`` the confidence was computed from."""

    text: str
    confidence: float
    posterior: float | None
    samples: int
    log_ratio: float = 0.0


class DecoderPool:
    """Up to ``max_size`` decoders made by ``factory``, each lent to one thread at a time.

    Decoders are created lazily, so a grammar used by one call at a time costs one decoder.
    """

    def __init__(self, factory: Callable[[], Any], max_size: int) -> None:
        self._factory = factory
        self._max_size = max_size
        self._idle: list[Any] = []
        self._created = 0
        self._available = threading.Condition()

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        """Lend an idle decoder (creating one if under the limit, else waiting for one)."""
        with self._available:
            while not self._idle and self._created >= self._max_size:
                self._available.wait()
            decoder = self._idle.pop() if self._idle else None
            if decoder is None:
                self._created += 1  # counted before creation so others do not overshoot
        if decoder is None:
            try:
                decoder = self._factory()
            except BaseException:
                with self._available:
                    self._created -= 1
                    self._available.notify()
                raise
        try:
            yield decoder
        finally:
            with self._available:
                self._idle.append(decoder)
                self._available.notify()

    @property
    def size(self) -> int:
        """How many decoders this pool has created."""
        return self._created


# Calibration of the acoustic confidence (see confidence_from_scores): measured with
# bench/stt_accuracy.py --calibrate on in-grammar and out-of-grammar utterances.
# Medians on the --quick set: right answers -0.002, wrong -0.003, out-of-grammar speech -0.004
# (pocketsphinx's Python ascore is a scaled likelihood, hence the small numbers).
ACOUSTIC_CENTRE = -0.003
ACOUSTIC_SCALE = 0.0007
_narrowband_model: Path | None = None
_model_lock = threading.Lock()


def acoustic_log_ratio(word_scores: Sequence[tuple[int, float]]) -> float:
    """Mean per-frame log ratio of the words' acoustic score to the best senone's (<= 0)."""
    frames = sum(n for n, _ in word_scores)
    if frames <= 0:
        return -math.inf
    # ascore underflows to 0.0 for very poor matches: clamp to the smallest normal double
    return sum(math.log(max(ascore, 2.2e-308)) for _, ascore in word_scores) / frames


def confidence_from_scores(word_scores: Sequence[tuple[int, float]], posterior: float | None) -> float:
    """Confidence in [0, 1] from the recognised words' acoustic scores (and lattice posterior).

    ``word_scores`` holds ``(frames, ascore)`` per recognised word, ``ascore`` being what
    pocketsphinx reports: the word's acoustic likelihood relative to the best senone of each of
    its frames (pocketsphinx normalises every frame's scores by the best one). Its log per frame
    is thus a log-likelihood ratio against an unconstrained phone loop: near 0 when the words
    fit the audio as well as anything could, very negative when the grammar forced a wrong
    phrase. A logistic, calibrated on the bench set, maps it to [0, 1]. For dictation the
    result is averaged with the lattice ``posterior`` of the best path; grammar decoding runs
    without lattice rescoring (it was less accurate), so ``posterior`` is ``None`` there.
    """
    log_ratio = acoustic_log_ratio(word_scores)
    if log_ratio == -math.inf:
        return 0.0
    z = max(-60.0, min(60.0, (log_ratio - ACOUSTIC_CENTRE) / ACOUSTIC_SCALE))
    acoustic = 1.0 / (1.0 + math.exp(-z))
    if posterior is None:
        return round(acoustic, 4)
    return round(0.5 * acoustic + 0.5 * min(1.0, max(0.0, posterior)), 4)


def _narrowband_model_dir() -> Path:
    """A copy of the shipped acoustic model whose mel filter bank stops at 3500 Hz.

    pocketsphinx reads ``feat.params`` from the model folder and lets it override the
    configuration, so an 8 kHz front end needs its own folder: symlinks to the model files and
    a rewritten ``feat.params``. Made once per process, in a temporary folder.
    """
    global _narrowband_model
    with _model_lock:
        if _narrowband_model is None:
            import pocketsphinx

            source = Path(pocketsphinx.get_model_path()) / "en-us" / "en-us"
            target = Path(tempfile.mkdtemp(prefix="ivr-stt-8k-"))
            for item in source.iterdir():
                if item.name != "feat.params":
                    (target / item.name).symlink_to(item)
            params = (source / "feat.params").read_text()
            (target / "feat.params").write_text(re.sub(r"-upperf \S+", "-upperf 3500", params))
            _narrowband_model = target
        return _narrowband_model


def make_decoder(front_end: str, dictation: bool) -> Any:
    """A new pocketsphinx decoder for ``front_end``, with the n-gram model when ``dictation``."""
    from pocketsphinx import (  # imported late: loading the module is slow
        Config,
        Decoder,
    )

    config = Config(loglevel="FATAL")  # "final result does not match the grammar" is handled
    if FRONT_ENDS[front_end] == 8000:
        config["hmm"] = str(_narrowband_model_dir())
        config["samprate"] = 8000
        config["nfft"] = 256  # a 25.6 ms window is 205 samples at 8 kHz
    if not dictation:
        config["lm"] = None
        # measured on the menu set: the Viterbi answer beats lattice rescoring (89 % vs 83 %),
        # and 16 Gaussians per frame instead of 4 adds a point
        config["bestpath"] = False
        config["topn"] = 16
    return Decoder(config)


class SpeechRecognizer:
    """Thread-safe recogniser: decoder pools per grammar, audio conditioning, confidence."""

    def __init__(
        self,
        *,
        front_end: str = "resample",
        pool_size: int | None = None,
        max_grammars: int = 32,
        padding: float = 0.3,
        words: Mapping[str, str] | None = None,
    ) -> None:
        if front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {sorted(FRONT_ENDS)}, not {front_end!r}")
        self.front_end = front_end
        self.pool_size = max(1, int(pool_size or os.cpu_count() or 1))
        self.max_grammars = max(1, int(max_grammars))
        self.padding = float(padding)
        self.extra_words = {k.lower(): v.upper() for k, v in (words or {}).items()}
        self._pools: OrderedDict[Any, DecoderPool] = OrderedDict()
        self._lock = threading.Lock()

    # -- public API -----------------------------------------------------------------------

    def recognise(self, pcm: np.ndarray | bytes, grammar: Sequence[str] | str | None = None) -> Recognition | None:
        """Decode one 8 kHz int16 utterance; ``None`` when nothing (in the grammar) was heard.

        ``grammar``: phrases, ``"digits"`` (the text is then a digit string) or ``None``.

        Blocking and CPU-bound; safe to call from several threads at once.
        """
        samples = np.frombuffer(pcm, np.int16) if isinstance(pcm, (bytes, bytearray)) else np.asarray(pcm)
        if samples.size == 0:
            return None
        compiled = compile_grammar(grammar)
        audio = self.condition(samples)
        pool = self._pool(compiled)
        with pool.borrow() as decoder:
            decoder.start_utt()
            decoder.process_raw(audio.tobytes(), no_search=False, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            if hyp is None:
                return None
            segments = [(s.word, s.start_frame, s.end_frame, s.ascore) for s in decoder.seg()]
            posterior = float(hyp.prob) if compiled is None else None
        text = " ".join(w for w, *_ in segments if not _is_filler(w))
        text = re.sub(r"\(\d+\)", "", text)  # alternate pronunciations: "the(2)" -> "the"
        if not text:
            return None
        if compiled is not None:
            phrase = compiled.phrase_for(text)
            if phrase is None:  # the search ended outside a final state: not a full phrase
                log.debug("partial grammar match %r discarded", text)
                return None
            text = phrase
        word_scores = [(end - start + 1, ascore) for w, start, end, ascore in segments if not _is_filler(w)]
        confidence = confidence_from_scores(word_scores, posterior)
        return Recognition(text, confidence, posterior, len(audio), acoustic_log_ratio(word_scores))

    def condition(self, samples: np.ndarray) -> np.ndarray:
        """Pad, dither and (front end ``resample``) resample an 8 kHz utterance for the decoder."""
        pad = np.zeros(int(self.padding * SAMPLE_RATE), np.float32)
        signal = np.concatenate([pad, samples.astype(np.float32), pad])
        if FRONT_ENDS[self.front_end] != SAMPLE_RATE:
            signal = soxr.resample(signal, SAMPLE_RATE, FRONT_ENDS[self.front_end], quality="HQ")
        # a steady noise floor (fixed seed: the same utterance always gets the same answer);
        # near-digital silence and an empty 4-8 kHz band make the silence model swallow the
        # weak consonants ("six" heard as "two"), see docs/speech.md
        signal = signal + np.random.default_rng(0).normal(0.0, NOISE_FLOOR_RMS, signal.size).astype(np.float32)
        return np.clip(np.round(signal), -32768, 32767).astype(np.int16)

    def warm_up(self, grammar: Sequence[str] | str | None = None) -> None:
        """Create one decoder for ``grammar`` now (flows may call this at start-up)."""
        with self._pool(compile_grammar(grammar)).borrow():
            pass

    # -- pools ----------------------------------------------------------------------------

    def _pool(self, grammar: Grammar | DigitsGrammar | None) -> DecoderPool:
        key = grammar.key if grammar is not None else None
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = DecoderPool(lambda: self._new_decoder(grammar), self.pool_size)
                self._pools[key] = pool
                while len(self._pools) > self.max_grammars:
                    dropped, _ = self._pools.popitem(last=False)
                    log.debug("dropped decoder pool for grammar %r", dropped)
            self._pools.move_to_end(key)
            return pool

    def _new_decoder(self, grammar: Grammar | DigitsGrammar | None) -> Any:
        decoder = make_decoder(self.front_end, dictation=grammar is None)
        for word, phones in self.extra_words.items():
            decoder.add_word(word, phones, update=True)
        if grammar is None:
            return decoder
        for word, phones in grammar.extra_pronunciations.items():
            decoder.add_word(word, phones, update=True)
        missing = sorted(w for w in grammar.words if decoder.lookup_word(w) is None)
        if missing:
            raise ValueError(f"no pronunciation for {missing} (add them under plugins.stt.words)")
        decoder.add_jsgf_string("choices", grammar.jsgf())
        decoder.activate_search("choices")
        return decoder


def _is_filler(word: str) -> bool:
    """Silence, noise, sentence markers and grammar null transitions: ``<s>``, ``</s>``,
    ``<sil>``, ``[NOISE]``, ``+NSN+``, ``(NULL)``."""
    return word.startswith(("<", "[", "+", "("))


# -- plugin state and hooks -----------------------------------------------------------------

_DEFAULTS: dict[str, Any] = {
    "front_end": "resample",
    "pool_size": None,
    "max_grammars": 32,
    "padding": 0.3,
    "min_confidence": 0.2,
    "words": {},
}
_settings: dict[str, Any] = dict(_DEFAULTS)
_recognizer: SpeechRecognizer | None = None
_recognizer_lock = threading.Lock()


def recognizer() -> SpeechRecognizer:
    """The process-wide recogniser built from the current configuration."""
    global _recognizer
    with _recognizer_lock:
        if _recognizer is None:
            _recognizer = SpeechRecognizer(
                front_end=_settings["front_end"],
                pool_size=_settings["pool_size"],
                max_grammars=_settings["max_grammars"],
                padding=_settings["padding"],
                words=_settings["words"],
            )
        return _recognizer


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.stt``; the recogniser (and its decoders) is rebuilt on next use."""
    global _recognizer
    section = (config.get("plugins") or {}).get(NAME) or {}
    new = {key: section.get(key, default) for key, default in _DEFAULTS.items()}
    if new["front_end"] not in FRONT_ENDS:
        raise ValueError(f"plugins.stt.front_end must be one of {sorted(FRONT_ENDS)}")
    with _recognizer_lock:
        _settings.update(new)
        _recognizer = None


@hookimpl
def ivr_stt(call: Any, pcm: Any, options: dict[str, Any]) -> tuple[str, float] | None:
    """Recognise ``pcm`` (8 kHz int16) with ``options["grammar"]`` (phrases) or dictation.

    Returns ``(text, confidence)``, ``text`` being one of the grammar's phrases as given, or
    ``None`` when nothing was recognised or the confidence is under ``options["min_confidence"]``
    (default: the configured ``min_confidence``). The last result is kept in
    ``call.data["stt"]["last"]`` for tracing.
    """
    options = options or {}
    result = recognizer().recognise(pcm, options.get("grammar"))
    floor = float(options.get("min_confidence", _settings["min_confidence"]))
    if call is not None and hasattr(call, "data"):
        call.data.setdefault(NAME, {})["last"] = result
    if result is None or result.confidence < floor:
        return None
    return result.text, result.confidence
