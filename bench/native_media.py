"""Per-tick media cost, pure-Python path against the compiled one, in the same run.

    python -m bench.native_media [--calls 100,500,1000] [--runs 3] [--ticks 150] [--sockets]

Two workloads per call count, each run for both paths in alternation (pure, compiled, pure,
compiled...) so that the load of a shared machine hits both alike; the ratio of every run is
reported, not only the best:

* ``inproc``: as ``bench.media_bench``, no sockets: every call gets one 20 ms PCMU packet per tick
  through ``RtpSession.receive``, then one ``run_tick`` pulls, decodes, hands the (N, 160) batch to
  an echo consumer, encodes and builds one packet per call (a fake leg counts it).
* ``sockets`` (``--sockets``): real loopback RTP sockets read by an ``RtpReader``. Before each tick
  (untimed) a sender puts one packet in every call's socket; timed: the reader's ``drain`` (one
  read pass: ``recvmmsg`` and the fast path in C on the compiled path, a ``recvfrom`` and
  ``RtpSession.receive`` per packet on the pure one) plus ``run_tick`` with the packets really sent
  back to the latched peer (the sender): from C on the compiled path (``sendto`` on each call's
  socket), through ``RtpSocket.sendto`` and asyncio's transport on the pure one. The system calls
  are in this one.

Times are the thread's CPU time (``time.thread_time``: user and kernel), not wall time: on a
shared machine wall time counts the time other processes held the core. Which path a session takes is chosen per session (``RtpSession(native=...)``) and for the reader
through ``simplesip.core.native.ENABLED``, so both run in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import struct
import sys
import time
from typing import Any

import numpy as np

from bench.media_bench import BenchLeg
from simplesip.aio.media import run_tick
from simplesip.core import native
from simplesip.core.rtpsession import RtpSession

FRAME = 160
#: (compiled, calls) -> [(read ms, tick + send ms)] of the sockets workload, for the split.
SPLIT: dict[tuple[bool, int], list[tuple[float, float]]] = {}


class Leg(BenchLeg):
    """:class:`bench.media_bench.BenchLeg` whose ``send_packet`` also sends through ``sendto``."""

    def __init__(self, session: Any, sendto: Any = None, target: Any = None) -> None:
        super().__init__(session)
        self._sendto, self._target = sendto, target

    def send_packet(self, packet: bytes) -> None:
        self.sent += 1
        if self._sendto is not None:  # as Call.send_packet: to the session's peer by default
            self._sendto(packet, self._target or self.rtp.remote_addr)


def _echo(calls: list, inbound: np.ndarray, *clock: object) -> np.ndarray:
    return inbound


def _packets(calls: int, ticks: int) -> list[list[bytes]]:
    rng = random.Random(5)
    payload = bytes(rng.getrandbits(8) for _ in range(FRAME))
    return [[struct.pack("!BBHII", 0x80, 0, (k + i) & 0xFFFF, (k * FRAME + i * 7919) & 0xFFFFFFFF, 0x1000 + i)
             + payload for k in range(ticks)] for i in range(calls)]


def inproc(compiled: bool, calls: int, ticks: int, warmup: int, streams: list[list[bytes]]) -> list[float]:
    """Milliseconds per tick (receive one packet per call + run_tick), one value per tick."""
    legs = [Leg(RtpSession(0, "PCMU", ("127.0.0.1", 40000 + 2 * i), rng=random.Random(i), native=compiled))
            for i in range(calls)]
    addrs = [("127.0.0.1", 40000 + 2 * i) for i in range(calls)]
    perf = time.thread_time  # CPU time of this thread (see the module docstring)
    costs = []
    for k in range(warmup + ticks):
        now = k * 0.020
        start = perf()
        for leg, addr, stream in zip(legs, addrs, streams):
            leg.rtp.receive(stream[k], addr, now)
        run_tick(legs, _echo, now)
        if k >= warmup:
            costs.append((perf() - start) * 1000)
    assert all(leg.sent == warmup + ticks for leg in legs)
    assert all(leg.rtp.packets_in == warmup + ticks for leg in legs), "every packet must be taken"
    return costs


async def over_sockets(compiled: bool, calls: int, ticks: int, warmup: int,
                       streams: list[list[bytes]]) -> list[float]:
    """Milliseconds per tick over loopback sockets (reader drain + run_tick + sending)."""
    from simplesip.aio.rtpsocket import RtpReader, open_rtp_socket

    saved = native.ENABLED
    native.ENABLED = compiled  # the reader's choice (sessions choose by their own class)
    loop = asyncio.get_running_loop()
    reader = RtpReader(loop)
    loop.remove_reader(reader._epoll.fileno())  # only the timed drain reads
    # One peer socket plays every caller: it sends each call's stream and receives what the calls
    # send back to their latched peer (the compiled path sends from C, the pure one through
    # the transport: the same socket, the same address).
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    opened = [await open_rtp_socket("127.0.0.1", (42000, 59998), reader) for _ in range(calls)]
    legs = []
    for i, (rtp_socket, _) in enumerate(opened):
        rtp_socket.session = RtpSession(0, "PCMU", sender.getsockname(), rng=random.Random(i), native=compiled)
        legs.append(Leg(rtp_socket.session, rtp_socket.sendto))
    ports = [("127.0.0.1", port) for _, port in opened]
    perf = time.thread_time  # CPU time of this thread (see the module docstring)
    costs = []
    echoed = 0
    try:
        for k in range(warmup + ticks):
            for i, port in enumerate(ports):
                sender.sendto(streams[i][k], port)
            await asyncio.sleep(0)
            now = loop.time()
            start = perf()
            reader.drain()
            middle = perf()
            run_tick(legs, _echo, now)
            end = perf()
            if k >= warmup:
                costs.append((end - start) * 1000)
                SPLIT.setdefault((compiled, calls), []).append(((middle - start) * 1000, (end - middle) * 1000))
            while True:  # empty the peer's socket, untimed
                try:
                    sender.recv(4096, socket.MSG_DONTWAIT)
                    echoed += 1
                except BlockingIOError:
                    break
        taken = sum(leg.rtp.packets_in for leg in legs)
        assert taken >= 0.99 * calls * (warmup + ticks), ("packets lost on loopback", taken)
        assert echoed >= 0.99 * calls * (warmup + ticks), ("packets not sent back", echoed)
    finally:
        native.ENABLED = saved
        for rtp_socket, _ in opened:
            rtp_socket.close()
        reader.close()
        sender.close()
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="100,500,1000", help="comma-separated call counts")
    parser.add_argument("--runs", type=int, default=3, help="runs of each path per call count")
    parser.add_argument("--ticks", type=int, default=150, help="measured ticks per run")
    parser.add_argument("--warmup", type=int, default=10, help="ticks before measuring (prefill)")
    parser.add_argument("--sockets", action="store_true", help="also the loopback-socket workload")
    args = parser.parse_args(argv)
    if native.native is None:
        print(f"the extension is not available: {native.REASON}", file=sys.stderr)
        return 1
    workloads = ["inproc", "sockets"] if args.sockets else ["inproc"]
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}; mean CPU ms per tick (budget 20 ms), "
          f"{args.ticks} ticks per run, {args.runs} runs; ratio = pure / compiled of the same run")
    for workload in workloads:
        print(f"\n{workload}:")
        print(f"{'calls':>6} | {'pure ms/tick':>22} | {'compiled ms/tick':>22} | {'ratio per run':>22} | "
              f"{'pure µs/call':>12} | {'compiled µs/call':>16}")
        for calls in (int(c) for c in args.calls.split(",")):
            streams = _packets(calls, args.warmup + args.ticks)
            pure_runs, compiled_runs = [], []
            for _ in range(args.runs):
                for compiled, runs in ((False, pure_runs), (True, compiled_runs)):
                    if workload == "inproc":
                        costs = inproc(compiled, calls, args.ticks, args.warmup, streams)
                    else:
                        costs = asyncio.run(over_sockets(compiled, calls, args.ticks, args.warmup, streams))
                    runs.append(statistics.fmean(costs))
            ratios = [p / c for p, c in zip(pure_runs, compiled_runs)]
            print(f"{calls:>6} | {' '.join(f'{v:6.2f}' for v in pure_runs):>22} | "
                  f"{' '.join(f'{v:6.2f}' for v in compiled_runs):>22} | "
                  f"{' '.join(f'{r:5.1f}x' for r in ratios):>22} | "
                  f"{statistics.median(pure_runs) * 1000 / calls:12.2f} | "
                  f"{statistics.median(compiled_runs) * 1000 / calls:16.2f}")
        if workload == "sockets":
            print("\nsockets, where the time goes (mean CPU ms per tick over all runs: read pass | tick + send):")
            for (compiled, calls), pairs in sorted(SPLIT.items(), key=lambda item: (item[0][1], item[0][0])):
                read = statistics.fmean(p[0] for p in pairs)
                rest = statistics.fmean(p[1] for p in pairs)
                print(f"  {calls:>5} calls {'compiled' if compiled else 'pure':>8}: {read:6.2f} | {rest:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
