"""``python -m bench``: the capacity benchmark (see bench/capacity.py and docs/performance.md).

    python -m bench                         # full run: steps 50..1000, set-up rate, pyVoIP baseline
    python -m bench --quick                 # a few small steps, a minute or two
    python -m bench --steps 50,100,200 --duration 30 --no-baseline
    python -m bench --workers 1,2 --flows bench    # one process, then two behind Kamailio
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.capacity import (
    SetupRateResult,
    StepResult,
    StepSettings,
    run_setup_rates,
    run_steps,
)
from bench.cluster import IvrClusterUnderTest
from bench.media import CALLER_MEDIA_MODES
from bench.report import markdown, plot, write_csv
from bench.systems import IvrServerUnderTest, PyVoipUnderTest
from ivr.priority import PRIORITIES

log = logging.getLogger("bench")

DEFAULT_STEPS = "50,100,200,300,500,750,1000"
QUICK_STEPS = "5,20,50"
DEFAULT_RATES = "5,10,20,50,100,200,300,500"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", help=f"concurrent calls per step (default {DEFAULT_STEPS})")
    parser.add_argument("--duration", type=float,
                        help="seconds each step holds its calls (default 30; the ramp comes on top)")
    parser.add_argument("--quick", action="store_true", help=f"steps {QUICK_STEPS}, 12 s calls, no record flow")
    parser.add_argument("--flows", default="bench,bench_record", help="benchmark flows to step (default both)")
    parser.add_argument("--rates", default=DEFAULT_RATES, help="call set-up rates to try (calls/s); '' to skip")
    parser.add_argument("--probes", type=int, default=4, help="measuring calls per step (default 4)")
    parser.add_argument("--workers", default="1",
                        help="worker counts to step, e.g. 1,2: N > 1 runs N `ivr serve` behind Kamailio's "
                             "dispatcher (default 1)")
    parser.add_argument("--priority", choices=PRIORITIES, default="normal",
                        help="scheduling priority of every system under test: our servers' `priority` "
                             "setting, the same for all of pyVoIP's threads (default normal)")
    parser.add_argument("--caller-media", choices=CALLER_MEDIA_MODES, default="stream",
                        help="how SIPp sends the callers' media: rtp_stream with the keys as short pcaps "
                             "(default), or a pcap per call, as up to round 4 (see bench/media.py)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the pyVoIP baseline")
    parser.add_argument("--baseline-steps", help="steps for pyVoIP (default: the same steps)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the CSV, table and plot go")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, SIPp stats)")
    return parser


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(143)  # unwinds through the finally blocks that stop the server and SIPp


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not shutil.which("sipp"):
        print("python -m bench: sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    steps = _ints(args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS))
    flows = ["bench"] if args.quick and args.flows == "bench,bench_record" else args.flows.split(",")
    settings = StepSettings(hold=args.duration or (12.0 if args.quick else 30.0), probes=args.probes,
                            caller_media=args.caller_media)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.quick and args.rates == DEFAULT_RATES:
        rates = [10.0, 50.0]
    work = Path(tempfile.mkdtemp(prefix="simplesip-bench-"))
    results: list[StepResult] = []
    setup: list[SetupRateResult] = []
    systems: list[tuple[str, str]] = []
    notes: list[str] = []
    if args.priority != "normal":
        notes.append(f"every system under test ran at {args.priority} priority: our servers with `priority: "
                     f"{args.priority}` (their event loop's thread), pyVoIP with all of its threads")
    try:
        for workers in _ints(args.workers):
            for flow in flows:
                server = _server(work / flow, flow, workers, max(steps) * 2 + 50, args.priority)
                try:
                    server.start()
                    results += run_steps(server, flow, steps, settings, work / "steps")
                    systems.append((server.name, flow))
                    if flow == flows[0] and rates:
                        setup += run_setup_rates(server, rates, 5.0, work / "rates")
                finally:
                    server.stop()
        if not args.no_baseline:
            results, setup = _baseline(args, steps, settings, rates, work, results, setup, systems, notes)
    finally:
        if args.keep:
            log.info("working folder kept: %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    _write(args.results, results, setup, systems, settings, notes)
    return 0


def _server(folder: Path, flow: str, workers: int, max_calls: int,
            priority: str) -> IvrServerUnderTest | IvrClusterUnderTest:
    """One ``ivr serve``, or ``workers`` of them behind Kamailio."""
    if workers <= 1:
        return IvrServerUnderTest(folder, flow=flow, max_calls=max_calls, priority=priority)
    return IvrClusterUnderTest(folder, workers=workers, flow=flow, max_calls=max_calls, priority=priority)


def _baseline(args: argparse.Namespace, steps: list[int], settings: StepSettings, rates: list[float],
              work: Path, results: list[StepResult], setup: list[SetupRateResult],
              systems: list[tuple[str, str]], notes: list[str]) -> tuple[list, list]:
    try:
        import pyVoIP  # noqa: F401
    except ImportError:
        notes.append("pyVoIP baseline skipped: pip install pyVoIP==1.6.8")
        return results, setup
    baseline_steps = _ints(args.baseline_steps) if args.baseline_steps else steps
    phone = PyVoipUnderTest(work / "baseline", priority=args.priority)
    sink_settings = StepSettings(**{**settings.__dict__, "sink": True, "probes": 0})
    try:
        phone.start()
        results += run_steps(phone, "prompt+dtmf", baseline_steps, sink_settings, work / "steps",
                             sipp_local_port=phone.peer_port)
        systems.append((phone.name, "prompt+dtmf"))
        if rates:
            setup += run_setup_rates(phone, rates, 5.0, work / "rates", sipp_local_port=phone.peer_port)
    finally:
        phone.stop()
    notes.append("pyVoIP sends to the SDP address, so every call's stream is measured by one RTP sink; "
                 "its loss in is the kernel's receive-buffer drops (pyVoIP keeps no statistics), and "
                 "its DTMF reaction is not measured")
    notes.append("simplesip 0.1.5 (PyPI) is a single-call client (one Call-ID, one RTP socket): "
                 "its capacity is 1 call by construction, so it is not stepped")
    return results, setup


def _write(folder: Path, results: list[StepResult], setup: list[SetupRateResult],
           systems: list[tuple[str, str]], settings: StepSettings, notes: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_csv(folder / "capacity.csv", results)
    table = markdown(results, setup, systems, settings, notes)
    (folder / "capacity.md").write_text(f"# Capacity benchmark, {stamp}\n\n" + table)
    plot(folder / "capacity.png", results)
    print(table)
    log.info("results in %s (capacity.csv, capacity.md, capacity.png)", folder)


if __name__ == "__main__":
    sys.exit(main())
