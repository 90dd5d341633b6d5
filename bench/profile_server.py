"""Profile ``ivr serve`` under load with py-spy and print where its time goes.

    python -m bench.profile_server --calls 300 --seconds 20 [--out bench/results/profile]

Starts the server with the benchmark flow, holds ``--calls`` SIPp calls (the capacity benchmark's
caller stream: speech and RFC 4733 keys), and samples the server with ``py-spy record`` (100 Hz,
idle frames excluded, so shares are of busy time) in the middle of the hold. Writes the collapsed
stacks (``profile.txt``) and prints the top functions by
self time and by inclusive time, as percentages of the samples.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

from bench.media import write_caller_media
from bench.sipp_driver import fill_scenario, start_sipp
from bench.systems import IvrServerUnderTest

log = logging.getLogger("bench.profile_server")


def top_functions(collapsed: str, limit: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """Self and inclusive shares (%) per function from py-spy's collapsed (raw) stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    share = (lambda items: [(name, 100.0 * n / total) for name, n in items.most_common(limit)]) if total else (
        lambda items: [])
    return share(own), share(inclusive), total


def _short(frame: str) -> str:
    """``tick (simplesip/media.py:143)`` -> ``simplesip/media.py:tick`` (line numbers merged)."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{name}" if path else name


@contextlib.contextmanager
def server_under_load(calls: int, seconds: float, flow: str = "bench", priority: str = "normal",
                      rate: float = 100.0, caller_media: str = "stream") -> Iterator[IvrServerUnderTest]:
    """``ivr serve`` holding ``calls`` SIPp calls (the capacity benchmark's caller media, placed
    at ``rate`` calls/s), for ``seconds`` of steady state after the ramp: the body runs once every
    call is up, and the exit waits for the calls to end, then stops the server."""
    work = Path(tempfile.mkdtemp(prefix="simplesip-load-"))
    server = IvrServerUnderTest(work, flow=flow, max_calls=calls * 2, priority=priority)
    server.start()
    try:
        hold = seconds + calls / rate + 10.0
        scenario = fill_scenario("uac_bench.xml", work, int(hold * 1000),
                                 write_caller_media(work, hold, caller_media))
        sipp = start_sipp(scenario, ("127.0.0.1", server.sip_port), calls, rate, work,
                          timeout_s=int(hold + 120))
        time.sleep(calls / rate + 3.0)
        yield server
        sipp.wait()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20.0, help="sampling time")
    parser.add_argument("--flow", default="bench")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "profile")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install py-spy==0.4.1", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with server_under_load(args.calls, args.seconds, args.flow) as server:
        # Collapsed stacks only: py-spy 0.4.1's flame graph writer crashed (SIGSEGV) here;
        # `flamegraph.pl` or speedscope render profile.txt.
        subprocess.run([py_spy, "record", "--pid", str(server.pid), "--duration", str(int(args.seconds)),
                        "--rate", "100", "--format", "raw", "--output", str(args.out / "profile.txt"),
                        "--nonblocking"], check=True, capture_output=True)
    report = format_report((args.out / "profile.txt").read_text(), args.calls)
    (args.out / "top.txt").write_text(report)
    print(report, end="")
    return 0


def format_report(collapsed: str, calls: int) -> str:
    """Self time, then inclusive time of the project's own functions (the event loop's frames,
    which include everything, are left out)."""
    own, inclusive, samples = top_functions(collapsed, limit=60)
    lines = [f"{samples} samples of busy time (100 Hz) with {calls} calls", "", "self time:"]
    lines += [f"  {percent:5.1f} %  {name}" for name, percent in own[:15]]
    lines += ["", "inclusive time (project code, asyncio socket calls):"]
    lines += [f"  {percent:5.1f} %  {name}" for name, percent in inclusive
              if percent < 90 and name.split("/")[0] in ("simplesip", "ivr", "plugins", "asyncio")][:25]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
