"""Scheduling priority for the event loop's thread: the media clock, SIP and the flows.

The 20 ms media clock has to fire on time. On a machine that runs other busy processes, the
kernel's fair scheduler makes the loop wait its turn behind them now and then, and every wait
is heard as jitter in every call's outbound audio. Telephony servers raise their priority for
this (Asterisk's ``-p``, FreeSWITCH's ``-rp`` / ``-hp``); the configuration key ``priority``
does the same:

``normal``
    leave the scheduler alone (the default);
``high``
    nice -10 (:data:`HIGH_NICE`): the loop gets about nine times the CPU share of a process at
    the default nice when both want the CPU;
``realtime``
    ``SCHED_RR`` priority 10 (:data:`REALTIME_PRIORITY`, Asterisk's value): the loop runs as soon
    as it is ready, ahead of every ordinary process. The kernel keeps 5 % of each CPU for
    ordinary processes (``kernel.sched_rt_runtime_us``): a real-time thread that needs more
    than 95 % of a core is paused for the rest of each second, so keep it well under a core;
    and run fewer real-time instances than cores, or they hold everything else (proxy, shell,
    ssh) off the CPUs. Measured in docs/performance.md, "Round 4".

Only the loop's thread is raised. Threads it starts later (the default executor: speech
recognition, blocking file work) would inherit its priority, so the loop gets a default
executor whose threads go back to the priority the process had before.

Raising priority needs ``CAP_SYS_NICE`` (root, ``AmbientCapabilities=CAP_SYS_NICE`` in a systemd
unit, ``--cap-add SYS_NICE`` for a container) or a matching ``ulimit -e`` / ``-r``. Without it
:func:`raise_loop_priority` raises :class:`PermissionError` and the caller decides; the server
logs a warning and serves at normal priority.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["HIGH_NICE", "PRIORITIES", "REALTIME_PRIORITY", "raise_loop_priority"]

PRIORITIES = ("normal", "high", "realtime")
HIGH_NICE = -10
REALTIME_PRIORITY = 10


def raise_loop_priority(level: str, loop: asyncio.AbstractEventLoop) -> str | None:
    """Raise the calling thread (``loop``'s) to ``level`` (one of :data:`PRIORITIES`).

    Returns a description of what was set, None for ``normal``. Raises :class:`PermissionError`
    without the right to raise priority and :class:`NotImplementedError` where the system has no
    such call (``realtime`` outside Linux and the BSDs); nothing is changed then.
    """
    if level not in PRIORITIES:
        raise ValueError(f"priority {level!r} is not one of {', '.join(PRIORITIES)}")
    if level == "normal":
        return None
    thread_id = threading.get_native_id()
    base_nice = os.getpriority(os.PRIO_PROCESS, thread_id)
    if level == "high":
        # On Linux a nice value belongs to a thread: PRIO_PROCESS with a thread id sets that
        # thread's alone.
        nice = min(base_nice, HIGH_NICE)  # never lower a priority set from outside
        os.setpriority(os.PRIO_PROCESS, thread_id, nice)
        described = f"nice {nice}"
    else:
        if not hasattr(os, "sched_setscheduler"):
            raise NotImplementedError("this system has no sched_setscheduler")
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(REALTIME_PRIORITY))  # 0: this thread
        described = f"SCHED_RR {REALTIME_PRIORITY}"
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="ivr-worker",
                                                 initializer=_back_to_normal, initargs=(base_nice,)))
    return described


def _back_to_normal(nice: int) -> None:
    """Executor thread start: drop what the loop's thread passed on (lowering needs no right)."""
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
