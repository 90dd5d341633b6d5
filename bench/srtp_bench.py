"""What SRTP costs per call: the media hot path with and without SRTP, in the same process.

    python -m bench.srtp_bench [--calls 100,300] [--ticks 200] [--rounds 3] [--socket-calls 200]
                               [--server-calls 100] [--hold 20]

First, and closest to service (``--server-calls``, 0 skips it): ``ivr serve`` with the capacity
benchmark's flow (a prompt, a DTMF menu, VAD on every call) takes N calls from simplesip callers in
this process, once with ``media: {srtp: mandatory}`` and once without, alternating, ``--rounds``
times; the server's CPU time (``/proc``) over ``--hold`` seconds of N established calls gives its
CPU per call, plain against SRTP, in the same run. ``--bare-calls`` does the same with a bare
``Endpoint`` that only answers (no IVR, no plugins) as the server.

The capacity benchmark's callers are SIPp, which speaks no SRTP here, so SRTP is measured on the
media hot path itself (:mod:`bench.media_bench`'s workload): each of N calls gets one 20 ms PCMU
packet per tick through ``RtpSession.receive``, then one ``run_tick`` over all calls pulls, decodes,
echoes, encodes and builds one packet per call. The SRTP variant is the very same with every call
keyed (AES_CM_128_HMAC_SHA1_80): the peer's packets are protected beforehand (the peer's work, not
timed) and are unprotected on receive; every packet built is protected. Plain and SRTP alternate
within each round, so both see the same machine load.

The sockets are left out of that: ``--socket-calls`` also measures, with real loopback sockets and
a paced sender process (plain RTP), the whole server CPU per received packet; the SRTP extra per
packet divided by that is the extra CPU per call a server pays for SRTP.

Last, ``protect``+``unprotect`` of a 20 ms G.711 packet is timed alone against building and
parsing it as plain RTP (``RtpPacket``), the library cost without the rest of the call.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.media_bench import BenchLeg, _peer_packets, _receive_cpu
from bench.procstats import cpu_seconds
from bench.systems import IvrServerUnderTest
from simplesip.aio.media import run_tick
from simplesip.core.rtpsession import RtpSession
from simplesip.core.srtp import SRTP_SUITES, SrtpContext, SrtpParams, new_master_key
from simplesip.wire.rtp import RtpPacket

SUITE = SRTP_SUITES[0]


def _keys(calls: int) -> list[tuple[bytes, bytes]]:
    """(our key, the peer's key) per call."""
    return [(new_master_key(), new_master_key()) for _ in range(calls)]


def _protected(streams: list[list[bytes]], keys: list[tuple[bytes, bytes]]) -> list[list[bytes]]:
    """The peer's packets as SRTP under each call's peer key (done before timing)."""
    out = []
    for stream, (ours, theirs) in zip(streams, keys):
        peer = SrtpContext(SrtpParams(SUITE, theirs, ours))
        out.append([peer.protect(packet) for packet in stream])
    return out


def measure(calls: int, ticks: int, warmup: int, streams: list[list[bytes]],
            keys: list[tuple[bytes, bytes]] | None) -> float:
    """CPU microseconds per call per tick: receive one packet + the call's share of run_tick.
    CPU time of the process, not wall time: the machine may be shared, and a preempted tick
    would otherwise count the other programs' time."""
    legs = []
    for i in range(calls):
        srtp = SrtpParams(SUITE, *keys[i]) if keys is not None else None
        legs.append(BenchLeg(RtpSession(0, "PCMU", ("127.0.0.1", 40000 + 2 * i), rng=random.Random(i),
                                        srtp=srtp)))
    addrs = [("127.0.0.1", 40000 + 2 * i) for i in range(calls)]

    def echo(tick_calls: list, inbound: np.ndarray, *clock: object) -> np.ndarray:
        return inbound

    start = 0.0
    for k in range(warmup + ticks):
        if k == warmup:
            start = time.process_time()
        now = k * 0.020
        for leg, addr, stream in zip(legs, addrs, streams):
            leg.rtp.receive(stream[k], addr, now)
        run_tick(legs, echo, now)
    cpu = time.process_time() - start
    for leg in legs:  # every packet authenticated and played: the variant did its whole job
        stats = leg.rtp.stats()
        assert stats["received"] == warmup + ticks and stats["srtp_auth_failures"] == 0, stats
        assert leg.sent == warmup + ticks
    return cpu * 1e6 / (calls * ticks)


def packet_costs(count: int = 20000) -> dict[str, float]:
    """Microseconds per 20 ms G.711 packet: plain build + parse, and SRTP protect + unprotect."""
    payload = bytes(range(160))
    ours, theirs = new_master_key(), new_master_key()
    sender, receiver = SrtpContext(SrtpParams(SUITE, ours, theirs)), SrtpContext(SrtpParams(SUITE, theirs, ours))
    packets = [RtpPacket(0, i & 0xFFFF, i * 160, 0x1234, payload).serialize() for i in range(count)]
    results: dict[str, list[float]] = {"plain build + parse": [], "SRTP protect + unprotect": []}
    for _ in range(3):
        start = time.process_time()
        for i in range(count):
            RtpPacket.parse(RtpPacket(0, i & 0xFFFF, i * 160, 0x1234, payload).serialize())
        results["plain build + parse"].append(time.process_time() - start)
        start = time.process_time()
        for packet in packets:
            assert receiver.unprotect(sender.protect(packet)) is not None
        results["SRTP protect + unprotect"].append(time.process_time() - start)
        # a fresh pair for the next round: libsrtp refuses to protect an index twice
        sender = SrtpContext(SrtpParams(SUITE, ours := new_master_key(), theirs := new_master_key()))
        receiver = SrtpContext(SrtpParams(SUITE, theirs, ours))
    return {name: min(times) * 1e6 / count for name, times in results.items()}


#: A server that only answers: ``python -c BARE_SERVER POLICY PORT``; it stops on SIGTERM.
BARE_SERVER = """
import asyncio, signal, sys
from simplesip import Endpoint, EndpointConfig
async def main():
    endpoint = Endpoint(EndpointConfig(sip_port=int(sys.argv[2]), transports=("udp",),
                                       srtp=sys.argv[1], rtp_port_range=(30000, 39998)))
    endpoint.on_incoming_call = lambda call: asyncio.ensure_future(call.answer())
    await endpoint.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("answering", flush=True)
    await stop.wait()
    await endpoint.stop()
asyncio.run(main())
"""


class _BareServer:
    """The bare Endpoint server above in a subprocess, for :func:`_server_cpu_per_call`."""

    def __init__(self, srtp: bool) -> None:
        import subprocess

        from bench.systems import free_udp_port, terminate

        self.sip_port = free_udp_port()
        self._terminate = terminate
        self.process = subprocess.Popen([sys.executable, "-c", BARE_SERVER, "mandatory" if srtp else "off",
                                         str(self.sip_port)], stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "answering": listening

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self._terminate(self.process)


async def _server_cpu_per_call(calls: int, hold: float, srtp: bool, work_dir: Path,
                               bare: bool = False) -> float:
    """``ivr serve`` (or the bare Endpoint server) CPU per established call, % of one core."""
    from simplesip import Endpoint, EndpointConfig

    server: Any
    if bare:
        server = _BareServer(srtp)
    else:
        server = IvrServerUnderTest(work_dir, extra_config="media: {srtp: mandatory}\n" if srtp else "")
        server.start()
    caller = Endpoint(EndpointConfig(sip_port=0, transports=("udp",), rtp_port_range=(42000, 59998)))
    try:
        await caller.start()
        uri = f"sip:bench@127.0.0.1:{server.sip_port}"
        placed = []
        for _ in range(calls):  # 25 calls/s: set-up is not what is measured
            placed.append(asyncio.create_task(caller.call(uri, srtp="mandatory" if srtp else "off")))
            await asyncio.sleep(0.04)
        established = await asyncio.gather(*placed)
        assert all((c.srtp_suite is not None) == srtp for c in established)
        await asyncio.sleep(2.0)  # latching, jitter buffers, the first prompt
        before = cpu_seconds(server.pid)
        await asyncio.sleep(hold)
        after = cpu_seconds(server.pid)
        assert before is not None and after is not None
        live = [c for c in established if c.is_live]
        assert len(live) == calls, f"{calls - len(live)} calls ended during the measurement"
        failures = sum(c.stats().get("srtp_auth_failures", 0) for c in live)
        assert failures == 0, f"{failures} SRTP authentication failures at the callers"
        return 100 * (after - before) / hold / calls
    finally:
        await caller.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="100,300", help="comma-separated call counts")
    parser.add_argument("--ticks", type=int, default=200, help="measured ticks per run")
    parser.add_argument("--warmup", type=int, default=20, help="ticks before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="plain/SRTP pairs per call count")
    parser.add_argument("--socket-calls", type=int, default=200,
                        help="also measure the whole server CPU per packet over real sockets (0: skip)")
    parser.add_argument("--socket-seconds", type=float, default=4.0)
    parser.add_argument("--server-calls", type=int, default=100,
                        help="calls held on ivr serve, plain then SRTP, per round (0: skip)")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds the server's CPU is measured")
    parser.add_argument("--bare-calls", type=int, default=0,
                        help="the same with a bare Endpoint as the server (0: skip)")
    args = parser.parse_args(argv)

    for calls, bare, name in ((args.server_calls, False, "ivr serve (bench flow)"),
                              (args.bare_calls, True, "bare Endpoint")):
        if not calls:
            continue
        print(f"{name}, {calls} calls held {args.hold:.0f} s: server CPU per call (% of one core)")
        print(f"{'round':>5} {'plain':>8} {'SRTP':>8} {'extra %':>8}")
        with tempfile.TemporaryDirectory(prefix="srtp-bench-") as folder:
            for round_number in range(args.rounds):
                order = (False, True) if round_number % 2 == 0 else (True, False)
                result = {}
                for srtp in order:
                    result[srtp] = asyncio.run(_server_cpu_per_call(
                        calls, args.hold, srtp, Path(folder) / f"r{round_number}{int(srtp)}", bare))
                print(f"{round_number + 1:>5} {result[False]:>8.3f} {result[True]:>8.3f} "
                      f"{100 * (result[True] - result[False]) / result[False]:>7.1f}%")
        print()

    print(f"media hot path (receive + tick + build), {args.ticks} ticks, CPU us per call per 20 ms tick")
    print(f"{'calls':>6} {'round':>5} {'plain':>8} {'SRTP':>8} {'extra':>8} {'extra %':>8}")
    extras: list[float] = []
    for calls in (int(c) for c in args.calls.split(",") if c):
        streams = _peer_packets(calls, args.warmup + args.ticks, seed=calls)
        for round_number in range(args.rounds):
            keys = _keys(calls)
            secure_streams = _protected(streams, keys)
            order = ("plain", "srtp") if round_number % 2 == 0 else ("srtp", "plain")
            result: dict[str, Any] = {}
            for name in order:
                result[name] = measure(calls, args.ticks, args.warmup,
                                       secure_streams if name == "srtp" else streams,
                                       keys if name == "srtp" else None)
            extra = result["srtp"] - result["plain"]
            extras.append(extra)
            print(f"{calls:>6} {round_number + 1:>5} {result['plain']:>8.2f} {result['srtp']:>8.2f} "
                  f"{extra:>8.2f} {100 * extra / result['plain']:>7.1f}%")
    costs = packet_costs()
    print("\none 20 ms G.711 packet, CPU, best of 3 x 20000:")
    for name, us in costs.items():
        print(f"  {name:>26}: {us:6.2f} us")
    if args.socket_calls:
        server = asyncio.run(_receive_cpu(args.socket_calls, args.socket_seconds, "reader"))
        extra = statistics.median(extras)
        print(f"\nwhole server CPU per received packet, plain RTP, {args.socket_calls} calls over real "
              f"sockets: {server:.2f} us (one packet in and one out per call per tick)")
        print(f"SRTP extra per call per tick (median of the hot-path runs above): {extra:.2f} us "
              f"= {100 * extra / server:.1f} % of that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
