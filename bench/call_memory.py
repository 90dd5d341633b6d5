"""Where a call's memory goes in ``ivr serve``: RSS and tracemalloc with N calls against none.

Every figure is per call up at the measurement (the server's live ``Dialog`` objects).

    python -m bench.call_memory --calls 300 [--top 25] [--no-trace]

Starts ``ivr serve`` with the benchmark flow (prompt, DTMF menu, VAD on every call: the capacity
benchmark's server), under tracemalloc (``--frames`` frames a trace) unless ``--no-trace``, then
holds ``--calls`` SIPp calls (the capacity benchmark's caller stream). The server dumps a
tracemalloc snapshot on SIGUSR1 (the launcher below); one is taken before the calls, one once they
are all up and past their first seconds of media. The report: RSS growth per call (measured
separately with ``--no-trace``: tracing inflates RSS) and the allocation sites whose live memory
grew most, per call, grouped by file and line (and by file).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.media import write_caller_media
from bench.procstats import rss_bytes
from bench.sipp_driver import fill_scenario, start_sipp
from bench.systems import IvrServerUnderTest

log = logging.getLogger("bench.call_memory")

#: Runs ``python -m ivr`` with tracemalloc on and a SIGUSR1 handler dumping a snapshot to
#: ``argv[1]`` (numbered ``.0``, ``.1``, ...); tracing starts at the first signal (the start-up stays fast: only memory
#: allocated after it counts, which is what the growth per call needs).
LAUNCHER = r"""
import collections, ctypes, gc, json, os, runpy, signal, sys, threading, tracemalloc
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
def process_state():
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    types = collections.Counter(type(o).__name__ for o in gc.get_objects())
    return {"rss_kib": int(status["VmRSS"].split()[0]), "threads": threading.active_count(),
            "os_threads": int(status["Threads"]), "malloc": {f: getattr(info, f) for f, _ in info._fields_},
            "traced": tracemalloc.get_traced_memory()[0], "types": types.most_common(40),
            "dialogs": types["Dialog"]}
frames, base = int(sys.argv[1]), sys.argv[2]
del sys.argv[1:3]
count = [0]
def dump(signum, frame):
    if frames:
        if not tracemalloc.is_tracing():  # traced from the first signal on: a fast start-up
            tracemalloc.start(frames)
        tracemalloc.take_snapshot().dump(f"{base}.{count[0]}.tmp")
        os.rename(f"{base}.{count[0]}.tmp", f"{base}.{count[0]}")
    with open(f"{base}.{count[0]}.json.tmp", "w") as out:
        json.dump(process_state(), out)
    os.rename(f"{base}.{count[0]}.json.tmp", f"{base}.{count[0]}.json")
    count[0] += 1
signal.signal(signal.SIGUSR1, dump)
sys.argv[0] = "ivr"
runpy.run_module("ivr", run_name="__main__", alter_sys=True)
"""


def _snapshot(server: IvrServerUnderTest, base: Path, index: int, timeout: float = 120.0) -> tracemalloc.Snapshot:
    import os
    import signal

    os.kill(server.pid, signal.SIGUSR1)
    path = Path(f"{base}.{index}")
    state = Path(f"{base}.{index}.json")
    deadline = time.monotonic() + timeout
    while not state.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no snapshot {path}")
        time.sleep(0.2)
    return (tracemalloc.Snapshot.load(str(path)) if path.exists() else None), json.loads(state.read_text())


def measure(calls: int, frames: int, settle: float, rate: float, top: int) -> dict:
    """RSS (and with ``frames``, tracemalloc) growth per call with ``calls`` calls held."""
    work = Path(tempfile.mkdtemp(prefix="simplesip-mem-"))
    base = work / "snapshot"
    server = IvrServerUnderTest(work, flow="bench", max_calls=calls * 2,
                                launcher=[sys.executable, "-c", LAUNCHER, str(frames), str(base)])
    result: dict = {"calls": calls}
    server.start()
    try:
        time.sleep(2.0)
        rss_before = rss_bytes(server.pid) or 0
        before, state_before = _snapshot(server, base, 0)
        hold = calls / rate + settle + 30.0 + (60.0 if frames else 0.0)
        scenario = fill_scenario("uac_bench.xml", work, int(hold * 1000), write_caller_media(work, hold, "stream"))
        sipp = start_sipp(scenario, ("127.0.0.1", server.sip_port), calls, rate, work, timeout_s=int(hold + 120))
        time.sleep(calls / rate + settle)
        rss_during = rss_bytes(server.pid) or 0
        result["rss_before_mb"] = rss_before / 2**20
        result["rss_during_mb"] = rss_during / 2**20
        result["rss_kib_per_call"] = (rss_during - rss_before) / 1024 / calls
        during, state_during = _snapshot(server, base, 1)
        # the calls actually up at the snapshot (one Dialog each): a loaded box sets up fewer
        live = state_during["dialogs"] - state_before["dialogs"]
        result["live"] = live
        result["rss_kib_per_call"] = (rss_during - rss_before) / 1024 / max(1, live)
        calls = max(1, live)
        result["state"] = _state_diff(state_before, state_during, calls)
        if before is not None and during is not None:
            result["traced_kib_per_call"] = sum(s.size_diff for s in during.compare_to(before, "filename")) / 1024 / calls
            result["by_line"] = [(str(s.traceback[0]), s.size_diff / calls, s.count_diff / calls)
                                 for s in during.compare_to(before, "lineno")[:top]]
            result["by_file"] = [(s.traceback[0].filename, s.size_diff / calls, s.count_diff / calls)
                                 for s in during.compare_to(before, "filename")[:top]]
            result["by_trace"] = [("\n      ".join(str(f) for f in reversed(s.traceback)), s.size_diff / calls)
                                  for s in during.compare_to(before, "traceback")[:10]]
        sipp.wait()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def _state_diff(before: dict, during: dict, calls: int) -> dict:
    """Threads, glibc malloc figures and object counts by type: during minus before."""
    counts = dict(before["types"])
    return {"threads": (before["os_threads"], during["os_threads"]),
            "malloc_kib_per_call": {k: (during["malloc"][k] - before["malloc"][k]) / 1024 / calls
                                    for k in ("arena", "hblkhd", "uordblks", "fordblks")},
            "objects_per_call": [(name, (n - counts.get(name, 0)) / calls) for name, n in during["types"]
                                 if n - counts.get(name, 0) > calls // 2]}


def report(result: dict) -> str:
    lines = [f"{result['calls']} calls placed, {result['live']} up: RSS {result['rss_before_mb']:.1f} -> {result['rss_during_mb']:.1f} MB, "
             f"{result['rss_kib_per_call']:.1f} KiB per call"]
    state = result["state"]
    lines.append(f"threads {state['threads'][0]} -> {state['threads'][1]}; glibc malloc per call (KiB): "
                 + ", ".join(f"{k} {v:.1f}" for k, v in state["malloc_kib_per_call"].items()))
    lines.append("objects per call: " + ", ".join(f"{name} {n:.1f}" for name, n in state["objects_per_call"]))
    if "traced_kib_per_call" in result:
        lines.append(f"traced (tracemalloc) growth: {result['traced_kib_per_call']:.1f} KiB per call")
        lines.append("by file (bytes / blocks per call):")
        lines += [f"  {size:9.0f} B {count:7.1f}  {name}" for name, size, count in result["by_file"]]
        lines.append("by line:")
        lines += [f"  {size:9.0f} B {count:7.1f}  {name}" for name, size, count in result["by_line"]]
        lines.append("by traceback (bytes per call):")
        lines += [f"  {size:9.0f} B\n      {trace}" for trace, size in result["by_trace"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0, help="calls/s placed by SIPp")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds after the last call is placed")
    parser.add_argument("--frames", type=int, default=8, help="tracemalloc frames per trace")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-trace", action="store_true", help="RSS only (no tracemalloc)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(report(measure(args.calls, 0 if args.no_trace else args.frames, args.settle, args.rate, args.top)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
