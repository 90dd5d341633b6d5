"""What the kernel knows about the processes and sockets under test, read from /proc.

* CPU: ``utime + stime`` of a process and its threads (``/proc/PID/stat``), as a percentage of
  one core over a sampling window (so 2 cores saturated read 200 %).
* Memory: resident set size (``VmRSS`` of ``/proc/PID/status``).
* UDP drops: the ``drops`` column of ``/proc/net/udp`` counts, per socket, datagrams the kernel
  threw away because the socket's receive buffer was full. On loopback nothing else loses a
  datagram, so the drops of the sockets in the server's RTP port range are its inbound network
  loss. Sockets vanish when calls end, so :class:`UdpDropCounter` polls and keeps the last count
  seen per socket.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MACHINE = 0  # CpuWindow(MACHINE): every CPU of the box


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` in seconds (None once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" closing the command name: state is field 0, utime 11, stime 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes (None once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot (``/proc/stat``), for the box's total load."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


@dataclass
class CpuWindow:
    """CPU use of one process (or of the whole machine: ``pid=MACHINE``) between :meth:`start`
    and :meth:`stop`, in % of one core."""

    pid: int
    _cpu: float = 0.0
    _wall: float = 0.0
    percent: float | None = None
    wall_seconds: float = 0.0

    def _read(self) -> float | None:
        return machine_busy_seconds() if self.pid == MACHINE else cpu_seconds(self.pid)

    def start(self) -> None:
        self._cpu = self._read() or 0.0
        self._wall = time.monotonic()

    def stop(self) -> float | None:
        cpu = self._read()
        wall = self.wall_seconds = time.monotonic() - self._wall
        if cpu is not None and wall > 0:
            self.percent = 100.0 * (cpu - self._cpu) / wall
        return self.percent


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets ``pid`` has open (from its ``/proc/PID/fd`` links)."""
    inodes: set[str] = set()
    folder = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(folder)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(folder / name)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


class UdpDropCounter:
    """Sum of receive-buffer drops over the UDP sockets of process ``pid`` bound to ports in
    ``[low, high]`` (the owner check keeps other programs' sockets in that range out, such as a
    SIPp media socket nobody reads)."""

    def __init__(self, pid: int, low: int, high: int) -> None:
        self.pid = pid
        self.low, self.high = low, high
        self._seen: dict[str, int] = {}  # socket inode -> drops last read
        self._baseline: dict[str, int] = {}

    def _read(self) -> dict[str, int]:
        owned = socket_inodes(self.pid)
        counts: dict[str, int] = {}
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                if len(parts) < 13:
                    continue
                port = int(parts[1].rsplit(":", 1)[1], 16)
                if self.low <= port <= self.high and parts[9] in owned:
                    counts[parts[9]] = int(parts[12])
        return counts

    def reset(self) -> None:
        """Start a new window: drops counted so far on live sockets are not this window's."""
        self._baseline = self._read()
        self._seen = dict(self._baseline)

    def poll(self) -> None:
        """Read the counters now (call often enough to see sockets before they close)."""
        self._seen.update(self._read())

    @property
    def drops(self) -> int:
        return sum(count - self._baseline.get(inode, 0) for inode, count in self._seen.items())


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Kamailio's forked workers, say)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # after ")": state, ppid
            children.append(int(entry))
    return children


class GroupCpuWindow:
    """:class:`CpuWindow` summed over several processes (workers, or a proxy and its children),
    in % of one core. Processes that exit during the window count for the time they ran."""

    def __init__(self, pids: list[int]) -> None:
        self.windows = [CpuWindow(pid) for pid in pids if pid != MACHINE]
        self.percent: float | None = None

    def start(self) -> None:
        for window in self.windows:
            window.start()

    def stop(self) -> float | None:
        shares = [window.stop() for window in self.windows]
        known = [share for share in shares if share is not None]
        self.percent = sum(known) if known else None
        return self.percent

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds used over the window (after :meth:`stop`)."""
        return sum((w.percent or 0.0) / 100 * w.wall_seconds for w in self.windows)
