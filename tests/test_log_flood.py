"""A flood of bad requests is counted in the metrics, not written to the log line by line."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from pathlib import Path

from ivr.logs import FloodFilter
from tests.helpers.net import free_port
from tests.helpers.robust_server import serving
from tests.helpers.waiting import wait_for_sync

ROOT = Path(__file__).resolve().parent.parent


def record(name: str, msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_the_flood_filter_lets_a_burst_through_then_counts_what_it_left_out() -> None:
    now = [0.0]
    flood = FloodFilter(burst=3, interval=10, clock=lambda: now[0])
    passed = [flood.filter(record("simplesip.aio.endpoint", "rejected message from %s: %s", ("1.2.3.4", i), "bad"))
              for i in range(100)]
    assert passed == [True] * 3 + [False] * 97
    assert flood.filter(record("simplesip.aio.endpoint", "another kind %s", 1))  # kinds are counted apart
    assert flood.filter(record("ivr.security", "auth_failure ip=%s", "1.2.3.4"))  # never held back
    assert flood.filter(record("simplesip.aio.endpoint", "rejected %s", 1, level=logging.ERROR))
    now[0] = 10.5
    summary = record("simplesip.aio.endpoint", "rejected message from %s: %s", ("1.2.3.4", 0), "bad")
    assert flood.filter(summary)
    assert summary.getMessage().endswith("(97 more like this in the last 10 s)")


def test_ivr_serve_counts_a_flood_of_garbage_and_logs_a_few_lines(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port(socket.SOCK_STREAM)
    args = ("--listen", f"127.0.0.1:{port}", "--set", f"metrics_port={metrics}", "--set", "logging.level=info",
            str(ROOT / "flows" / "voicemail.yaml"))
    with serving(*args, cwd=tmp_path) as server_log:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            for i in range(300):  # paced a little: a full socket buffer would drop some unseen
                attacker.sendto(b"INVITE sip:x SIP/2.0\r\nVia: garbage %d\r\n\r\n" % i, ("127.0.0.1", port))
                if i % 25 == 24:
                    time.sleep(0.05)

        def rejected() -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as reply:
                lines = reply.read().decode().splitlines()
            return float(next(line.split()[1] for line in lines if line.startswith("ivr_sip_rejected_messages_total")))

        wait_for_sync(lambda: rejected() >= 300, timeout=30, message=lambda: f"counted {rejected()}")
        counted = rejected()
        text = server_log()
    assert counted == 300
    assert 1 <= text.count("rejected message from") <= 20, text[-3000:]
