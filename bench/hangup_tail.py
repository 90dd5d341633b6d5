"""How much of a flow's last prompt a caller hears, with and without the wait before the BYE.

    python -m bench.hangup_tail [--runs 5] [--tail 0.3]

A flow plays a 1 s tone and hangs up; ``ivr call``'s ``place_call`` (in the same process, over
loopback) records what it heard. With the engine's wait (``Engine.drain_playback``: until the
audio has gone quiet, then ``hangup_tail``) the whole tone is heard; without it (as before) the
BYE leaves with the last frame and the caller hangs up with the end still in its jitter buffer.
How much it misses then depends on when the caller's loop runs, i.e. on the machine's load: a
wall-clock figure, so it is measured here and not asserted by a unit test
(tests/test_engine_hangup_tail.py checks the order of things on our side instead).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np

from ivr.cli import place_call
from ivr.config import parse_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.plugins import make_plugin_manager

FLOW = """\
flow: goodbye
start: bye_prompt
nodes:
  bye_prompt: {play: {tone: "600", duration: 1.0s}, next: bye}
  bye: {hangup: }
"""


def tone_heard(heard: np.ndarray) -> float:
    """Seconds of 20 ms frames well above silence."""
    frames = heard[: len(heard) // 160 * 160].reshape(-1, 160).astype(np.float64)
    return float((np.sqrt(np.mean(frames**2, axis=1)) > 300).sum()) * 0.02


async def one_call(folder: Path, tail: float, wait: bool) -> float:
    (folder / "goodbye.yaml").write_text(FLOW)
    config = parse_config(f"listen: {{port: 0, transports: [udp]}}\nflows: [goodbye.yaml]\n"
                          f"hangup_tail: {tail}\n", base_dir=folder)
    pm = make_plugin_manager(builtins=True, entry_points=False, environ={"IVR_PLUGINS": "playback"})
    engine = Engine(config, pm, flows=FlowStoreRunner(config, pm))
    if not wait:
        async def no_wait(call: object) -> None:
            return None

        engine.drain_playback = no_wait  # type: ignore[method-assign]
    await engine.start()
    try:
        port = engine.endpoint.local_address[1]
        report = await asyncio.wait_for(place_call(f"sip:goodbye@127.0.0.1:{port}", duration=6), 20)
    finally:
        await engine.stop()
    return tone_heard(np.concatenate(report.heard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hangup_tail", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tail", type=float, default=0.3, help="hangup_tail (default 0.3 s)")
    args = parser.parse_args(argv)
    print("| wait before the BYE | runs | tone heard, s (of 1.0): min / median / max |")
    print("|---|---|---|")
    for wait in (True, False):
        heard = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                heard.append(asyncio.run(one_call(Path(folder), args.tail, wait)))
        label = f"yes (tail {args.tail} s)" if wait else "no"
        print(f"| {label} | {args.runs} | {min(heard):.2f} / {float(np.median(heard)):.2f} / {max(heard):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
