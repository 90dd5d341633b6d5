"""Media pipeline dispatch: one pluggy hook call per call per tick, against one batched call per
implementation per tick (what ``ivr.engine`` does), with the real built-in plugins.

    .venv/bin/python -m bench.dispatch_bench [--calls 100 300 1000] [--ticks 100]
        [--audio noise|speech] [--styles per-call batched] [--by-plugin]

Every call has a 30 s tone queued on the playback plugin. The caller's side carries either quiet
noise (``--audio noise``, the default: every frame is loud enough for webrtcvad and the in-band
DTMF detector listens on every call) or what the capacity benchmark's server sees
(``--audio speech``): talk spurts of band-limited noise at -20 dBFS, 1-2 s long with 0.5-2 s
pauses, each call in its own phase, and an RFC 4733 key reported on every call before the first
tick, so that ``plugins.dtmf.inband: auto`` switches the in-band detector off as on a real call.

Prints, per call count, the mean and 99th percentile of one tick's pipeline time for each style;
the budget of one tick is 20 ms on one core. ``--by-plugin`` adds the batched time of each plugin's
media hooks (both directions summed), timed one implementation at a time.
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
FRAME_SAMPLES = 160
SAMPLE_RATE = 8000
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
AUDIO_KINDS = ("noise", "speech")
STYLES = ("per-call", "batched")

SPEECH_DBFS = -20.0  # RMS of a talk spurt
LINE_NOISE_DBFS = -70.0  # RMS in the pauses: a quiet line, under the vad's level floor
SPURT_SECONDS = (1.0, 2.0)
PAUSE_SECONDS = (0.5, 2.0)
SPEECH_BAND_HZ = (300.0, 3400.0)


def make_calls(pm, count: int, audio: str = "noise") -> list[CallContext]:
    """``count`` started calls, each playing a 30 s tone; with speech audio each has also had an
    RFC 4733 key press, as the benchmark's SIPp callers send."""
    calls = []
    for index in range(count):
        call = CallContext(f"bench-{index}", pm.hook, from_user=f"u{index}", to_user="bench")
        pm.hook.ivr_call_started(call=call)
        if pm.hook.ivr_play.get_hookimpls():
            call.play(PlayItem("tone", "440", {"duration": 30}))
        if audio == "speech":
            pm.hook.ivr_dtmf_received(call=call, digit="1", source="rfc4733", duration_ms=100)
        calls.append(call)
    return calls


def noise_audio(ticks: int, count: int, seed: int = 1) -> np.ndarray:
    """Quiet white noise (about -40 dBFS) on every call: ``(ticks, count, 160)`` int16."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 300, size=(ticks, count, FRAME_SAMPLES)).astype(np.int16)


def speech_audio(ticks: int, count: int, seed: int = 1) -> np.ndarray:
    """Talk spurts and pauses, a different phase per call: ``(ticks, count, 160)`` int16.

    The spurts are white noise band-limited to the telephone band, which webrtcvad classifies as
    voiced; what matters here is the share of voiced frames and the starts and ends, not words.
    """
    rng = np.random.default_rng(seed)
    samples = ticks * FRAME_SAMPLES
    white = rng.normal(size=(count, samples))
    spectrum = np.fft.rfft(white, axis=1)
    freqs = np.fft.rfftfreq(samples, 1 / SAMPLE_RATE)
    spectrum[:, (freqs < SPEECH_BAND_HZ[0]) | (freqs > SPEECH_BAND_HZ[1])] = 0
    band = np.fft.irfft(spectrum, samples, axis=1)
    band *= 32768 * 10 ** (SPEECH_DBFS / 20) / np.sqrt(np.mean(band**2))
    gate = np.zeros((count, ticks), dtype=bool)
    for call in range(count):
        # start anywhere in a spurt-and-pause cycle, so that calls do not talk in step
        position = -int(rng.uniform(0, SPURT_SECONDS[1] + PAUSE_SECONDS[1]) / FRAME_SECONDS)
        talking = bool(rng.integers(2))
        while position < ticks:
            span = SPURT_SECONDS if talking else PAUSE_SECONDS
            length = int(rng.uniform(*span) / FRAME_SECONDS)
            gate[call, max(0, position) : max(0, position + length)] = talking
            position += length
            talking = not talking
    line_noise = rng.normal(0, 32768 * 10 ** (LINE_NOISE_DBFS / 20), size=(count, samples))
    mixed = np.where(np.repeat(gate, FRAME_SAMPLES, axis=1), band, line_noise)
    frames = np.clip(np.round(mixed), -32768, 32767).astype(np.int16)
    return frames.reshape(count, ticks, FRAME_SAMPLES).transpose(1, 0, 2).copy()


def caller_audio(kind: str, ticks: int, count: int, seed: int = 1) -> np.ndarray:
    """The caller frames of ``--audio kind``."""
    return speech_audio(ticks, count, seed) if kind == "speech" else noise_audio(ticks, count, seed)


def per_call_tick(pm, calls: list[CallContext], inbound: np.ndarray, tick: int) -> None:
    """The naive pipeline: a pluggy hook call for every call, twice per tick."""
    outbound = np.zeros_like(inbound)
    now = tick * FRAME_SECONDS
    batch_in = AudioBatch(calls, inbound, now, tick)
    batch_out = AudioBatch(calls, outbound, now, tick)
    for index in range(len(calls)):
        pm.hook.ivr_audio_in(batch=batch_in.subset(index))
    for index in range(len(calls)):
        pm.hook.ivr_audio_out(batch=batch_out.subset(index))


def make_batched_tick(pm) -> Callable[..., None]:
    """What the engine runs every tick: :class:`ivr.plugins.MediaPipeline`."""
    pipeline = MediaPipeline(pm)

    def batched_tick(_pm, calls: list[CallContext], inbound: np.ndarray, tick: int) -> None:
        pipeline.run(calls, inbound, tick * FRAME_SECONDS, tick)

    return batched_tick


class PluginTimer:
    """A batched tick that calls each media hook implementation directly, in pluggy's order, and
    adds up the time each plugin takes (``--by-plugin``)."""

    def __init__(self, pm) -> None:
        self.pm = pm
        self.seconds: dict[str, float] = {}
        self.ticks = 0

    def reset(self) -> None:
        self.seconds.clear()
        self.ticks = 0

    def __call__(self, _pm, calls: list[CallContext], inbound: np.ndarray, tick: int) -> None:
        inbound = inbound.view()
        inbound.flags.writeable = False
        now = tick * FRAME_SECONDS
        outbound = np.zeros_like(inbound)
        for hook, pcm in ((self.pm.hook.ivr_audio_in, inbound), (self.pm.hook.ivr_audio_out, outbound)):
            batch = AudioBatch(list(calls), pcm, now, tick)
            for impl in reversed(hook.get_hookimpls()):  # pluggy calls the last registered first
                started = time.perf_counter()
                impl.function(batch=batch)
                elapsed = time.perf_counter() - started
                self.seconds[impl.plugin_name] = self.seconds.get(impl.plugin_name, 0.0) + elapsed
        self.ticks += 1

    def per_tick_ms(self) -> dict[str, float]:
        return {name: total * 1000 / max(1, self.ticks) for name, total in self.seconds.items()}


def measure(style: Callable[..., None], pm, calls: list[CallContext], audio: np.ndarray,
            first_tick: int = 0) -> list[float]:
    """Run ``style`` over every tick of ``audio``; the wall time of each tick in ms."""
    timings = []
    for offset, inbound in enumerate(audio):
        started = time.perf_counter()
        style(pm, calls, inbound, first_tick + offset)
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


def _plugin_manager(noop: bool, audio: str):
    pm = make_plugin_manager(builtins=not noop, entry_points=False, environ={})
    if noop:
        pm.register(NoopPlugin(), name="noop")
    dtmf = {"inband": "auto"} if audio == "speech" else {}
    pm.hook.ivr_configure.call_historic(kwargs={"config": {"plugins": {"dtmf": dtmf}}})
    return pm


def run(call_counts: list[int], ticks: int, noop: bool = False, audio: str = "noise",
        styles: tuple[str, ...] = STYLES, by_plugin: bool = False) -> list[dict]:
    """Measure each style for each call count; one row per (count, style).

    With ``by_plugin`` each row of the batched style also holds ``plugins``: ms per tick by plugin.
    """
    rows = []
    warm_ticks = 5
    for count in call_counts:
        frames = caller_audio(audio, warm_ticks + ticks, count)
        for style_name in styles:
            pm = _plugin_manager(noop, audio)
            calls = make_calls(pm, count, audio)
            style = per_call_tick if style_name == "per-call" else make_batched_tick(pm)
            measure(style, pm, calls, frames[:warm_ticks])  # warm caches
            timings = measure(style, pm, calls, frames[warm_ticks:], warm_ticks)
            row: dict = {
                "calls": count, "style": style_name,
                "mean_ms": statistics.fmean(timings),
                "p99_ms": sorted(timings)[int(len(timings) * 0.99) - 1],
                "per_call_us": statistics.fmean(timings) * 1000 / count,
            }
            for call in calls:
                pm.hook.ivr_call_ended(call=call, reason="local_hangup")
            if by_plugin and style_name == "batched":
                # the same ticks again on fresh calls, one implementation at a time
                pm = _plugin_manager(noop, audio)
                calls = make_calls(pm, count, audio)
                timer = PluginTimer(pm)
                measure(timer, pm, calls, frames[:warm_ticks])
                timer.reset()
                measure(timer, pm, calls, frames[warm_ticks:], warm_ticks)
                row["plugins"] = timer.per_tick_ms()
                for call in calls:
                    pm.hook.ivr_call_ended(call=call, reason="local_hangup")
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--noop", action="store_true", help="one no-op plugin instead of the built-ins")
    parser.add_argument("--audio", choices=AUDIO_KINDS, default="noise",
                        help="caller audio: quiet noise, or talk spurts with RFC 4733 keys")
    parser.add_argument("--styles", choices=STYLES, nargs="+", default=list(STYLES))
    parser.add_argument("--by-plugin", action="store_true", help="batched time of each plugin")
    args = parser.parse_args()
    pm = _plugin_manager(args.noop, args.audio)
    plugins = sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None)
    print(f"plugins: {', '.join(plugins) or 'none'}; audio {args.audio}; {args.ticks} ticks; "
          f"budget {TICK_BUDGET_MS} ms/tick")
    print(f"{'calls':>6} {'style':>18} {'mean ms/tick':>13} {'p99 ms/tick':>12} {'us/call':>8}")
    for row in run(args.calls, args.ticks, args.noop, args.audio, tuple(args.styles), args.by_plugin):
        print(f"{row['calls']:>6} {row['style']:>18} {row['mean_ms']:>13.2f} {row['p99_ms']:>12.2f} "
              f"{row['per_call_us']:>8.1f}")
        for name, ms in sorted(row.get("plugins", {}).items(), key=lambda item: -item[1]):
            print(f"{'':>6} {name:>18} {ms:>13.2f} {'':>12} {ms * 1000 / row['calls']:>8.2f}")


if __name__ == "__main__":
    main()
