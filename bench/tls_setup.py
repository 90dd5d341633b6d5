"""TLS handshake + call set-up rate between two Endpoints (issue 16 asks >= 50 calls/s).

    .venv/bin/python -m bench.tls_setup [--calls 500] [--parallel 10] [--modes tls-new,tls-reuse,tcp,udp]

The callee is an Endpoint in its own process (TLS listener, test CA certificate made with the
``openssl`` CLI) that answers every call; the caller process runs ``--parallel`` workers, each
with its own Endpoint, placing calls one after another: INVITE -> 200 -> ACK (``call()``
returns), then BYE -> 200. Modes:

- ``tls-new``: each worker closes its TLS connection after every call, so every call pays a full
  TLS handshake (TCP connect, TLS 1.3 handshake, certificate chain and host name verified);
- ``tls-reuse``: one TLS connection per worker, kept (what a trunk does);
- ``tcp`` and ``udp``: the same calls without TLS, for comparison.

Prints per mode: calls/s (complete set-up + teardown cycles over the wall time), set-up time
(p50 / p99, INVITE sent to answered), failures, and the CPU seconds per call of both processes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplesip import CallError, Endpoint, EndpointConfig  # noqa: E402
from tests.helpers.certs import CertSet, make_test_pki  # noqa: E402

MODES = ("tls-new", "tls-reuse", "tcp", "udp")


def _callee_process(pki_dir: str, ports: "multiprocessing.Queue", stop: "multiprocessing.Event") -> None:
    async def main() -> None:
        pki = CertSet(Path(pki_dir))
        callee = Endpoint(EndpointConfig(
            sip_port=0, tls_port=0, transports=("udp", "tcp", "tls"), username="bench",
            tls_cert_file=pki.cert("server"), tls_key_file=pki.key("server"),
            rtp_port_range=(40000, 49000), session_expires=0, dns_srv=False))

        async def answer(call) -> None:
            try:
                await call.answer()
            except CallError:
                pass

        callee.on_incoming_call = answer
        async with callee:
            ports.put((callee.local_address[1], callee.tls_port))
            while not stop.is_set():
                await asyncio.sleep(0.1)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            ports.put(usage.ru_utime + usage.ru_stime)

    asyncio.run(main())


async def _run_mode(mode: str, pki: CertSet, sip_port: int, tls_port: int, calls: int,
                    parallel: int) -> dict:
    transport = "udp" if mode == "udp" else "tcp" if mode == "tcp" else "tls"
    if transport == "tls":
        target = f"sips:bench@127.0.0.1:{tls_port}"
    else:
        target = f"sip:bench@127.0.0.1:{sip_port};transport={transport}"
    callers = [Endpoint(EndpointConfig(sip_port=0, transports=("udp", transport) if transport != "udp" else ("udp",),
                                       tls_ca_file=pki.ca, rtp_port_range=(40000, 49000),
                                       session_expires=0, dns_srv=False))
               for _ in range(parallel)]
    for caller in callers:
        await caller.start()
    setups: list[float] = []
    failures: list[str] = []
    remaining = [calls]
    closed = [0]  # TLS connections closed after a call: each was a full handshake

    async def worker(caller: Endpoint) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            try:
                call = await caller.call(target, timeout=10)
            except CallError as exc:
                failures.append(str(exc))
                continue
            setups.append(time.perf_counter() - started)
            await call.hangup()
            if mode == "tls-new":
                closed[0] += caller.close_connections("tls")
                await asyncio.sleep(0)  # let the close happen before the next INVITE

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await asyncio.gather(*(worker(caller) for caller in callers))
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    failed_handshakes = sum(c.tls_handshake_failures["outbound"] for c in callers)
    for caller in callers:
        await caller.stop()
    setups.sort()
    return {
        "mode": mode, "calls": len(setups), "failures": len(failures), "failed_handshakes": failed_handshakes,
        "handshakes": closed[0] if mode == "tls-new" else (parallel if mode == "tls-reuse" else 0),
        "wall_s": wall, "calls_per_s": len(setups) / wall,
        "setup_p50_ms": 1000 * statistics.median(setups) if setups else None,
        "setup_p99_ms": 1000 * setups[int(0.99 * (len(setups) - 1))] if setups else None,
        "caller_cpu_ms_per_call": 1000 * ((cpu_after.ru_utime + cpu_after.ru_stime)
                                          - (cpu_before.ru_utime + cpu_before.ru_stime)) / max(1, len(setups)),
        "first_failure": failures[0] if failures else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as folder:
        pki = make_test_pki(Path(folder))
        print(f"# {args.calls} calls per mode, {args.parallel} in parallel; load average {os.getloadavg()[0]:.1f}")
        print("| mode | calls/s | set-up p50 / p99 (ms) | TLS handshakes | caller CPU ms/call | "
              "callee CPU ms/call | failed |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for mode in modes:
            ports: multiprocessing.Queue = multiprocessing.Queue()
            stop = multiprocessing.Event()
            callee = multiprocessing.Process(target=_callee_process, args=(folder, ports, stop))
            callee.start()
            sip_port, tls_port = ports.get(timeout=20)
            result = asyncio.run(_run_mode(mode, pki, sip_port, tls_port, args.calls, args.parallel))
            stop.set()
            callee_cpu = ports.get(timeout=20)
            callee.join(20)
            callee_ms = 1000 * callee_cpu / max(1, result["calls"])  # start-up included: an upper bound
            print(f"| {mode} | {result['calls_per_s']:.0f} | {result['setup_p50_ms']:.1f} / "
                  f"{result['setup_p99_ms']:.1f} | {result['handshakes']} | "
                  f"{result['caller_cpu_ms_per_call']:.2f} | {callee_ms:.2f} | "
                  f"{result['failures'] + result['failed_handshakes']} |", flush=True)
            if result["first_failure"]:
                print(f"  first failure: {result['first_failure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
