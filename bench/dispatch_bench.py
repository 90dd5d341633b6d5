"""Media pipeline dispatch: one pluggy hook call per call per tick, against one batched call per
implementation per tick (what ``ivr.engine`` does), with the real built-in plugins.

    .venv/bin/python -m bench.dispatch_bench [--calls 100 300 1000] [--ticks 100]

Every call has a 30 s tone queued on the playback plugin, and the caller's side carries quiet
noise, so vad, dtmf (in-band detector), playback and recording all do their per-frame work.
Prints, per call count, the mean and 99th percentile of one tick's pipeline time for each style;
the budget of one tick is 20 ms on one core.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

from ivr import hookimpl
from ivr.call import AudioBatch, CallContext, PlayItem
from ivr.plugins import MediaPipeline, make_plugin_manager

TICK_BUDGET_MS = 20.0


def make_calls(pm, count: int) -> list[CallContext]:
    calls = []
    for index in range(count):
        call = CallContext(f"bench-{index}", pm.hook, from_user=f"u{index}", to_user="bench")
        pm.hook.ivr_call_started(call=call)
        if pm.hook.ivr_play.get_hookimpls():
            call.play(PlayItem("tone", "440", {"duration": 30}))
        calls.append(call)
    return calls


def per_call_tick(pm, calls: list[CallContext], inbound: np.ndarray, tick: int) -> None:
    """The naive pipeline: a pluggy hook call for every call, twice per tick."""
    outbound = np.zeros_like(inbound)
    batch_in = AudioBatch(calls, inbound, 0.0, tick)
    batch_out = AudioBatch(calls, outbound, 0.0, tick)
    for index in range(len(calls)):
        pm.hook.ivr_audio_in(batch=batch_in.subset(index))
    for index in range(len(calls)):
        pm.hook.ivr_audio_out(batch=batch_out.subset(index))


def make_batched_tick(pm) -> Callable[..., None]:
    """What the engine runs every tick: :class:`ivr.plugins.MediaPipeline`."""
    pipeline = MediaPipeline(pm)

    def batched_tick(_pm, calls: list[CallContext], inbound: np.ndarray, tick: int) -> None:
        pipeline.run(calls, inbound, 0.0, tick)

    return batched_tick


def measure(style: Callable[..., None], pm, calls: list[CallContext], ticks: int) -> list[float]:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 300, size=(ticks, len(calls), 160)).astype(np.int16)
    timings = []
    for tick in range(ticks):
        started = time.perf_counter()
        style(pm, calls, noise[tick], tick)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


class NoopPlugin:
    """Does nothing: isolates the cost of dispatch itself (``--noop``)."""

    @hookimpl
    def ivr_audio_in(self, batch: AudioBatch) -> None:
        pass

    @hookimpl
    def ivr_audio_out(self, batch: AudioBatch) -> None:
        pass


def run(call_counts: list[int], ticks: int, noop: bool = False) -> list[dict[str, float]]:
    """Measure both styles for each call count; one row per (count, style)."""
    rows = []
    for count in call_counts:
        for style_name in ("per-call", "batched"):
            pm = make_plugin_manager(builtins=not noop, entry_points=False, environ={})
            if noop:
                pm.register(NoopPlugin(), name="noop")
            pm.hook.ivr_configure.call_historic(kwargs={"config": {"plugins": {}}})
            calls = make_calls(pm, count)
            style = per_call_tick if style_name == "per-call" else make_batched_tick(pm)
            measure(style, pm, calls, 5)  # warm caches
            timings = measure(style, pm, calls, ticks)
            for call in calls:
                pm.hook.ivr_call_ended(call=call, reason="local_hangup")
            rows.append({
                "calls": count, "style": style_name,
                "mean_ms": statistics.fmean(timings),
                "p99_ms": sorted(timings)[int(len(timings) * 0.99) - 1],
                "per_call_us": statistics.fmean(timings) * 1000 / count,
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--noop", action="store_true", help="one no-op plugin instead of the built-ins")
    args = parser.parse_args()
    pm = make_plugin_manager(builtins=not args.noop, entry_points=False, environ={})
    if args.noop:
        pm.register(NoopPlugin(), name="noop")
    plugins = sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None)
    print(f"plugins: {', '.join(plugins) or 'none'}; {args.ticks} ticks; budget {TICK_BUDGET_MS} ms/tick")
    print(f"{'calls':>6} {'style':>9} {'mean ms/tick':>13} {'p99 ms/tick':>12} {'us/call':>8}")
    for row in run(args.calls, args.ticks, args.noop):
        print(f"{row['calls']:>6} {row['style']:>9} {row['mean_ms']:>13.2f} {row['p99_ms']:>12.2f} "
              f"{row['per_call_us']:>8.1f}")


if __name__ == "__main__":
    main()
