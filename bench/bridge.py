"""``python -m bench.bridge``: the voice-bot bridge under load (docs/performance.md).

    python -m bench.bridge                      # plain IVR calls, then bridged calls: 100 for 300 s,
                                                # then 150, 200, 300 for 60 s each until one fails
    python -m bench.bridge --steps 100 --hold 60 --plain 0      # one step
    python -m bench.bridge --quick              # 5 calls for 5 s (a smoke run)

``ivr serve`` (the product, as an operator runs it) answers calls from this process's own SIP
caller and bridges each (flow ``bot``) to a local echo bot (:mod:`bench.bridge_bot`: processes of
its own, ``--bot-processes``, default 2, sharing one port), or, for the plain comparison, holds
them in a ``collect`` (flow ``plain``). Every caller frame is tagged (:mod:`bench.bridge_tags`)
so it is recognised at the bot and back:

* **RTP in -> WS out**: the bot's arrival time of a tagged frame minus the time the caller sent
  its RTP packet; **WS in -> RTP out**: the caller's kernel arrival time (``SO_TIMESTAMPNS``) of
  the echoed frame minus the time the bot sent it. Both include the server's jitter buffer in
  the first direction (its target depth is printed) and up to one media tick of waiting in each;
* **clear -> last old packet**: on every tenth call the bot sends a second of its own audio,
  then ``clear`` 0.4 s later; the last packet of that audio the caller receives, minus the time
  the bot sent ``clear`` (0 or less: nothing left after the clear);
* per step: calls answered and bridged, loss each way (tag counters), the server's CPU (its own
  process, % of one core, per call), its RSS sampled every 10 s (growth over the hold), and the
  media clock's dropped ticks, tick duration and lateness.

On a shared machine, ``--priority realtime --harness-priority realtime`` keeps the other
tenants out of the figures (the server at ``SCHED_RR`` 10, the caller and the bots at 5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.bridge_tags import (
    KIND_BURST,
    KIND_CALLER,
    KIND_PROBE,
    SAMPLE_EVERY,
    make_frame,
    read_tag,
)
from bench.procstats import cpu_seconds, rss_bytes
from bench.systems import (
    free_tcp_port,
    free_udp_port,
    random_port_range,
    terminate,
    wait_for_line,
)

__all__ = ["Caller", "Server", "Step", "analyse", "main", "run_step", "start_bot"]

log = logging.getLogger("bench.bridge")

PROJECT = Path(__file__).resolve().parent.parent
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_ANCILLARY = socket.CMSG_SPACE(16)
TICK = 0.02
HARNESS_NICE = -10
#: SCHED_RR priority of the caller and the bots with ``--harness-priority realtime``: under the
#: server's (``priority: realtime`` is 10), over every ordinary process on the machine.
HARNESS_RT = 5
#: The bot's ``--clear-every`` (default 10): call index 8 of every 10 is a latency probe call.
PROBE_EVERY = 10

FLOWS = {
    "bot": """\
flow: bot
start: talk
nodes:
  talk:
    bot: {url: "{{ config.bot_url }}", parameters: {caller: "{{ call.from }}"}, connect_timeout: 5s}
    next: bye
  bye: {hangup: }
""",
    "plain": """\
flow: plain
start: wait
nodes:
  wait:
    collect: {max_digits: 20, timeout: 1h, inter_digit_timeout: 1h}
    next: bye
  bye: {hangup: }
""",
}


# -- the SIP caller ------------------------------------------------------------------------


@dataclass
class Call:
    index: int
    call_id: str
    tag: str
    server_rtp: tuple[str, int] | None = None
    to_tag: str = ""
    contact: str = ""
    answered: float | None = None
    failed: str | None = None
    sent: int = 0
    ssrc: int = 0
    echo_seen: list[int] = field(default_factory=lambda: [0, -1, -1])  # count, first, last counter


class Caller:
    """Many calls from one SIP socket and one RTP socket (the server latches each call's stream
    to our address; calls are told apart by the server port they come from)."""

    def __init__(self, target: tuple[str, int], service: str) -> None:
        self.target = target
        self.service = service
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.setblocking(False)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.calls: dict[str, Call] = {}
        self.by_port: dict[int, Call] = {}
        self.sent_at: dict[int, float] = {}  # sampled tag -> send time
        self.echo_at: dict[int, float] = {}  # sampled tag -> kernel arrival time
        self.burst_last: dict[int, float] = {}  # index << 32 | burst -> last arrival of its audio
        self.probe_at: dict[int, float] = {}  # latency probe frame -> kernel arrival time
        #: Latency probe calls (by the server port they come from) and the kernel arrival time of
        #: every packet of theirs: the tick grid each probe frame is measured against.
        self.probe_ports: dict[int, int] = {}
        self.packets_at: dict[int, list[float]] = {}
        self.sending = False

    def _request(self, call: Call, method: str, cseq: int, body: bytes = b"") -> bytes:
        host, port = self.target
        local = self.sip.getsockname()[1]
        uri = call.contact if method in ("ACK", "BYE") and call.contact else f"sip:{self.service}@{host}:{port}"
        to_tag = f";tag={call.to_tag}" if call.to_tag else ""
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
                 f"From: <sip:c{call.index}@127.0.0.1:{local}>;tag={call.tag}",
                 f"To: <sip:{self.service}@{host}:{port}>{to_tag}", f"Call-ID: {call.call_id}",
                 f"CSeq: {cseq} {method}", f"Contact: <sip:c{call.index}@127.0.0.1:{local}>", "Max-Forwards: 70"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _sdp(self) -> bytes:
        port = self.rtp.getsockname()[1]
        return (f"v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n").encode()

    def _on_sip(self) -> None:
        while True:
            try:
                data = self.sip.recv(65535).decode("utf-8", "replace")
            except BlockingIOError:
                return
            if not data.startswith("SIP/2.0"):
                continue
            status = int(data.split(" ", 2)[1])
            head = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
                    for line in data.split("\r\n\r\n", 1)[0].split("\r\n")[1:] if ":" in line}
            call = self.calls.get(head.get("call-id", ""))
            if call is None or "INVITE" not in head.get("cseq", "") or status < 200 or call.answered or call.failed:
                continue
            if status != 200:
                call.failed = f"INVITE {status}"
                continue
            call.to_tag = head.get("to", "").partition(";tag=")[2].split(";")[0]
            contact = head.get("contact", "")
            call.contact = contact[contact.find("<") + 1:contact.find(">")] if "<" in contact else contact
            body = data.split("\r\n\r\n", 1)[1]
            port = int(next(line.split()[1] for line in body.split("\r\n") if line.startswith("m=audio")))
            call.server_rtp = ("127.0.0.1", port)
            self.by_port[port] = call
            if call.index % PROBE_EVERY == PROBE_EVERY - 2:  # a latency probe call (bench.bridge_bot)
                self.probe_ports[port] = call.index
            call.answered = time.monotonic()
            self.sip.sendto(self._request(call, "ACK", 1), self.target)

    def _on_rtp(self) -> None:
        while True:
            try:
                data, ancillary, _flags, source = self.rtp.recvmsg(2048, _ANCILLARY)
            except BlockingIOError:
                return
            if len(data) < 172 or data[1] & 0x7F != 0:
                continue
            tag = read_tag(data[12:])
            probe_call = self.probe_ports.get(source[1])
            if tag is None and probe_call is None:
                continue
            stamp = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    stamp = seconds + nanoseconds / 1e9
            if probe_call is not None:
                self.packets_at.setdefault(probe_call, []).append(stamp)
            if tag is None:
                continue
            kind, index, counter = tag >> 48, (tag >> 32) & 0xFFFF, tag & 0xFFFFFFFF
            if kind == KIND_BURST:
                self.burst_last[index << 32 | counter // 1000] = stamp
                continue
            if kind == KIND_PROBE:
                self.probe_at[tag] = stamp
                continue
            call = self.by_port.get(source[1])
            if call is not None:
                seen = call.echo_seen
                seen[0] += 1
                if seen[1] < 0:
                    seen[1] = counter
                seen[2] = counter
            if counter % SAMPLE_EVERY == 0:
                self.echo_at[tag] = stamp

    async def start(self, count: int, first_index: int, rate: float) -> list[Call]:
        loop = asyncio.get_running_loop()
        if not self.calls:
            loop.add_reader(self.sip.fileno(), self._on_sip)
            loop.add_reader(self.rtp.fileno(), self._on_rtp)
        placed = []
        for i in range(count):
            call = Call(first_index + i, f"bridge-{uuid.uuid4().hex[:16]}@bench", uuid.uuid4().hex[:8],
                        ssrc=0x10000 + first_index + i)
            self.calls[call.call_id] = call
            placed.append(call)
            self.sip.sendto(self._request(call, "INVITE", 1, self._sdp()), self.target)
            await asyncio.sleep(1 / rate)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(c.answered or c.failed for c in placed):
            await asyncio.sleep(0.1)
        return placed

    async def stream(self) -> None:
        """One tagged packet per answered call every 20 ms, on a drift-free schedule."""
        self.sending = True
        start = time.monotonic()
        tick = 0
        while self.sending:
            tick += 1
            for call in list(self.calls.values()):
                if call.server_rtp is None or call.failed == "ended":
                    continue
                counter = call.sent
                tag_frame = make_frame(KIND_CALLER, call.index, counter)
                header = struct.pack("!BBHII", 0x80, 0, counter & 0xFFFF, counter * 160 & 0xFFFFFFFF, call.ssrc)
                sampled = counter % SAMPLE_EVERY == 0
                sent = time.time() if sampled else 0.0  # this packet's own send time, not the tick's
                try:
                    self.rtp.sendto(header + tag_frame, call.server_rtp)
                except OSError:
                    continue
                call.sent += 1
                if sampled:
                    self.sent_at[KIND_CALLER << 48 | call.index << 32 | counter] = sent
            delay = start + tick * TICK - time.monotonic()
            await asyncio.sleep(max(delay, 0))

    async def hang_up(self, calls: list[Call]) -> None:
        for call in calls:
            if call.answered:
                self.sip.sendto(self._request(call, "BYE", 2), self.target)
                call.failed = "ended"
            await asyncio.sleep(0.002)


# -- one step ------------------------------------------------------------------------------


@dataclass
class Step:
    flow: str
    calls: int
    hold: float
    answered: int = 0
    bridged: int = 0
    cpu_percent: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_max_mb: float = 0.0
    rss_samples_mb: list[float] = field(default_factory=list)
    harness_cpu_percent: float = 0.0  # the caller (this process) and the echo bot together
    load_average: float = 0.0  # of the machine, 1 minute, at the end of the hold
    bridge_counters: dict[str, int] = field(default_factory=dict)  # summed over the step's bridges
    loss_in: float | None = None
    loss_out: float | None = None
    dropped_ticks: float | None = None
    tick_timings: dict[str, dict[str, float]] = field(default_factory=dict)  # see tick_histograms

    def per_call_cpu(self) -> float:
        return self.cpu_percent / max(self.answered, 1)


class Server:
    """``ivr serve`` with the two flows, its bot URL and a metrics port."""

    def __init__(self, folder: Path, bot_port: int, priority: str = "normal", inband: str = "auto") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in FLOWS.items():
            (folder / f"{name}.yaml").write_text(text)
        self.sip_port = free_udp_port()
        self.metrics_port = free_tcp_port()
        low, high = random_port_range(4000)
        (folder / "ivr.yaml").write_text(
            f"listen: {{host: 127.0.0.1, port: {self.sip_port}, transports: [udp]}}\n"
            f"rtp_ports: [{low}, {high}]\nflows: [bot.yaml, plain.yaml]\nrecordings: rec\n"
            f"limits: {{max_calls: 5000, rate: {{per_source: 100000, burst: 100000}}}}\n"
            f"metrics_port: {self.metrics_port}\nlogging: {{level: info}}\ndrain_timeout: 1\n"
            f"priority: {priority}\nplugins: {{dtmf: {{inband: '{inband}'}}}}\n"
            f"variables: {{bot_url: 'ws://127.0.0.1:{bot_port}/'}}\n")
        self.log_path = folder / "serve.log"
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "ivr", "serve", "-c", "ivr.yaml"],
                                            cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONPATH": str(PROJECT)})
        try:
            wait_for_line(self.log_path, "ivr serving on", self.process, 30)
        except RuntimeError:
            terminate(self.process)
            raise

    def bridge_counters(self) -> dict[str, int]:
        """The bridges' own counters (their INFO line at the end of each bridge), summed over
        the bridges that ended since the last call."""
        offset = getattr(self, "_offset", 0)
        with self.log_path.open("rb") as log_file:
            log_file.seek(offset)
            data = log_file.read()
        self._offset = offset + data.rfind(b"\n") + 1
        totals: dict[str, int] = {}
        for line in data.decode(errors="replace").splitlines():
            if ": bot " not in line or " ended: " not in line or "; " not in line:
                continue
            for pair in line.rsplit("; ", 1)[1].split(", "):
                name, _, value = pair.strip().rpartition(" ")
                if value.isdigit():
                    totals[name] = totals.get(name, 0) + int(value)
        return totals

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus samples (name with labels -> value); empty when unreachable."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            return {}
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    samples[name] = float(value)
                except ValueError:
                    pass
        return samples

    def dropped_ticks(self) -> float | None:
        """The media clock's dropped ticks so far (None: metrics unreachable)."""
        return self.metrics().get("ivr_media_clock_dropped_ticks_total")

    def stop(self) -> None:
        terminate(self.process)


def tick_histograms(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    """The media clock's tick duration and lateness over a step: the share of firings (%) at or
    under each bucket bound (ms), from the server's cumulative histograms."""
    result: dict[str, dict[str, float]] = {}
    for short, metric in (("tick_duration", "ivr_media_tick_duration_seconds"),
                          ("tick_lateness", "ivr_media_tick_lateness_seconds")):
        count = after.get(metric + "_count", 0.0) - before.get(metric + "_count", 0.0)
        if count <= 0:
            continue
        shares = {}
        for name, value in after.items():
            if name.startswith(metric + "_bucket{") and '"+Inf"' not in name:
                bound = float(name.split('le="', 1)[1].split('"', 1)[0])
                shares[f"<={bound * 1000:g}ms"] = round(100 * (value - before.get(name, 0.0)) / count, 2)
        result[short] = dict(sorted(shares.items(), key=lambda item: float(item[0][2:-2])))
    return result


def _harness_cpu(bot_pids: list[int]) -> float:
    """CPU seconds of the caller (this process) and the bot processes together."""
    return sum(cpu_seconds(pid) or 0.0 for pid in [os.getpid(), *bot_pids])


async def run_step(server: Server, flow: str, calls: int, hold: float, first_index: int, rate: float,
                   bot_pids: list[int]) -> Step:
    step = Step(flow, calls, hold)
    caller = Caller(("127.0.0.1", server.sip_port), flow)
    placed = await caller.start(calls, first_index, rate)
    step.answered = sum(1 for c in placed if c.answered)
    sender = asyncio.create_task(caller.stream())
    await asyncio.sleep(2.0)  # bridges connect, jitter buffers fill
    pid = server.process.pid
    cpu_before, wall_before = cpu_seconds(pid) or 0.0, time.monotonic()
    harness_before = _harness_cpu(bot_pids)
    metrics_before = server.metrics()
    ticks_before = metrics_before.get("ivr_media_clock_dropped_ticks_total")
    rss = [rss_bytes(pid) or 0]
    end = time.monotonic() + hold
    while time.monotonic() < end:
        await asyncio.sleep(min(10.0, max(end - time.monotonic(), 0)))
        rss.append(rss_bytes(pid) or 0)
    wall = time.monotonic() - wall_before
    step.cpu_percent = 100 * ((cpu_seconds(pid) or 0.0) - cpu_before) / wall
    harness_after = _harness_cpu(bot_pids)
    step.harness_cpu_percent = 100 * (harness_after - harness_before) / wall
    step.load_average = os.getloadavg()[0]
    metrics_after = server.metrics()
    step.tick_timings = tick_histograms(metrics_before, metrics_after)
    ticks_after = metrics_after.get("ivr_media_clock_dropped_ticks_total")
    if ticks_before is not None and ticks_after is not None:
        step.dropped_ticks = ticks_after - ticks_before
    step.rss_start_mb, step.rss_end_mb, step.rss_max_mb = rss[0] / 2**20, rss[-1] / 2**20, max(rss) / 2**20
    step.rss_samples_mb = [round(value / 2**20, 1) for value in rss]
    caller.sending = False
    await sender
    await asyncio.sleep(1.0)  # the last echoes come back
    await caller.hang_up(placed)
    await asyncio.sleep(2.0)
    step.bridge_counters = server.bridge_counters()
    if flow == "bot":
        received = [c.echo_seen for c in placed if c.echo_seen[0] > 0]
        expected = sum(last - first + 1 for _, first, last in received)
        step.loss_out = 1 - sum(count for count, _, _ in received) / expected if expected else None
    step.caller = caller  # type: ignore[attr-defined]
    step.placed = placed  # type: ignore[attr-defined]
    return step


def percentiles(values: np.ndarray) -> str:
    if len(values) == 0:
        return "n/a"
    p50, p99 = np.percentile(values, [50, 99])
    return f"p50 {p50:.1f} / p99 {p99:.1f} / max {values.max():.1f} ms (n={len(values)})"


def probe_ticks(caller: Caller, data: dict[str, Any], indices: set[int]) -> dict[str, Any]:
    """Each latency probe frame against its call's packet grid: ``next`` is the share (%) that
    left in the first packet of the call to reach the caller after the bot sent it (the next
    tick), ``one_later`` in the one after (the frame reached the server while that tick was
    running, too late for it), ``later`` after that; and the wait from the bot's send to that
    first packet, p50 / p99 (the wait for the tick, plus the tick's work up to the send)."""
    counts = [0, 0, 0]
    waits = []
    for tag, sent in zip(data["probes_tag"], data["probes_sent"]):
        index = (int(tag) >> 32) & 0xFFFF
        arrived = caller.probe_at.get(int(tag))
        grid = caller.packets_at.get(index)
        if index not in indices or arrived is None or not grid:
            continue
        times = np.asarray(grid)
        first = int(np.searchsorted(times, sent, side="right"))
        if first >= len(times):
            continue
        missed = int(np.searchsorted(times, arrived, side="left")) - first
        counts[min(max(missed, 0), 2)] += 1
        waits.append((times[first] - sent) * 1000)
    total = sum(counts)
    if not total:
        return {}
    p50, p99 = np.percentile(waits, [50, 99])
    return {"next": round(100 * counts[0] / total, 2), "one_later": round(100 * counts[1] / total, 2),
            "later": round(100 * counts[2] / total, 2), "wait_to_next_packet_ms": f"p50 {p50:.1f} / p99 {p99:.1f}",
            "n": total}


def analyse(steps: list[Step], bot_files: list[Path], jitter_target_ms: int) -> dict[str, Any]:
    data = load_bot_files(bot_files)
    tags, arrived, echoed = data["tags"], data["arrived"], data["echoed"]
    report: dict[str, Any] = {"jitter_target_ms": jitter_target_ms, "steps": []}
    bot_calls = {int(row[0]): row[1:] for row in data["calls"]}
    for step in steps:
        row: dict[str, Any] = {k: getattr(step, k) for k in (
            "flow", "calls", "hold", "answered", "cpu_percent", "harness_cpu_percent", "load_average",
            "rss_start_mb", "rss_end_mb", "rss_max_mb", "rss_samples_mb", "loss_out", "dropped_ticks",
            "bridge_counters", "tick_timings")}
        row["cpu_per_call_percent"] = step.per_call_cpu()
        if step.flow == "bot":
            caller = step.caller  # type: ignore[attr-defined]
            indices = {c.index for c in step.placed}  # type: ignore[attr-defined]
            mine = np.array([((int(t) >> 32) & 0xFFFF) in indices for t in tags], dtype=bool)
            in_ms = [(arrived[i] - caller.sent_at[int(tags[i])]) * 1000 for i in np.flatnonzero(mine)
                     if int(tags[i]) in caller.sent_at]
            out_ms = [(caller.echo_at[int(tags[i])] - echoed[i]) * 1000 for i in np.flatnonzero(mine)
                      if int(tags[i]) in caller.echo_at]
            row["rtp_to_ws_ms"] = percentiles(np.array(in_ms))
            row["echo_ws_to_rtp_ms"] = percentiles(np.array(out_ms))  # includes the echo's standing queue
            probe_ms = [(caller.probe_at[int(t)] - sent) * 1000 for t, sent in zip(data["probes_tag"], data["probes_sent"])
                        if ((int(t) >> 32) & 0xFFFF) in indices and int(t) in caller.probe_at]
            row["ws_to_rtp_ms"] = percentiles(np.array(probe_ms))
            row["ws_to_rtp_ticks"] = probe_ticks(caller, data, indices)
            clears = []
            for key, at in zip(data["clears_tag"], data["clears_at"]):
                if (int(key) >> 32) in indices and int(key) in caller.burst_last:
                    clears.append((caller.burst_last[int(key)] - at) * 1000)
            row["clear_to_last_old_packet_ms"] = percentiles(np.array(clears))
            seen = [bot_calls[i] for i in indices if i in bot_calls]
            row["bridged"] = len(seen)
            expected = sum(last - first + 1 for _, first, last in seen if first >= 0)
            row["loss_in"] = 1 - sum(count for count, _, _ in seen) / expected if expected else None
        report["steps"].append(row)
    report["bot_connections"] = int(data["connections"])
    report["machine"] = f"{os.cpu_count()} CPUs"
    return report


def start_bot(folder: Path, nice: int = 0, processes: int = 1,
              rt: int = 0) -> tuple[list[subprocess.Popen], int, list[Path]]:
    """The echo bot, listening: ``processes`` processes on one port (``SO_REUSEPORT`` when more
    than one: the kernel spreads the connections); returns (processes, port, the files they
    write on SIGTERM)."""
    bot_port = free_tcp_port()
    bots: list[subprocess.Popen] = []
    files: list[Path] = []
    try:
        for number in range(processes):
            bot_file = folder / f"bot-{number}.npz"
            log_path = folder / f"bot-{number}.log"
            command = [sys.executable, "-m", "bench.bridge_bot", "--port", str(bot_port), "--out", str(bot_file),
                       "--nice", str(nice), "--rt", str(rt)] + (["--reuse-port"] if processes > 1 else [])
            with log_path.open("wb") as bot_log:
                bot = subprocess.Popen(command, cwd=PROJECT, stdout=bot_log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONPATH": str(PROJECT)})
            bots.append(bot)
            files.append(bot_file)
            wait_for_line(log_path, "READY", bot, 30)
    except RuntimeError:
        for bot in bots:
            terminate(bot)
        raise
    return bots, bot_port, files


def load_bot_files(files: list[Path]) -> dict[str, Any]:
    """The bot processes' measurements merged (per-call rows are disjoint: a call is one
    connection, so one process)."""
    parts = [np.load(path) for path in files]
    merged: dict[str, Any] = {}
    for key in ("tags", "arrived", "echoed", "clears_tag", "clears_at", "probes_tag", "probes_sent", "calls"):
        merged[key] = np.concatenate([part[key] for part in parts])
    merged["connections"] = sum(int(part["connections"]) for part in parts)
    merged["closed_abnormally"] = sum(int(part["closed_abnormally"]) for part in parts)
    return merged


async def bench(args: argparse.Namespace, folder: Path, bots: list[subprocess.Popen], bot_port: int,
                bot_files: list[Path]) -> dict[str, Any]:
    server: Server | None = None
    steps: list[Step] = []
    index = 0
    bot_pids = [bot.pid for bot in bots]
    try:
        server = Server(folder / "serve", bot_port, args.priority, args.inband)
        if args.harness_priority == "realtime":  # the caller, this process; after the server's start (not inherited)
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(HARNESS_RT))
        if args.plain:
            log.info("plain IVR: %d calls for %.0f s", args.plain, args.plain_hold)
            steps.append(await run_step(server, "plain", args.plain, args.plain_hold, index, args.rate, bot_pids))
            index += args.plain
            await asyncio.sleep(3)
        for number, calls in enumerate(args.steps):
            hold = args.hold if number == 0 else args.next_hold
            log.info("bridged: %d calls for %.0f s", calls, hold)
            step = await run_step(server, "bot", calls, hold, index, args.rate, bot_pids)
            steps.append(step)
            index += calls
            log.info("step done: %d answered, CPU %.0f %%", step.answered, step.cpu_percent)
            await asyncio.sleep(3)
            if step.answered < calls:
                break
    finally:
        if server is not None:
            server.stop()
        for bot in bots:
            terminate(bot)
    from simplesip.core.jitter import JitterBuffer

    target = JitterBuffer().target_frames * 20
    report = analyse(steps, bot_files, target)
    report["bot_processes"] = len(bots)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="100,150,200,300", help="bridged calls per step")
    parser.add_argument("--hold", type=float, default=300.0, help="seconds the first step holds its calls")
    parser.add_argument("--next-hold", type=float, default=60.0, help="seconds the later steps hold")
    parser.add_argument("--plain", type=int, default=100, help="plain IVR calls first, for CPU per call (0: skip)")
    parser.add_argument("--plain-hold", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=25.0, help="calls placed per second")
    parser.add_argument("--priority", choices=("normal", "high", "realtime"), default="high",
                        help="the server's `priority` setting (default high: nice -10, so that the "
                             "harness, which shares the machine, cannot starve it)")
    parser.add_argument("--harness-priority", choices=("normal", "high", "realtime"), default="normal",
                        help="the caller's and the echo bot's niceness (high: -10, like the server; measured "
                             "worse on this 2-core machine: the harness then takes CPU from the server); "
                             f"realtime: SCHED_RR {HARNESS_RT}, under a `--priority realtime` server (10) and over "
                             "every other process of a shared machine")
    parser.add_argument("--inband", choices=("auto", "off"), default="auto",
                        help="the server's plugins.dtmf.inband (auto, the default: the in-band DTMF detector "
                             "runs on every call, as this caller never sends an RFC 4733 key; off: as for "
                             "callers that do)")
    parser.add_argument("--bot-processes", type=int, default=2,
                        help="echo bot processes sharing one port (SO_REUSEPORT; default 2, one per core here)")
    parser.add_argument("--quick", action="store_true", help="5 plain and 5 bridged calls, 5 s each")
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    args.steps = [int(v) for v in str(args.steps).split(",") if v.strip()]
    if args.quick:
        args.steps, args.hold, args.plain, args.plain_hold = [5], 5.0, 5, 5.0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    folder = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    try:
        nice = HARNESS_NICE if args.harness_priority == "high" else 0
        rt = HARNESS_RT if args.harness_priority == "realtime" else 0
        if nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)  # the caller, this process
        bots, bot_port, bot_files = start_bot(folder, nice, args.bot_processes, rt)
        report = asyncio.run(bench(args, folder, bots, bot_port, bot_files))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
