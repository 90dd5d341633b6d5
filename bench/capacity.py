"""The capacity benchmark: steps of concurrent calls against a system under test, to the knee.

One step at ``N`` calls: SIPp places ``N`` calls (ramped at ``ramp_rate`` calls/s) that each hold
``hold`` seconds while sending the caller's media (speech + an RFC 4733 key every 3 s, see
:mod:`bench.media`), alongside ``probes`` measuring calls (:mod:`bench.probe`) placed once the
ramp is done. Measured:

* calls completed / failed: SIPp's counters plus the probes';
* loss towards the server: the server's own receive statistics of each ended call (lost /
  expected), and the kernel's receive-buffer drops on its RTP sockets (:mod:`bench.procstats`);
* loss from the server (sequence gaps), frames it did not send in real time (the time span of
  the stream in 20 ms frames minus the packets received: skipped clock ticks or a slow clock), and
  its send-interval error: from the probes (or, for a system that sends
  to the SDP address, an :class:`~bench.probe.RtpSink` that receives every call's stream);
* reaction time: a key's first end packet to the first frame without the menu tone (probes);
* CPU of the server (summed over its worker processes), of a signalling proxy in front of them
  (Kamailio, for a cluster), of SIPp and of the whole box (other work shares the 2 cores), the
  1-minute load average just before the step (how busy the box already was), and memory per call
  (RSS growth over the idle server / N);
* media clock ticks the server dropped during the step (overload) and the key presses it
  reported against those sent (from its metrics endpoint).

A step is *healthy* when no call failed, loss is under ``max_loss`` both ways and the server
reported every key press sent (within ``max_loss``; a system without metrics is not asked), and
*passes* when it is healthy and the p99 send-interval error is under ``max_p99_ms`` too. Steps go
on past a step that only misses the timing criterion (so the table still shows where calls start
to fail) and stop after the first step that is not healthy: past the knee.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench import media
from bench.probe import ProbeCall, ProbeResult, RtpSink
from bench.procstats import (
    MACHINE,
    CpuWindow,
    GroupCpuWindow,
    UdpDropCounter,
    rss_bytes,
)
from bench.sipp_driver import fill_scenario, read_outcome, start_sipp

log = logging.getLogger(__name__)


SETUP_HOLD = 0.5  # seconds the short calls of the set-up rate test last


class SystemUnderTest(Protocol):
    name: str
    sip_port: int
    rtp_range: tuple[int, int]

    @property
    def pid(self) -> int: ...
    @property
    def workers(self) -> list[tuple[int, tuple[int, int]]]: ...  # (pid, RTP port range) each
    @property
    def proxy_pids(self) -> list[int]: ...
    def ended_call_stats(self) -> list[dict[str, Any]]: ...
    def server_metrics(self) -> dict[str, float] | None: ...


@dataclass
class StepSettings:
    """How each step is run and judged."""

    hold: float = 30.0  # seconds each call lasts
    ramp_rate: float = 100.0  # calls/s while a step ramps up
    probes: int = 4  # measuring calls per step (0 with an RTP sink)
    max_loss: float = 0.001  # 0.1 %
    max_p99_ms: float = 10.0
    sink: bool = False  # the system sends to the SDP address: measure every call with a sink
    caller_media: str = "stream"  # how SIPp sends the callers' media (bench.media.CALLER_MEDIA_MODES)


@dataclass
class StepResult:
    """One row of the results table."""

    system: str
    flow: str
    calls: int
    completed: int = 0
    failed: int = 0
    loss_in_pct: float | None = None  # towards the server, its own statistics
    kernel_drops_in: int = 0  # receive-buffer drops on the server's RTP sockets
    loss_out_pct: float | None = None  # from the server, measured at the receiver (sequence gaps)
    late_out_pct: float | None = None  # 20 ms frames not sent in real time (skipped ticks, slow clock)
    send_p50_ms: float | None = None  # |interval - 20 ms|
    send_p99_ms: float | None = None
    reaction_p50_ms: float | None = None
    reaction_p99_ms: float | None = None
    dropped_ticks: int | None = None  # media clock ticks dropped (overload), all workers
    late_firings_pct: float | None = None  # media clock firings > 10 ms late, of all firings
    keys_sent: int = 0  # RFC 4733 key presses of the calls that completed (SIPp's and the probes')
    keys_heard_pct: float | None = None  # key presses the server reported, of keys_sent
    server_cpu_pct: float | None = None  # of one core, summed over the workers
    proxy_cpu_pct: float | None = None  # Kamailio in front of the workers (all its processes)
    proxy_ms_per_call: float | None = None  # Kamailio CPU over the whole step (set-up, teardown) / call
    sipp_cpu_pct: float | None = None
    machine_cpu_pct: float | None = None  # every process on the box (others' tests included)
    load_before: float | None = None  # 1-minute load average just before the step
    rss_mb: float | None = None
    kb_per_call: float | None = None
    healthy: bool = False  # no failed call and loss under the limit both ways (timing aside)
    passed: bool = False  # healthy and the p99 send-interval error under its limit
    notes: str = ""

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _StepWork:
    keys_per_call: int  # key presses each SIPp call sends
    probe_results: list[ProbeResult] = field(default_factory=list)
    probe_keys: int = 0  # key presses each probe call sends
    peak_rss: int = 0
    metrics: dict[str, float] | None = None  # the server's counters over the step (None: no metrics)


def run_step(system: SystemUnderTest, flow: str, calls: int, settings: StepSettings, folder: Path,
             idle_rss: int, sink: RtpSink | None = None, sipp_local_port: int = 0) -> StepResult:
    """Run one step of ``calls`` concurrent calls (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = StepResult(system.name, flow, calls)
    caller_media = media.write_caller_media(folder, settings.hold, settings.caller_media)
    packets_per_call = caller_media.packets_per_call
    keys_per_call = len(media.digit_schedule(settings.hold))
    scenario = fill_scenario("uac_bench.xml", folder, int(settings.hold * 1000), caller_media,
                             sdp_media_port=sink.port if sink else None)
    result.load_before = os.getloadavg()[0]
    drops = _DropCounters([UdpDropCounter(pid, *ports) for pid, ports in system.workers])
    drops.reset()
    system.ended_call_stats()  # forget calls of earlier steps
    metrics_before = system.server_metrics()
    if sink is not None:
        sink.take()
    server_cpu = GroupCpuWindow([pid for pid, _ in system.workers])
    # The proxy only works while calls are set up and torn down, which the steady-state window
    # leaves out: its cost is taken over the whole step, per call.
    proxy_total = GroupCpuWindow(system.proxy_pids)
    proxy_total.start()
    ramp = calls / settings.ramp_rate
    sipp = start_sipp(scenario, ("127.0.0.1", system.sip_port), calls, settings.ramp_rate, folder,
                      local_port=sipp_local_port, timeout_s=int(settings.hold + ramp + 120))
    try:
        result = _measure_step(system, calls, settings, sipp, result, ramp, drops, server_cpu, sink,
                               packets_per_call, _StepWork(keys_per_call), metrics_before, idle_rss, folder)
        if proxy_total.windows:
            proxy_total.stop()
            result.proxy_ms_per_call = proxy_total.cpu_seconds * 1000 / calls
        return result
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()


class _DropCounters:
    """Kernel receive-buffer drops summed over the RTP sockets of every worker."""

    def __init__(self, counters: list[UdpDropCounter]) -> None:
        self.counters = counters

    def reset(self) -> None:
        for counter in self.counters:
            counter.reset()

    def poll(self) -> None:
        for counter in self.counters:
            counter.poll()

    @property
    def drops(self) -> int:
        return sum(counter.drops for counter in self.counters)


def _worker_rss(system: SystemUnderTest) -> int:
    return sum(rss_bytes(pid) or 0 for pid, _ in system.workers)


def _measure_step(system: SystemUnderTest, calls: int, settings: StepSettings, sipp: Any,
                  result: StepResult, ramp: float, drops: _DropCounters, server_cpu: GroupCpuWindow,
                  sink: RtpSink | None, packets_per_call: int, work: _StepWork,
                  metrics_before: dict[str, float] | None, idle_rss: int, folder: Path) -> StepResult:
    sipp_cpu = CpuWindow(sipp.pid)
    machine_cpu = CpuWindow(MACHINE)
    time.sleep(min(ramp + 1.0, settings.hold / 2))
    # Steady state: every call is up. CPU is measured over the middle of the hold.
    proxy_cpu = GroupCpuWindow(system.proxy_pids) if system.proxy_pids else None
    for window in (server_cpu, sipp_cpu, machine_cpu, proxy_cpu):
        if window is not None:
            window.start()
    probe_threads = _start_probes(system, settings, work, calls)
    measure_until = time.monotonic() + max(1.0, settings.hold - ramp - 3.0)
    while time.monotonic() < measure_until and sipp.poll() is None:
        drops.poll()
        work.peak_rss = max(work.peak_rss, _worker_rss(system))
        time.sleep(0.5)
    result.server_cpu_pct = server_cpu.stop()
    result.proxy_cpu_pct = proxy_cpu.stop() if proxy_cpu is not None else None
    result.sipp_cpu_pct = sipp_cpu.stop()
    result.machine_cpu_pct = machine_cpu.stop()
    while sipp.poll() is None:
        drops.poll()
        time.sleep(0.5)
    for thread in probe_threads:
        thread.join(settings.hold + 30)
    time.sleep(1.0)  # let the last calls' "ended" lines reach the log
    drops.poll()
    outcome = read_outcome(folder, sipp.returncode)
    metrics_after = system.server_metrics()
    if metrics_before is not None and metrics_after is not None:
        work.metrics = {key: metrics_after[key] - metrics_before[key] for key in metrics_after}
    _fill(result, outcome, work, system.ended_call_stats(), sink.take() if sink else None,
          drops.drops, packets_per_call, idle_rss, settings)
    log.info("%s %s %d calls: %s", system.name, result.flow, calls, _summary(result))
    return result


def _start_probes(system: SystemUnderTest, settings: StepSettings, work: _StepWork,
                  calls: int) -> list[threading.Thread]:
    if settings.sink or settings.probes <= 0:
        return []
    hold = max(4.0, settings.hold / 2)
    stream = media.caller_stream(hold, media.digit_schedule(hold, first=1.5, every=2.5))
    work.probe_keys = sum(1 for packet in stream if packet.digit_end)
    threads = []
    for n in range(settings.probes):
        probe = ProbeCall(("127.0.0.1", system.sip_port), stream, hold)

        def run(probe: ProbeCall = probe) -> None:
            work.probe_results.append(probe.run())

        thread = threading.Thread(target=run, name=f"probe-{n}", daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(0.13)  # spread them over the media clock's period
    return threads


def _fill(result: StepResult, outcome: Any, work: _StepWork, server_stats: list[dict[str, Any]],
          sink_result: ProbeResult | None, kernel_drops: int, packets_per_call: int,
          idle_rss: int, settings: StepSettings) -> None:
    probes = work.probe_results
    result.completed = outcome.successful + sum(1 for p in probes if p.answered and not p.error)
    result.failed = outcome.failed + sum(1 for p in probes if p.error)
    missing = result.calls - outcome.successful - outcome.failed
    if missing > 0:  # SIPp was stopped (global timeout) before it could place or end them
        result.failed += missing
    expected = sum(s.get("expected", 0) for s in server_stats)
    if expected:
        lost = sum(max(0, s.get("lost", 0)) for s in server_stats)
        result.loss_in_pct = 100.0 * lost / expected
    elif kernel_drops or outcome.successful:  # no server statistics: the kernel's count
        sent = outcome.successful * packets_per_call
        result.loss_in_pct = 100.0 * kernel_drops / sent if sent else None
    result.kernel_drops_in = kernel_drops
    measured = [sink_result] if sink_result is not None else [p for p in probes if p.answered]
    received = sum(p.received for p in measured)
    expected_out = sum(p.expected for p in measured)
    if expected_out:
        result.loss_out_pct = 100.0 * max(0, expected_out - received) / expected_out
    by_time = sum(p.expected_by_time for p in measured)
    if by_time:
        result.late_out_pct = 100.0 * max(0, by_time - received) / by_time
    intervals = np.concatenate([np.asarray(p.intervals_ms) for p in measured]) if measured else np.array([])
    if intervals.size:
        error = np.abs(intervals - 20.0)
        result.send_p50_ms, result.send_p99_ms = (float(v) for v in np.percentile(error, [50, 99]))
    reactions = [r for p in measured for r in p.reactions_ms]
    if reactions:
        result.reaction_p50_ms, result.reaction_p99_ms = (float(v) for v in np.percentile(reactions, [50, 99]))
    if work.peak_rss:
        result.rss_mb = work.peak_rss / 2**20
        result.kb_per_call = max(0, work.peak_rss - idle_rss) / 1024 / result.calls
    result.keys_sent = outcome.successful * work.keys_per_call + work.probe_keys * sum(
        1 for p in probes if p.answered and not p.error)
    if work.metrics is not None:
        result.dropped_ticks = int(work.metrics["dropped_ticks"])
        firings = work.metrics["firings"]
        result.late_firings_pct = 100.0 * work.metrics["late_firings"] / firings if firings else None
        if result.keys_sent:
            result.keys_heard_pct = 100.0 * work.metrics["keys"] / result.keys_sent
    result.healthy = (
        result.failed == 0
        # a key press lost (or reported twice) counts like a lost packet
        and (result.keys_heard_pct is None or abs(result.keys_heard_pct - 100.0) < settings.max_loss * 100)
        and (result.loss_in_pct or 0.0) < settings.max_loss * 100
        and result.loss_out_pct is not None and result.loss_out_pct < settings.max_loss * 100
    )
    result.passed = result.healthy and result.send_p99_ms is not None and result.send_p99_ms < settings.max_p99_ms
    if outcome.exit_status not in (0, None):
        result.notes = f"sipp exit {outcome.exit_status}"


def _summary(result: StepResult) -> str:
    def show(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:.3g}{unit}"

    return (f"ok {result.completed} failed {result.failed} loss in {show(result.loss_in_pct, '%')} "
            f"out {show(result.loss_out_pct, '%')} send p99 {show(result.send_p99_ms, 'ms')} "
            f"reaction p50 {show(result.reaction_p50_ms, 'ms')} cpu {show(result.server_cpu_pct, '%')} "
            f"{'PASS' if result.passed else 'healthy' if result.healthy else 'FAIL'}")


def run_steps(system: SystemUnderTest, flow: str, steps: list[int], settings: StepSettings,
              folder: Path, sipp_local_port: int = 0) -> list[StepResult]:
    """Every step in order until the first that is not healthy (included: it shows the knee)."""
    results: list[StepResult] = []
    idle_rss = _worker_rss(system)
    sink = RtpSink() if settings.sink else None
    try:
        for calls in steps:
            step = run_step(system, flow, calls, settings, folder / f"{system.name.replace(' ', '_')}-{flow}-{calls}",
                            idle_rss, sink, sipp_local_port)
            results.append(step)
            if not step.healthy:
                break
            time.sleep(2.0)  # calls of this step are gone before the next one starts
    finally:
        if sink is not None:
            sink.stop()
    return results


@dataclass
class SetupRateResult:
    """Short calls at one offered rate."""

    system: str
    offered_cps: float
    completed: int
    failed: int
    achieved_cps: float
    answer_ms: float  # mean INVITE -> 200 OK
    server_cpu_pct: float | None
    passed: bool
    proxy_cpu_pct: float | None = None  # Kamailio in front of the workers


def run_setup_rates(system: SystemUnderTest, rates: list[float], seconds: float, folder: Path,
                    sipp_local_port: int = 0) -> list[SetupRateResult]:
    """Short calls (INVITE, 0.5 s, BYE) at each rate for ``seconds``, until one has failures."""
    results: list[SetupRateResult] = []
    for rate in rates:
        step_dir = folder / f"{system.name.replace(' ', '_')}-setup-{rate:g}"
        step_dir.mkdir(parents=True, exist_ok=True)
        scenario = fill_scenario("uac_short.xml", step_dir, int(SETUP_HOLD * 1000))
        calls = max(1, math.ceil(rate * seconds))
        cpu = GroupCpuWindow([pid for pid, _ in system.workers])
        proxy_cpu = GroupCpuWindow(system.proxy_pids)
        cpu.start()
        proxy_cpu.start()
        started = time.monotonic()
        sipp = start_sipp(scenario, ("127.0.0.1", system.sip_port), calls, rate, step_dir,
                          local_port=sipp_local_port, timeout_s=int(seconds * 3 + 60))
        try:
            sipp.wait()
        finally:
            if sipp.poll() is None:
                sipp.kill()
        elapsed = time.monotonic() - started
        outcome = read_outcome(step_dir, sipp.returncode)
        busy = cpu.stop()
        proxy_busy = proxy_cpu.stop() if proxy_cpu.windows else None
        failed = outcome.failed + max(0, calls - outcome.successful - outcome.failed)
        # Throughput: the calls over the time SIPp spent placing them, that is the run less one
        # mean call (the last call's answer, hold and BYE), so a slow but steady answer is no
        # penalty; one that falls behind stretches the run.
        achieved = outcome.successful / max(elapsed - outcome.call_length, 1e-3)
        passed = failed == 0 and achieved >= 0.9 * rate
        results.append(SetupRateResult(system.name, rate, outcome.successful, failed, achieved,
                                       outcome.answer_time * 1000, busy, passed, proxy_busy))
        log.info("%s set-up %g cps: ok %d failed %d achieved %.1f cps, answer %.0f ms, cpu %s",
                 system.name, rate, outcome.successful, failed, achieved, outcome.answer_time * 1000, busy)
        system.ended_call_stats()
        time.sleep(1.0)
        if not passed:
            break
    return results
