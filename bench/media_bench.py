"""The media hot path per tick, for N calls: RtpSession receive + the batched tick, fake sockets.

    python -m bench.media_bench [--calls 100,300,500,1000] [--ticks 200] [--baseline-ref REF]
                                [--socket-calls 200] [--send-packets 20000] [--drain-calls 500]

Each of N calls gets one 20 ms PCMU packet per tick through ``RtpSession.receive`` (what the RTP
socket's ``datagram_received`` does), then one ``run_tick`` over all calls pulls a frame per call
from its jitter buffer, decodes the (N, 160) batch, hands it to an echo consumer (``on_tick``
returns the inbound batch), encodes, builds one RTP packet per call and "sends" it to a fake leg
that only counts. No sockets and no event loop: this is the Python cost the loop pays per tick,
which must stay well under 20 ms.

``--baseline-ref`` (default: the commit before the hot-path work) loads that revision's
``rtp``/``jitter``/``dtmf``/``g711``/``rtpsession``/``media`` modules from git into a private
package and runs the very same workload with them in the same process, so the ratio is measured
under the same load. ``--baseline-ref HEAD`` compares uncommitted changes with the last commit;
``--baseline-ref none`` skips it.

The sockets are left out above; two more measurements time them apart, over loopback:
``--socket-calls`` runs the clock over N real RTP sockets fed by a paced sender process and
reports the server's CPU per received packet three ways: one epoll set for all sockets
(``RtpReader``, as built), asyncio's reader per socket (one loop callback per packet, the
previous design), and draining every socket once per tick (``RtpSocket.drain``, which the clock
otherwise uses only after a stall); ``--send-packets`` times sending (asyncio's
``DatagramTransport.sendto`` against the socket's own ``sendto``, and ``RtpSocket.sendto`` as
built); ``--drain-calls`` times what a catch-up tick after a stall spends reading the backlog of N
sockets, socket by socket (``RtpSocket.drain``) against one ``RtpReader.drain`` for all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from simplesip.wire import g711

REPO = Path(__file__).resolve().parent.parent
#: The revision before the media hot-path work (the "previous implementation").
DEFAULT_BASELINE_REF = "3644c32"
_BASELINE_MODULES = ("g711", "dtmf", "rtp", "jitter", "rtpsession", "media")
FRAME = 160


class BenchLeg:
    """The parts of ``simplesip.aio.call.Call`` that ``run_tick`` uses, with a socket that only counts."""

    def __init__(self, session: Any) -> None:
        self.rtp = session
        self.rtp_socket = None
        self.on_hold = False
        self.sent = 0

    def send_packet(self, packet: bytes) -> None:
        self.sent += 1

    def next_outbound_frame(self) -> bytes | None:
        return None

    def deliver_frame(self, pcm: np.ndarray) -> None:
        pass

    def deliver_dtmf(self, digits: list) -> None:
        pass

    # The baseline revision's run_tick calls the same four by their old private names.
    _media_send = send_packet
    _media_take_outbound = next_outbound_frame
    _media_deliver = deliver_frame
    _media_dtmf = deliver_dtmf


def load_baseline(ref: str) -> types.SimpleNamespace:
    """The media modules as of git revision ``ref``, as a private package (no files written)."""
    package_name = "_media_baseline"
    package = types.ModuleType(package_name)
    package.__path__ = []  # a package, so that relative imports resolve inside it
    sys.modules[package_name] = package
    loaded = {}
    for name in _BASELINE_MODULES:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:simplesip/{name}.py"],
                                check=True, capture_output=True, text=True).stdout
        module = types.ModuleType(f"{package_name}.{name}")
        module.__package__ = package_name
        module.__file__ = f"<{ref}:simplesip/{name}.py>"
        sys.modules[module.__name__] = module
        setattr(package, name, module)
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        loaded[name] = module
    return types.SimpleNamespace(RtpSession=loaded["rtpsession"].RtpSession,
                                 run_tick=loaded["media"].run_tick)


def current() -> types.SimpleNamespace:
    from simplesip.aio.media import run_tick
    from simplesip.core.rtpsession import RtpSession

    return types.SimpleNamespace(RtpSession=RtpSession, run_tick=run_tick)


def _peer_packets(count: int, ticks: int, seed: int) -> list[list[bytes]]:
    """Per call, ``ticks`` PCMU packets of noise-like speech from one peer SSRC."""
    rng = np.random.default_rng(seed)
    audio = g711.encode((rng.normal(0, 3000, (ticks, FRAME))).astype(np.int16), "PCMU")
    payloads = [row.tobytes() for row in audio]
    streams = []
    header = np.dtype([("b0", "u1"), ("b1", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4")])
    for call in range(count):
        seq0, ts0, ssrc = (call * 7919) & 0xFFFF, call * 1_000_003, 0x10000000 + call
        packets = []
        for k in range(ticks):
            head = np.array([(0x80, 0, (seq0 + k) & 0xFFFF, (ts0 + k * FRAME) & 0xFFFFFFFF, ssrc)],
                            dtype=header).tobytes()
            packets.append(head + payloads[(k + call) % ticks])
        streams.append(packets)
    return streams


def measure(impl: types.SimpleNamespace, calls: int, ticks: int, warmup: int,
            streams: list[list[bytes]]) -> dict[str, float]:
    """Mean / p99 milliseconds per tick (receive of one packet per call + run_tick)."""
    legs = [BenchLeg(impl.RtpSession(0, "PCMU", ("127.0.0.1", 40000 + 2 * i),
                                     rng=random.Random(i))) for i in range(calls)]
    addrs = [("127.0.0.1", 40000 + 2 * i) for i in range(calls)]

    def echo(tick_calls: list, inbound: np.ndarray, *clock: object) -> np.ndarray:
        return inbound

    receive_ms: list[float] = []
    tick_ms: list[float] = []
    perf = time.perf_counter
    for k in range(warmup + ticks):
        now = k * 0.020
        start = perf()
        for leg, addr, stream in zip(legs, addrs, streams):
            leg.rtp.receive(stream[k], addr, now)
        middle = perf()
        impl.run_tick(legs, echo, now)
        end = perf()
        if k >= warmup:
            receive_ms.append((middle - start) * 1000)
            tick_ms.append((end - middle) * 1000)
    assert all(leg.sent == warmup + ticks for leg in legs), "every tick must send one packet per call"
    assert all(leg.rtp.stats()["received"] == warmup + ticks for leg in legs)
    total = [r + t for r, t in zip(receive_ms, tick_ms)]
    return {
        "receive_ms": statistics.fmean(receive_ms),
        "tick_ms": statistics.fmean(tick_ms),
        "total_ms": statistics.fmean(total),
        "p99_ms": float(np.percentile(total, 99)),
        "per_call_us": statistics.fmean(total) * 1000 / calls,
    }


async def _drain_costs(calls: int, backlogs: tuple[int, ...] = (0, 1, 3)) -> list[tuple[int, float, float]]:
    """Milliseconds to read ``backlog`` waiting datagrams from each of ``calls`` reader sockets:
    (backlog, socket by socket, one RtpReader.drain), best of 5. A backlog of 0 is every catch-up
    tick after the first of a firing."""
    from simplesip.aio.rtpsocket import RtpReader, open_rtp_socket

    class Discard:
        def receive(self, data: bytes, addr: tuple[str, int], now: float) -> None:
            pass

    reader = RtpReader.create(asyncio.get_running_loop())
    assert reader is not None, "RtpReader needs epoll (Linux)"
    opened = [await open_rtp_socket("127.0.0.1", (42000, 59998), reader) for _ in range(calls)]
    for rtp_socket, _ in opened:
        rtp_socket.session = Discard()  # type: ignore[assignment]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ways = {"socket by socket": lambda: sum(rtp_socket.drain() for rtp_socket, _ in opened),
            "reader": reader.drain}
    rows = []
    try:
        for backlog in backlogs:
            best = {}
            for name, drain in ways.items():
                best[name] = float("inf")
                for _ in range(5):
                    for _, port in opened:
                        for _ in range(backlog):
                            sender.sendto(bytes(172), ("127.0.0.1", port))
                    time.sleep(0.02)  # delivered
                    start = time.perf_counter()
                    read = drain()
                    best[name] = min(best[name], time.perf_counter() - start)
                    assert read == calls * backlog, (name, read)
            rows.append((backlog, best["socket by socket"] * 1e3, best["reader"] * 1e3))
    finally:
        sender.close()
        for rtp_socket, _ in opened:
            rtp_socket.close()
        reader.close()
    return rows


async def _send_costs(packets: int, sockets: int) -> dict[str, float]:
    """Microseconds per RTP packet sent over loopback to a bound sink: asyncio's
    ``DatagramTransport.sendto``, the socket's own ``sendto`` (the "raw socket" optimisation the
    capacity profile suggested), and ``RtpSocket.sendto`` as built (the transport's, behind a
    check that it is open)."""
    from simplesip.aio.rtpsocket import open_rtp_socket

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    target = sink.getsockname()
    opened = [(await open_rtp_socket("127.0.0.1", (42000, 59998)))[0] for _ in range(sockets)]
    senders: dict[str, list[Any]] = {
        "asyncio transport": [s.transport.sendto for s in opened],  # type: ignore[union-attr]
        "raw socket": [s._rtp_sock.sendto for s in opened],  # type: ignore[union-attr]
        "RtpSocket.sendto": [s.sendto for s in opened],
    }
    packet = bytes(172)
    costs = {}
    try:
        for _ in range(3):  # rounds: each variant once per round, so drifting load hits all alike
            for name, sends in senders.items():
                start = time.perf_counter()
                for i in range(packets):
                    sends[i % sockets](packet, target)
                elapsed = time.perf_counter() - start
                costs[name] = min(costs.get(name, float("inf")), elapsed * 1e6 / packets)
                await asyncio.sleep(0.05)  # let queued sends (if any) drain between runs
    finally:
        for rtp_socket in opened:
            rtp_socket.close()
        sink.close()
    return costs


_PACED_SENDER = r"""
import socket, struct, sys, time
ports = [int(p) for p in sys.argv[1].split(",")]
seconds = float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, start, k = len(ports), time.perf_counter(), 0
while time.perf_counter() - start < seconds:
    tick, i = divmod(k, n)
    delay = start + tick * 0.020 + i * 0.020 / n - time.perf_counter()  # spread over the 20 ms
    if delay > 0.001:
        time.sleep(delay)
    header = struct.pack("!BBHII", 0x80, 0, tick & 0xFFFF, tick * 160, 1000 + i)
    sock.sendto(header + bytes(160), ("127.0.0.1", ports[i]))
    k += 1
"""


#: How ``--socket-calls`` reads the sockets: label -> mode of :func:`_receive_cpu`.
RECEIVE_MODES = {"reader": "RtpReader (as built)", "loop": "loop reader per socket",
                 "drain": "RtpSocket.drain every tick"}


async def _receive_cpu(calls: int, seconds: float, mode: str) -> float:
    """Server CPU microseconds per received packet (receive + tick + send) with N calls fed by a
    paced sender process, as a real server sees them (arrivals spread over each 20 ms)."""
    from simplesip.aio.media import MediaClock, run_tick
    from simplesip.aio.rtpsocket import RtpReader, open_rtp_socket
    from simplesip.core.rtpsession import RtpSession

    drain_every_tick = mode == "drain"
    reader = RtpReader.create(asyncio.get_running_loop()) if mode == "reader" else None
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    opened = [await open_rtp_socket("127.0.0.1", (42000, 59998), reader) for _ in range(calls)]
    legs = []
    for i, (rtp_socket, _) in enumerate(opened):
        rtp_socket.session = RtpSession(0, "PCMU", sink.getsockname(), rng=random.Random(i))
        leg = BenchLeg(rtp_socket.session)
        leg.send_packet = leg._media_send = lambda packet, s=rtp_socket: s.sendto(packet, sink.getsockname())  # type: ignore[method-assign]
        legs.append(leg)
        if drain_every_tick:
            rtp_socket.transport.pause_reading()  # type: ignore[union-attr]

    def tick(now: float, number: int, send: bool) -> None:
        if drain_every_tick:
            for rtp_socket, _ in opened:
                rtp_socket.drain()
        run_tick(legs, None, now, send)

    clock = MediaClock(tick)
    ports = ",".join(str(port) for _, port in opened)
    sender = subprocess.Popen([sys.executable, "-c", _PACED_SENDER, ports, str(seconds + 1.0)])
    try:
        clock.start()
        await asyncio.sleep(0.5)  # latching, prefill
        cpu0, packets0 = time.process_time(), sum(leg.rtp.packets_in for leg in legs)
        await asyncio.sleep(seconds - 0.5)
        cpu1, packets1 = time.process_time(), sum(leg.rtp.packets_in for leg in legs)
    finally:
        clock.stop()
        sender.wait()
        for rtp_socket, _ in opened:
            rtp_socket.close()
        if reader is not None:
            reader.close()
        sink.close()
    return (cpu1 - cpu0) * 1e6 / max(1, packets1 - packets0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="100,300,500,1000", help="comma-separated call counts")
    parser.add_argument("--ticks", type=int, default=200, help="measured ticks per step")
    parser.add_argument("--warmup", type=int, default=20, help="ticks before measuring (prefill)")
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE_REF,
                        help="git revision to compare against, or 'none'")
    parser.add_argument("--socket-calls", type=int, default=200,
                        help="also measure receiving over real sockets with this many calls (0: skip)")
    parser.add_argument("--socket-seconds", type=float, default=4.0, help="length of that measurement")
    parser.add_argument("--send-packets", type=int, default=20000,
                        help="also time sending over real loopback sockets (0: skip)")
    parser.add_argument("--drain-calls", type=int, default=0,
                        help="also time a catch-up tick's reads with this many calls (0: skip)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.calls.split(",") if c]

    impls = {"current": current()}
    if args.baseline_ref.lower() != "none":
        try:
            impls["baseline"] = load_baseline(args.baseline_ref)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"baseline {args.baseline_ref} not loadable ({exc}); measuring current only")

    print(f"media hot path, {args.ticks} ticks after {args.warmup} warm-up; ms per 20 ms tick")
    print(f"{'calls':>6} {'impl':>9} {'receive':>8} {'tick':>8} {'total':>8} {'p99':>8} "
          f"{'us/call':>8} {'vs base':>8}")
    for count in counts:
        streams = _peer_packets(count, args.warmup + args.ticks, seed=count)
        results = {}
        # Alternate the order per step so neither implementation always runs on a warmer cache.
        order = list(impls) if count % 2 == 0 else list(reversed(impls))
        for name in order:
            results[name] = measure(impls[name], count, args.ticks, args.warmup, streams)
        for name in impls:
            r = results[name]
            ratio = ""
            if "baseline" in results and name == "current":
                ratio = f"{results['baseline']['total_ms'] / r['total_ms']:.2f}x"
            print(f"{count:>6} {name:>9} {r['receive_ms']:>8.2f} {r['tick_ms']:>8.2f} "
                  f"{r['total_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['per_call_us']:>8.1f} {ratio:>8}")
    if args.socket_calls:
        print(f"\nreal sockets, {args.socket_calls} calls fed by a paced sender process: server CPU per "
              "received packet (receive + tick + send)")
        for mode, name in RECEIVE_MODES.items():
            cpu = asyncio.run(_receive_cpu(args.socket_calls, args.socket_seconds, mode))
            print(f"  {name:>28}: {cpu:6.2f} us/packet")
    if args.send_packets:
        costs = asyncio.run(_send_costs(args.send_packets, 50))
        base = costs["asyncio transport"]
        print(f"\nsending one RTP packet over loopback ({args.send_packets} packets, 50 sockets, best of 3):")
        for name, us in costs.items():
            print(f"  {name:>18}: {us:6.2f} us/packet  ({base / us:.2f}x the transport)")
    if args.drain_calls:
        print(f"\ncatch-up read of {args.drain_calls} sockets (ms, best of 5):")
        for backlog, by_socket, by_reader in asyncio.run(_drain_costs(args.drain_calls)):
            print(f"  {backlog} waiting per socket: socket by socket {by_socket:6.2f}, "
                  f"RtpReader.drain {by_reader:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
