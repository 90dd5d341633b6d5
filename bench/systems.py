"""The systems under test, each started as its own process in its own folder.

* :class:`IvrServerUnderTest`: ``ivr serve`` with the benchmark flows and a configuration made for
  the run (free SIP port, its own RTP range, limits raised, JSON logs so the per-call RTP
  statistics of each ``ended`` event can be read back).
* :class:`IvrClusterUnderTest` (:mod:`bench.cluster`): several of those behind Kamailio's
  dispatcher, the way to use more than one core.
* :class:`PyVoipUnderTest`: :mod:`bench.baseline_pyvoip`, the pyVoIP 1.6.8 auto-answer baseline.

All expose ``pid``, ``sip_port``, ``rtp_range``, ``start()``, ``stop()``,
``ended_call_stats()`` (per-call receive statistics since the last call, empty when the system
does not report them), ``workers`` ((pid, RTP range) of each media process), ``proxy_pids``
(processes that only relay signalling, measured apart) and ``dropped_ticks()`` (the media
clock's dropped ticks so far, None when the system has no such clock).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import media
from ivr.priority import HIGH_NICE, REALTIME_PRIORITY

log = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def random_port_range(size: int) -> tuple[int, int]:
    """An even-aligned port range of ``size`` in 32768-60999, random so parallel runs rarely meet."""
    low = random.randrange(32768, 61000 - size, 2)
    return low, low + size - 1


def whole_process_priority(level: str) -> None:
    """In a child before exec: the scheduling ``priority: level`` gives ``ivr serve``'s event
    loop (ivr/priority.py), here for every thread of the child: the baseline has no event loop,
    each call's media runs in threads of its own."""
    if level == "high":
        os.setpriority(os.PRIO_PROCESS, 0, HIGH_NICE)
    elif level == "realtime":
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(REALTIME_PRIORITY))


def prepare_flows(folder: Path) -> Path:
    """Copy the benchmark flows to ``folder`` and write their prompts beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    for flow in (BENCH_DIR / "flows").glob("*.yaml"):
        shutil.copy(flow, folder / flow.name)
    media.write_prompts(folder / "prompts")
    return folder


def wait_for_line(path: Path, needle: str, process: subprocess.Popen, timeout: float) -> None:
    """Wait until ``needle`` shows in the log ``path`` of ``process``; raise if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}: "
                               f"{path.read_text(errors='replace')[-2000:]}")
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{needle!r} not seen in {path} after {timeout:.0f} s")


def terminate(process: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM ``process`` (if running), SIGKILL it after ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


#: A media clock firing this late (seconds) counts as late in the step's figures.
LATE_FIRING = 0.01


class IvrServerUnderTest:
    """``ivr serve`` with the benchmark flow ``flow`` (``bench`` or ``bench_record``)."""

    name = "simplesip-ivr"

    def __init__(self, work_dir: Path, flow: str = "bench", max_calls: int = 5000,
                 rtp_range: tuple[int, int] | None = None, priority: str = "normal",
                 extra_config: str = "", launcher: list[str] | None = None) -> None:
        self.work_dir = work_dir / "ivr"
        #: The command before ``serve --config ...`` (default ``python -m ivr``); bench.call_memory
        #: runs the server under tracemalloc through its own launcher.
        self.launcher = launcher or [sys.executable, "-m", "ivr"]
        self.extra_config = extra_config  # YAML lines appended to ivr.yaml (e.g. a media: section)
        self.flow = flow
        self.priority = priority
        self.max_calls = max_calls
        self.sip_port = 0
        self.metrics_port = 0
        self.rtp_range = rtp_range or random_port_range(8000)
        self.process: subprocess.Popen | None = None
        self.log_path = self.work_dir / "server.log"
        self._log_offset = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def workers(self) -> list[tuple[int, tuple[int, int]]]:
        return [(self.pid, self.rtp_range)]

    proxy_pids: list[int] = []

    def server_metrics(self) -> dict[str, float] | None:
        """Counters from the server's Prometheus endpoint (cumulative): the media clock's
        ``dropped_ticks``, ``firings`` and ``late_firings`` (started more than
        :data:`LATE_FIRING` after their due time), and ``keys``, the RFC 4733 key presses it
        reported."""
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                       if line.startswith(("ivr_media_clock_dropped", "ivr_media_tick_lateness", "ivr_dtmf_events")))
        try:
            firings = float(samples["ivr_media_tick_lateness_seconds_count"])
            on_time = float(samples[f'ivr_media_tick_lateness_seconds_bucket{{le="{LATE_FIRING!r}"}}'])
            return {"dropped_ticks": float(samples["ivr_media_clock_dropped_ticks_total"]),
                    "firings": firings, "late_firings": firings - on_time,
                    "keys": float(samples.get('ivr_dtmf_events_total{source="rfc4733"}', 0.0))}
        except KeyError:
            return None  # a server without these metrics

    def start(self) -> None:
        flows = prepare_flows(self.work_dir / "flows")
        self.sip_port = free_udp_port()
        self.metrics_port = free_tcp_port()
        config = self.work_dir / "ivr.yaml"
        config.write_text(
            f"listen: {{host: 127.0.0.1, port: {self.sip_port}, transports: [udp]}}\n"
            f"rtp_ports: [{self.rtp_range[0]}, {self.rtp_range[1]}]\n"
            f"flows: [{flows / 'bench.yaml'}, {flows / 'bench_record.yaml'}]\n"
            f"default_flow: {self.flow}\n"
            f"recordings: {self.work_dir / 'recordings'}\n"
            f"limits: {{max_calls: {self.max_calls}, rate: {{per_source: 100000, burst: 100000}}}}\n"
            f"metrics_port: {self.metrics_port}\n"
            "logging: {format: json, level: info}\n"
            "drain_timeout: 2\n"
            f"priority: {self.priority}\n" + self.extra_config)
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [*self.launcher, "serve", "--config", str(config)],
                cwd=self.work_dir, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)})
        wait_for_line(self.log_path, "ivr serving on", self.process, 20.0)
        if self.priority != "normal" and "event loop at" not in self.log_path.read_text():
            self.stop()
            raise RuntimeError(f"ivr serve did not apply priority {self.priority} (run the bench as root "
                               f"or with CAP_SYS_NICE); see {self.log_path}")
        self._log_offset = self.log_path.stat().st_size
        log.info("ivr serve pid %d on 127.0.0.1:%d (RTP %d-%d, flow %s)", self.pid, self.sip_port,
                 *self.rtp_range, self.flow)

    def stop(self) -> None:
        terminate(self.process)

    def ended_call_stats(self) -> list[dict[str, Any]]:
        """The RTP statistics of every call that ended since the last call to this method."""
        with self.log_path.open("rb") as log_file:
            log_file.seek(self._log_offset)
            data = log_file.read()
        complete = data.rfind(b"\n") + 1
        self._log_offset += complete
        stats: list[dict[str, Any]] = []
        for line in data[:complete].splitlines():
            if b'"event": "ended"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            stats.append(entry.get("stats") or {})
        return stats


class PyVoipUnderTest:
    """The pyVoIP 1.6.8 baseline (:mod:`bench.baseline_pyvoip`) answering for ``peer_port``.

    pyVoIP sends every SIP message to its configured server, so the SIPp that calls it must be
    bound to ``peer_port``.
    """

    name = "pyvoip-1.6.8"

    def __init__(self, work_dir: Path, priority: str = "normal") -> None:
        self.work_dir = work_dir / "pyvoip"
        self.priority = priority
        self.sip_port = 0
        self.peer_port = 0
        self.rtp_range = random_port_range(4000)
        self.process: subprocess.Popen | None = None
        self.log_path = self.work_dir / "pyvoip.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        flows = prepare_flows(self.work_dir / "flows")
        self.sip_port, self.peer_port = free_udp_port(), free_udp_port()
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.baseline_pyvoip", "--sip-port", str(self.sip_port),
                 "--peer-port", str(self.peer_port), "--rtp-range", f"{self.rtp_range[0]}-{self.rtp_range[1]}",
                 "--prompt", str(flows / "prompts" / "bench_menu.wav")],
                cwd=self.work_dir, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
                preexec_fn=functools.partial(whole_process_priority, self.priority))
        wait_for_line(self.log_path, "baseline ready", self.process, 20.0)

    @property
    def workers(self) -> list[tuple[int, tuple[int, int]]]:
        return [(self.pid, self.rtp_range)]

    proxy_pids: list[int] = []

    def stop(self) -> None:
        terminate(self.process, grace=5.0)

    def ended_call_stats(self) -> list[dict[str, Any]]:
        return []  # pyVoIP keeps no receive statistics

    def server_metrics(self) -> dict[str, float] | None:
        return None  # no metrics endpoint (and one thread per call and direction: no media clock)
