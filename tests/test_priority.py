"""``priority``: the event loop's thread is raised, the threads it starts later are not, and a
server without the right to raise it says so and serves on.

The kernel's answer depends on the process's rights (``CAP_SYS_NICE``): a privileged run checks
the raised priority, an unprivileged one the refusal. The refusal is also checked from a
privileged run by dropping the capability (``setpriv``, util-linux)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ivr.config import ConfigError, parse_config
from ivr.priority import HIGH_NICE, REALTIME_PRIORITY

ROOT = Path(__file__).resolve().parent.parent


def _privileged(level: str = "realtime") -> bool:
    """Whether a child of this process may raise itself to ``level`` (CAP_SYS_NICE, or an rtprio /
    nice resource limit that allows it)."""
    call = ("os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))" if level == "realtime"
            else "os.setpriority(os.PRIO_PROCESS, 0, -10)")
    return subprocess.run([sys.executable, "-c", f"import os; {call}"], capture_output=True).returncode == 0


# Raises the loop's thread, then reports (policy, priority, nice) of the loop's thread and of a
# default-executor thread started afterwards, or the refusal.
SCRIPT = """
import asyncio, os, sys, threading
from ivr.priority import raise_loop_priority

def state():
    tid = threading.get_native_id()
    return (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority,
            os.getpriority(os.PRIO_PROCESS, tid))

async def main(level):
    loop = asyncio.get_running_loop()
    try:
        applied = raise_loop_priority(level, loop)
    except PermissionError:
        print("refused", state())
        return
    worker = await loop.run_in_executor(None, state)
    print("applied", applied, state(), worker)

asyncio.run(main(sys.argv[1]))
"""


def _run(level: str, prefix: tuple[str, ...] = ()) -> str:
    done = subprocess.run([*prefix, sys.executable, "-c", SCRIPT, level], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_realtime_raises_the_loop_thread_and_not_the_threads_it_starts() -> None:
    out = _run("realtime")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if _privileged():
        assert out == (f"applied SCHED_RR {REALTIME_PRIORITY} "
                       f"({os.SCHED_RR}, {REALTIME_PRIORITY}, {base}) ({os.SCHED_OTHER}, 0, {base})")
    else:
        assert out == f"refused ({os.SCHED_OTHER}, 0, {base})"


def test_high_sets_nice_on_the_loop_thread_only() -> None:
    out = _run("high")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if _privileged("high"):
        nice = min(base, HIGH_NICE)
        assert out == (f"applied nice {nice} ({os.SCHED_OTHER}, 0, {nice}) ({os.SCHED_OTHER}, 0, {base})")
    else:
        assert out == f"refused ({os.SCHED_OTHER}, 0, {base})"


def test_normal_changes_nothing() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert _run("normal") == f"applied None ({os.SCHED_OTHER}, 0, {base}) ({os.SCHED_OTHER}, 0, {base})"


def test_a_process_without_the_right_is_refused_and_left_unchanged() -> None:
    prefix = ("setpriv", "--bounding-set", "-sys_nice") if os.geteuid() == 0 else ()
    if prefix:
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to drop CAP_SYS_NICE"
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert _run("realtime", prefix) == f"refused ({os.SCHED_OTHER}, 0, {base})"


def test_serve_without_the_right_warns_and_serves_at_normal_priority(tmp_path: Path) -> None:
    config = tmp_path / "ivr.yaml"
    config.write_text("listen: {host: 127.0.0.1, port: 0, transports: [udp]}\npriority: realtime\n")
    prefix = ["setpriv", "--bounding-set", "-sys_nice"] if os.geteuid() == 0 else []
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen([*prefix, sys.executable, "-m", "ivr", "serve", "--config", str(config)],
                                  cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 20
        while "ivr serving on" not in log.read_text() and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert "ivr serving on" in text, text
        assert "priority realtime not applied, serving at normal priority" in text
        assert "CAP_SYS_NICE" in text
        assert os.sched_getscheduler(server.pid) == os.SCHED_OTHER
    finally:
        server.terminate()
        server.wait(10)


def test_config_priority_values_and_errors() -> None:
    assert parse_config("").priority == "normal"
    assert parse_config("priority: realtime").priority == "realtime"
    with pytest.raises(ConfigError, match=r"^ivr.yaml:2: priority: 'urgent' is not one of normal, high, realtime$"):
        parse_config("drain_timeout: 5\npriority: urgent\n", source="ivr.yaml")


def test_the_benchmark_gives_its_systems_the_priority_asked_for(tmp_path: Path) -> None:
    """``python -m bench --priority``: our server through its setting (refusing to measure at
    normal priority when it was not applied), pyVoIP's whole process at exec."""
    from functools import partial

    from bench.systems import IvrServerUnderTest, whole_process_priority

    def child() -> str:
        return subprocess.run([sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"],
                              preexec_fn=partial(whole_process_priority, "high"), capture_output=True,
                              text=True, check=True).stdout.strip()

    server = IvrServerUnderTest(tmp_path, flow="bench", max_calls=5, priority="high")
    if _privileged("high"):
        assert child() == str(HIGH_NICE)
        server.start()
        try:
            assert os.getpriority(os.PRIO_PROCESS, server.pid) == HIGH_NICE
        finally:
            server.stop()
    else:
        with pytest.raises(subprocess.SubprocessError):  # the child fails before exec
            child()
        with pytest.raises(RuntimeError, match="did not apply priority high"):
            server.start()


def test_a_priority_changed_by_sighup_waits_for_the_next_start(tmp_path: Path, caplog) -> None:
    from ivr.server import IvrServer
    from tests.helpers.engine_fakes import FakeEndpoint

    (tmp_path / "bye.yaml").write_text("flow: bye\nstart: a\nnodes:\n  a: {hangup: }\n")
    config = tmp_path / "ivr.yaml"
    config.write_text("flows: [bye.yaml]\n")
    server = IvrServer(config, endpoint_factory=lambda cfg: FakeEndpoint())
    try:
        config.write_text("flows: [bye.yaml]\npriority: realtime\n")
        with caplog.at_level("WARNING", logger="ivr.server"):
            server.reload()
        assert "priority normal -> realtime takes effect at the next start" in caplog.text
        assert server.config.priority == "realtime"  # the rest of the file is taken
    finally:
        server.close()
