"""A real DNS server for the RFC 3263 tests: dnsmasq on a free loopback port, records from the
command line, authoritative (NXDOMAIN) for the test domains, every query logged."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Sequence

from tests.helpers.net import free_port
from tests.helpers.peers import PeerProcess

#: Domains dnsmasq answers for itself: unknown names there are NXDOMAIN, not REFUSED.
LOCAL_DOMAINS = ("example", "invalid")


class DnsmasqRunner(PeerProcess):
    """dnsmasq in the foreground; ``records`` are its record options without the leading dashes,
    e.g. ``"srv-host=_sip._udp.test.example,sip1.test.example,5160,10,50"``."""

    def __init__(self, workdir: Path, records: Sequence[str], *, ttl: int = 60):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.query_log = workdir / "dnsmasq-queries.log"
        argv = ["dnsmasq", "--keep-in-foreground", f"--port={self.port}",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--no-negcache", f"--local-ttl={ttl}", f"--pid-file={workdir / 'dnsmasq.pid'}",
                "--log-queries", f"--log-facility={self.query_log}",
                *(f"--local=/{domain}/" for domain in LOCAL_DOMAINS),
                *(f"--{record}" for record in records)]
        super().__init__("dnsmasq", argv, workdir)
        self.wait_listening()

    @property
    def nameserver(self) -> str:
        """What ``EndpointConfig.dns_nameservers`` takes."""
        return f"127.0.0.1:{self.port}"

    def wait_listening(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited early:\n{self.log()}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", self.port))
                except OSError:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"dnsmasq did not bind {self.port}:\n{self.log()}")

    def queries(self, name: str, kind: str) -> int:
        """How many queries for ``name`` (type ``kind``) dnsmasq has received."""
        if not self.query_log.exists():
            return 0
        needle = f"query[{kind}] {name} from"
        return sum(needle in line for line in self.query_log.read_text(errors="replace").splitlines())

    def log(self) -> str:
        text = super().log()
        if self.query_log.exists():
            text += self.query_log.read_text(errors="replace")[-3000:]
        return text
