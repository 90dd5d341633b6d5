"""G.711 throughput: simplesip's numpy tables against CPython's audioop, in one run.

    python -m bench.g711_bench [--seconds-of-audio 60] [--repeat 5]

Prints samples per second for each direction and law, for the bytes API (one call per buffer,
as the SimpleSIPClient path uses it) and the batch API (an (N, 160) block, as the media clock
decodes all calls of one tick at once), and the ratio to audioop. Best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Callable

import numpy as np

from simplesip.wire import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def _best_rate(fn: Callable[[], object], samples: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return samples / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds-of-audio", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    samples = int(args.seconds_of_audio * 8000) // 160 * 160
    rng = np.random.default_rng(0)
    pcm_array = (rng.standard_normal(samples) * 4000).clip(-32768, 32767).astype("<i2")
    pcm = pcm_array.tobytes()
    batch = pcm_array.reshape(-1, 160)  # one row per call-frame, as in a media clock tick
    ulaw, alaw = g711.pcm_to_ulaw(pcm), g711.pcm_to_alaw(pcm)
    ulaw_batch = np.frombuffer(ulaw, np.uint8).reshape(-1, 160)
    alaw_batch = np.frombuffer(alaw, np.uint8).reshape(-1, 160)

    cases = [
        ("encode u-law", lambda: g711.pcm_to_ulaw(pcm), lambda: g711.encode(batch, "PCMU"),
         lambda: audioop.lin2ulaw(pcm, 2)),
        ("encode A-law", lambda: g711.pcm_to_alaw(pcm), lambda: g711.encode(batch, "PCMA"),
         lambda: audioop.lin2alaw(pcm, 2)),
        ("decode u-law", lambda: g711.ulaw_to_pcm(ulaw), lambda: g711.decode(ulaw_batch, "PCMU"),
         lambda: audioop.ulaw2lin(ulaw, 2)),
        ("decode A-law", lambda: g711.alaw_to_pcm(alaw), lambda: g711.decode(alaw_batch, "PCMA"),
         lambda: audioop.alaw2lin(alaw, 2)),
    ]
    print(f"G.711 throughput over {samples / 8000:.0f} s of audio ({samples} samples), best of {args.repeat}")
    headings = ("bytes API", "batch API", "audioop")
    print(f"{'':14}" + "".join(f"{h:>16}" for h in headings) + f"{'bytes/audioop':>15}{'batch/audioop':>15}")
    for name, ours_bytes, ours_batch, reference in cases:
        rate_bytes = _best_rate(ours_bytes, samples, args.repeat)
        rate_batch = _best_rate(ours_batch, samples, args.repeat)
        rate_ref = _best_rate(reference, samples, args.repeat)
        print(f"{name:14}{rate_bytes / 1e6:13.1f} M/s{rate_batch / 1e6:13.1f} M/s{rate_ref / 1e6:13.1f} M/s"
              f"{rate_bytes / rate_ref:14.2f}x{rate_batch / rate_ref:14.2f}x")
    # Per 20 ms frame, one call each: Python call overhead dominates here, not the lookup.
    frames = [pcm[i : i + 320] for i in range(0, min(len(pcm), 320 * 2000), 320)]
    frame_samples = 160 * len(frames)
    ours = _best_rate(lambda: [g711.pcm_to_ulaw(f) for f in frames], frame_samples, args.repeat)
    ref = _best_rate(lambda: [audioop.lin2ulaw(f, 2) for f in frames], frame_samples, args.repeat)
    print(f"{'u-law 160/call':14}{ours / 1e6:13.1f} M/s{'':16}{ref / 1e6:13.1f} M/s{ours / ref:14.2f}x"
          "   (why the media clock encodes a whole tick as one batch)")
    # Real-time capacity: how many 8 kHz calls one core could encode + decode (codec work only).
    per_call = 2 * 8000 / min(_best_rate(cases[0][2], samples, 1), _best_rate(cases[2][2], samples, 1))
    print(f"codec CPU per call (encode+decode, batch API): {per_call * 100:.4f} % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
