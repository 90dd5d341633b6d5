"""How the kernel schedules ``ivr serve`` under load: CPU, waiting in the run queue, late clock firings.

    python -m bench.sched_probe --calls 500 --seconds 15 [--priority realtime] [--runs 3] [--rate 100]
                                [--caller-media pcap]

Holds ``--calls`` SIPp calls on a server (as :mod:`bench.profile_server` does) and reads, over
``--seconds`` of the steady state: the server's ``/proc/<pid>/schedstat`` (time on a CPU, time
ready but waiting for one, times scheduled in), its user and system time, the machine's CPU
split from ``/proc/stat``, and the media clock's late firings (over 10 ms) from its metrics. It
tells "our work is too slow" (CPU) from "we were ready but not running" (run-queue wait); figures
in docs/performance.md, "Round 4" and "Round 5".
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from bench.media import CALLER_MEDIA_MODES
from bench.profile_server import server_under_load
from ivr.priority import PRIORITIES

#: /proc/stat cpu line fields: user nice system idle iowait irq softirq steal
_USER, _NICE, _SYSTEM, _IDLE, _SOFTIRQ = 0, 1, 2, 3, 6


def schedstat(pid: int) -> tuple[float, float, int]:
    """(seconds on a CPU, seconds waiting in the run queue, times scheduled in) of ``pid``'s main thread."""
    on_cpu, waiting, slices = open(f"/proc/{pid}/schedstat").read().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9, int(slices)


def user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` (all threads)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def machine_jiffies() -> list[int]:
    return [int(v) for v in open("/proc/stat").readline().split()[1:]]


def measure(calls: int, seconds: float, priority: str, rate: float = 100.0, caller_media: str = "stream") -> str:
    """One run (calls placed at ``rate`` per second): a line of figures."""
    with server_under_load(calls, seconds, priority=priority, rate=rate, caller_media=caller_media) as server:
        pid = server.pid
        clock0, sched0, times0, box0, start = (server.server_metrics(), schedstat(pid), user_system(pid),
                                                machine_jiffies(), time.monotonic())
        time.sleep(seconds)
        clock1, sched1, times1, box1, wall = (server.server_metrics(), schedstat(pid), user_system(pid),
                                              machine_jiffies(), time.monotonic() - start)
    share = lambda a, b: 100.0 * (b - a) / wall  # noqa: E731 - % of one core
    box = [b - a for a, b in zip(box0, box1)]
    cores = 100.0 * (os.cpu_count() or 1) / (sum(box) or 1)
    late = "-"
    if clock0 and clock1:
        late = f"{clock1['late_firings'] - clock0['late_firings']:.0f} of {clock1['firings'] - clock0['firings']:.0f}"
    return (f"server {share(sched0[0], sched1[0]):.1f} % of a core (user {share(times0[0], times1[0]):.1f}, "
            f"system {share(times0[1], times1[1]):.1f}), run-queue wait {share(sched0[1], sched1[1]):.1f} %, "
            f"{(sched1[2] - sched0[2]) / wall:.0f} slices/s; box user {cores * (box[_USER] + box[_NICE]):.0f} "
            f"system {cores * box[_SYSTEM]:.0f} softirq {cores * box[_SOFTIRQ]:.0f} idle {cores * box[_IDLE]:.0f} "
            f"(of {100 * (os.cpu_count() or 1)}); late firings {late}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring time per run")
    parser.add_argument("--priority", choices=PRIORITIES, default="normal")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rate", type=float, default=100.0, help="calls placed per second while ramping up")
    parser.add_argument("--caller-media", choices=CALLER_MEDIA_MODES, default="stream",
                        help="how SIPp sends the callers' media (bench/media.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for run in range(args.runs):
        figures = measure(args.calls, args.seconds, args.priority, args.rate, args.caller_media)
        print(f"run {run + 1}, {args.calls} calls, priority {args.priority}, caller media {args.caller_media}: "
              f"{figures}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
