"""``simplesip-ivr xN``: N ``ivr serve`` workers behind Kamailio's dispatcher.

One ``ivr serve`` process is one Python thread, so it uses one core. To use more, run one worker
per core and let Kamailio's dispatcher spread the calls over them (docs/deploy.md, section 5).
SO_REUSEPORT cannot do it here: the kernel picks a socket by hashing the source address, and
SIPp's calls all come from one source, so they would all land on one worker.

The benchmark calls Kamailio; Kamailio round-robins each INVITE to a worker and stays in the
signalling path (Record-Route), RTP goes straight between SIPp and the worker. Kamailio's CPU
(the main process and its forked children) is measured apart: it is the price of the second
core.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.procstats import child_pids
from bench.systems import (
    BENCH_DIR,
    IvrServerUnderTest,
    free_udp_port,
    random_port_range,
    terminate,
)

log = logging.getLogger(__name__)

KAMAILIO_TEMPLATE = BENCH_DIR / "kamailio" / "dispatcher.cfg"
#: UDP receiver processes. One: two processes reading the same socket can forward a worker's 180
#: and 200 to the caller in the opposite order, and SIPp's scenario aborts a call on a 1xx after
#: its 200 (a failed call that no server caused). One process relays 300 call set-ups a second
#: at a fraction of a core (about 0.7 ms of CPU per call).
KAMAILIO_CHILDREN = 1
RTP_PORTS_PER_WORKER = 4000


class IvrClusterUnderTest:
    """``workers`` ``ivr serve`` processes behind one Kamailio dispatcher (SIP port: Kamailio's)."""

    def __init__(self, work_dir: Path, workers: int = 2, flow: str = "bench", max_calls: int = 5000,
                 priority: str = "normal") -> None:
        self.work_dir = work_dir / f"cluster{workers}"
        self.name = f"simplesip-ivr x{workers}"
        self.flow = flow
        low, _ = random_port_range(RTP_PORTS_PER_WORKER * workers)
        self.servers = [
            IvrServerUnderTest(self.work_dir / f"worker{n}", flow=flow, max_calls=max_calls,
                               rtp_range=(low + n * RTP_PORTS_PER_WORKER,
                                          low + (n + 1) * RTP_PORTS_PER_WORKER - 1), priority=priority)
            for n in range(workers)
        ]
        self.rtp_range = (self.servers[0].rtp_range[0], self.servers[-1].rtp_range[1])
        self.sip_port = 0
        self.kamailio: subprocess.Popen | None = None
        self.kamailio_log = self.work_dir / "kamailio.log"

    @property
    def pid(self) -> int:
        """The first worker (single-process callers); see :attr:`workers` for all of them."""
        return self.servers[0].pid

    @property
    def workers(self) -> list[tuple[int, tuple[int, int]]]:
        return [(server.pid, server.rtp_range) for server in self.servers]

    @property
    def proxy_pids(self) -> list[int]:
        """Kamailio's main process and every process it forked (receivers, timers, ctl)."""
        if self.kamailio is None or self.kamailio.poll() is not None:
            return []
        return [self.kamailio.pid, *child_pids(self.kamailio.pid)]

    def start(self) -> None:
        if shutil.which("kamailio") is None:
            raise RuntimeError("kamailio is not installed (apt-get install kamailio)")
        for server in self.servers:
            server.start()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "dispatcher.list").write_text(
            "".join(f"1 sip:127.0.0.1:{server.sip_port}\n" for server in self.servers))
        self.sip_port = free_udp_port()
        config = self.work_dir / "kamailio.cfg"
        config.write_text(KAMAILIO_TEMPLATE.read_text().replace("@PORT@", str(self.sip_port))
                          .replace("@DIR@", str(self.work_dir))
                          .replace("@CHILDREN@", str(KAMAILIO_CHILDREN)))
        with self.kamailio_log.open("wb") as out:
            self.kamailio = subprocess.Popen(
                ["kamailio", "-f", str(config), "-P", str(self.work_dir / "kamailio.pid"),
                 "-Y", str(self.work_dir), "-m", "256", "-M", "16", "-DD", "-E"],
                cwd=self.work_dir, stdout=out, stderr=subprocess.STDOUT)
        self._wait_for_kamailio()
        log.info("%s: kamailio pid %d on 127.0.0.1:%d -> workers %s", self.name, self.kamailio.pid,
                 self.sip_port, ", ".join(str(s.sip_port) for s in self.servers))

    def _wait_for_kamailio(self, timeout: float = 10.0) -> None:
        """Until Kamailio's UDP socket is bound (it logs nothing at debug=1 once up)."""
        assert self.kamailio is not None
        deadline = time.monotonic() + timeout
        wanted = f":{self.sip_port:04X} "
        while time.monotonic() < deadline:
            if self.kamailio.poll() is not None:
                raise RuntimeError(f"kamailio exited with {self.kamailio.returncode}: "
                                   f"{self.kamailio_log.read_text(errors='replace')[-2000:]}")
            if any(wanted in line.split(None, 3)[1] + " " for line in
                   Path("/proc/net/udp").read_text().splitlines()[1:]):
                return
            time.sleep(0.1)
        raise RuntimeError(f"kamailio not listening on {self.sip_port} after {timeout:.0f} s")

    def stop(self) -> None:
        terminate(self.kamailio, grace=5.0)
        for server in self.servers:
            server.stop()

    def ended_call_stats(self) -> list[dict[str, Any]]:
        return [stats for server in self.servers for stats in server.ended_call_stats()]

    def server_metrics(self) -> dict[str, float] | None:
        known = [m for m in (server.server_metrics() for server in self.servers) if m is not None]
        return {key: sum(m[key] for m in known) for key in known[0]} if known else None

    def calls_per_worker(self) -> list[int]:
        """Calls each worker has ended since the start (from its log): how even the spread is."""
        return [server.log_path.read_bytes().count(b'"event": "ended"') for server in self.servers]
