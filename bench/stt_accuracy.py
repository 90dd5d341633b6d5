"""Accuracy of the stt plugin on menu phrases spoken by espeak-ng voices over G.711.

    python -m bench.stt_accuracy [--front-end resample|narrowband] [--quick] [--calibrate]

Builds the test set of tests/helpers/speech_corpus.py (every menu phrase x voice x speed, clean and with
white noise at 20 dB SNR, mu-law round trip), recognises each utterance with the menu grammar
and prints the accuracy per voice, per speed, per noise level and overall. ``--calibrate`` also
decodes out-of-grammar phrases and prints the acoustic log ratio (see
``ivr_plugins.stt.confidence_from_scores``) of right, wrong and out-of-grammar answers.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from ivr_plugins.stt import Recognition, SpeechRecognizer  # noqa: E402
from tests.helpers.speech_corpus import (  # noqa: E402
    MENU_PHRASES,
    SPEEDS,
    VOICES,
    Utterance,
    build_corpus,
)

#: Things callers say that no menu expects, for calibrating the confidence.
OUT_OF_GRAMMAR = ("pizza", "hello there", "weather forecast", "my account number", "cancel it")


def recognise_all(recognizer: SpeechRecognizer, corpus: list[Utterance], grammar: list[str],
                  workers: int) -> list[Recognition | None]:
    """Recognise every utterance with ``grammar``, ``workers`` threads at once."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda u: recognizer.recognise(u.pcm, grammar), corpus))


def accuracy_table(corpus: list[Utterance], results: list[Recognition | None]) -> dict[str, dict[str, float]]:
    """Accuracy by voice, speed and noise level, and overall."""
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for utterance, result in zip(corpus, results):
        right = result is not None and result.text == utterance.phrase
        noise = "clean" if utterance.snr_db is None else f"{utterance.snr_db:g} dB SNR"
        groups["voice"][utterance.voice].append(right)
        groups["speed"][f"{utterance.speed} wpm"].append(right)
        groups["noise"][noise].append(right)
        groups["overall"]["all"].append(right)
    return {group: {name: float(np.mean(values)) for name, values in rows.items()} for group, rows in groups.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--front-end", default="resample", choices=("resample", "narrowband"))
    parser.add_argument("--quick", action="store_true", help="3 voices, one speed")
    parser.add_argument("--calibrate", action="store_true", help="print acoustic log ratios (confidence calibration)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    voices, speeds = (VOICES[:3], (160,)) if args.quick else (VOICES, SPEEDS)
    started = time.perf_counter()
    corpus = build_corpus(voices=voices, speeds=speeds)
    built = time.perf_counter()
    recognizer = SpeechRecognizer(front_end=args.front_end, pool_size=args.workers)
    grammar = list(MENU_PHRASES)
    results = recognise_all(recognizer, corpus, grammar, args.workers)
    decoded = time.perf_counter()

    print(f"front end {args.front_end}: {len(corpus)} utterances ({len(grammar)} phrases, "
          f"{len(voices)} voices, {len(speeds)} speeds, clean + 20 dB SNR, G.711 mu-law)")
    table = accuracy_table(corpus, results)
    for group in ("voice", "speed", "noise", "overall"):
        for name, rate in table[group].items():
            print(f"  {group:8s} {name:16s} {rate:7.1%}")
    audio_seconds = sum(u.pcm.size for u in corpus) / 8000
    print(f"synthesis {built - started:.1f} s; decoding {decoded - built:.1f} s for {audio_seconds:.0f} s "
          f"of audio on {args.workers} threads")
    misses = [(u, r) for u, r in zip(corpus, results) if r is None or r.text != u.phrase]
    for utterance, result in misses[:20]:
        print(f"  miss {utterance.condition:26s} {utterance.phrase!r} -> {result.text if result else None!r}")

    if args.calibrate:
        oog = build_corpus(phrases=OUT_OF_GRAMMAR, voices=voices, speeds=speeds)
        oog_results = recognise_all(recognizer, oog, grammar, args.workers)
        right = [r.log_ratio for u, r in zip(corpus, results) if r and r.text == u.phrase]
        wrong = [r.log_ratio for u, r in zip(corpus, results) if r and r.text != u.phrase]
        outside = [r.log_ratio for r in oog_results if r]
        for name, values in (("right", right), ("wrong", wrong), ("out of grammar", outside)):
            if values:
                q = np.percentile(values, [10, 50, 90])
                print(f"  log ratio {name:15s} n={len(values):4d} p10={q[0]:.3f} p50={q[1]:.3f} p90={q[2]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
