"""In-band DTMF under speech and music (talk-down), talk-off, and the detector's cost per call per tick.

    python -m bench.dtmf_talkdown [--count 160] [--seeds 17] [--calls 250] [--ticks 500] [--baseline REV] [--rounds 3]

Builds the seeded set of tests/helpers/dtmf_talkdown.py (keys under espeak-ng speech and synthesized
music at 0 and -7 dB signal-to-interference, G.711 mu-law), prints the share of keys detected per
interferer and SIR (``--seeds``: summed over several seeded sets), the false digits on the talk-off
sets (espeak-ng speech in the 5 test voices and 8 more, raw and through G.711; music alone), and
the time ivr_audio_in takes per call per 20 ms tick on speech-like input.
With ``--baseline REV`` (a git revision, e.g. cfb054e) the cost is measured in ``--rounds``
alternating runs of that revision's ivr_plugins/dtmf.py and the current one, and the medians and
their ratio are printed: on a shared machine only interleaved runs compare.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import ivr_plugins.dtmf as dtmf_plugin  # noqa: E402
from ivr.testing import AudioRig
from tests.helpers import dtmf_talkdown as td  # noqa: E402
from tests.helpers.audio import PARAGRAPHS, VOICES, speech  # noqa: E402


def talk_off_sets() -> dict[str, list[np.ndarray]]:
    raw = [np.concatenate([speech(text, voice) for text in PARAGRAPHS]) for voice in VOICES]
    extra = [np.concatenate([speech(text, voice) for text in PARAGRAPHS]) for voice in td.TALK_OFF_EXTRA_VOICES]
    return {"speech (5 voices)": raw, "speech via G.711": [td.through_g711(x) for x in raw],
            f"speech, {len(extra)} more voices": extra, "more voices via G.711": [td.through_g711(x) for x in extra],
            "music alone": [td.music_talk_off_pcm()]}


def plugin_at(revision: str) -> object:
    """ivr_plugins/dtmf.py as it was at git ``revision``, loaded as a module of its own."""
    import importlib.util
    import subprocess
    import tempfile

    source = subprocess.run(["git", "show", f"{revision}:ivr_plugins/dtmf.py"], check=True, capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parent.parent).stdout
    path = Path(tempfile.mkdtemp(prefix="dtmf-baseline-")) / "dtmf_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("dtmf_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dtmf_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def cost_per_call_tick(calls: int, ticks: int, plugin: object = dtmf_plugin) -> float:
    """Seconds of ivr_audio_in per call per tick, every call listening, on speech + music input."""
    rig = AudioRig(("dtmf", plugin), config={"plugins": {"dtmf": {"inband": "on"}}})  # any module name
    group = [rig.call(f"c{i}") for i in range(calls)]
    source = np.concatenate([td.speech_stream(), td.music() * 32768 * 0.3])
    rng = np.random.default_rng(1)
    starts = rng.integers(0, len(source) - ticks * 160, calls)
    pcm = np.stack([source[s : s + ticks * 160] for s in starts]).astype(np.int16)
    from ivr.call import AudioBatch
    elapsed = 0.0
    for t in range(ticks):
        batch = AudioBatch(group, np.ascontiguousarray(pcm[:, t * 160 : (t + 1) * 160]), t * 0.02, t)
        began = time.perf_counter()
        plugin.ivr_audio_in(batch)
        elapsed += time.perf_counter() - began
    return elapsed / (calls * ticks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=160, help="key presses per interferer and SIR")
    parser.add_argument("--seeds", default="17", help="comma-separated seeds of the clip set (17: the tests' set; "
                        "101,102,103: the held-out set the docs report)")
    parser.add_argument("--calls", type=int, default=250)
    parser.add_argument("--ticks", type=int, default=500)
    parser.add_argument("--baseline", help="git revision whose detector the cost is compared with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print("| interferer | SIR | detected | missed | wrong |")
    print("|---|---|---|---|---|")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for kind in td.INTERFERERS:
        for sir in (0.0, -7.0):
            right = missed = wrong = 0
            for seed in seeds:
                clips = td.build_clips(kind, sir, count=args.count, seed=seed)
                s = td.score(clips, td.detect_batch(clips.pcm))
                right, missed, wrong = right + s.right, missed + s.missed, wrong + s.wrong
            s = td.Score(right, missed, wrong)
            print(f"| {kind} | {sir:g} dB | {100 * s.rate:.1f} % ({s.right}/{s.total}) | {s.missed} | {s.wrong} |")
    print()
    for name, signals in talk_off_sets().items():
        falses = "".join(td.stream_false_digits(x) for x in signals)
        seconds = sum(len(x) for x in signals) / 8000
        print(f"talk-off, {name}: {seconds:.0f} s, {len(falses)} false digits {falses!r}")
    print()
    if not args.baseline:
        cost = cost_per_call_tick(args.calls, args.ticks)
        print(f"cost: {cost * 1e6:.1f} us per call per 20 ms tick ({args.calls} calls x {args.ticks} ticks)")
        return 0
    baseline = plugin_at(args.baseline)
    runs: dict[str, list[float]] = {"baseline": [], "current": []}
    for _ in range(args.rounds):
        runs["baseline"].append(cost_per_call_tick(args.calls, args.ticks, baseline))
        runs["current"].append(cost_per_call_tick(args.calls, args.ticks))
    medians = {name: float(np.median(values)) for name, values in runs.items()}
    for name, values in runs.items():
        print(f"cost, {name}: {medians[name] * 1e6:.1f} us per call per 20 ms tick (median of "
              f"{', '.join(f'{v * 1e6:.1f}' for v in values)}; {args.calls} calls x {args.ticks} ticks)")
    print(f"cost ratio current / {args.baseline}: {medians['current'] / medians['baseline']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
