"""The media side of an Endpoint: the one 20 ms media clock and the tick it runs for every call
(the per-call sockets are in :mod:`simplesip.aio.rtpsocket`, re-exported here).

One :class:`MediaClock` per Endpoint drives every call. Tick ``k`` is scheduled at ``t0 + k*20 ms``
(absolute times, so scheduling error never accumulates). When the loop was blocked and several
ticks are overdue, every one of them still runs, in order, because each owes the consumer one
received frame per call (a recording must hold every sample that arrived). Only their outbound
side is limited: the last ``max_burst`` overdue ticks send, the older ones skip their packet and
move the RTP timestamp on, so the peer sees a gap rather than a burst that would overflow its
jitter buffer. No outbound audio is lost in the gap: the plain path leaves its send queue alone,
and a batched consumer reads :attr:`MediaClock.sending` to hold its place (the IVR engine tells
its plugins, ``AudioBatch.send``), so a prompt resumes after the gap where it stopped.

Each tick (:func:`run_tick`) pulls one frame per live call, decodes all calls at once with numpy
(``(N, 160)`` codes -> ``(N, 160)`` int16), lets the consumer produce ``(N, 160)`` outbound audio,
encodes it per codec in one lookup per codec, and sends one packet per call. Nothing here is
allocated per call per tick beyond the packets themselves. When every call's session is a
:class:`~simplesip.core.rtpsession.NativeRtpSession` (the compiled path,
:mod:`simplesip.core.native`), pulling and decoding is one call into the extension for the whole
batch, and so is encoding, building and sending the packets (``sendto`` on each call's RTP
socket from C, falling back to the asyncio transport for a packet the kernel does not take at
once); the frame size is the sessions' own (``frame_samples``, 160 at 8 kHz).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from simplesip.aio.rtpsocket import RtpReader, RtpSocket, open_rtp_socket
from simplesip.core.native import native as _native
from simplesip.wire import g711

if TYPE_CHECKING:
    from simplesip.core.rtpsession import RtpSession

log = logging.getLogger(__name__)

__all__ = [
    "FRAME_SAMPLES", "FRAME_INTERVAL", "MediaClock", "MediaLeg", "OnTick", "RtpReader", "RtpSocket", "TickTimings",
    "open_rtp_socket", "run_tick", "send_rtcp_reports",
]

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_INTERVAL = 0.020
_FRAME_BYTES = FRAME_SAMPLES * 2


#: How far behind the clock still runs every missed tick. Past this (2 s) the oldest are dropped:
#: a longer catch-up would itself block the loop (SIP timers, other sockets) for too long.
MAX_CATCH_UP_TICKS = 100

TickCallback = Callable[[float, int, bool], None]

#: Upper bounds (seconds) of the buckets of :class:`TickTimings`: around the 20 ms frame.
TICK_TIMING_BUCKETS = (0.001, 0.002, 0.005, 0.010, 0.020, 0.050, 0.100)


class TickTimings:
    """A fixed-bucket histogram of one figure per clock firing (Prometheus style: ``counts[i]``
    is the number of values at most ``bounds[i]``, the last count is above every bound).

    The clock keeps two: how late each firing started, and how long its ticks took. Lateness is
    what a caller hears as jitter in our packets (the loop was busy, or the process was not
    scheduled); duration is our own work. Together they tell the two causes apart.
    """

    def __init__(self, bounds: Sequence[float] = TICK_TIMING_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, values at most it)`` pairs ending with ``+Inf``, for exposition."""
        pairs, running = [], 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            running += count
            pairs.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return pairs


class MediaClock:
    """Calls ``on_tick(now, tick_number, send)`` every ``interval`` seconds without drift.

    ``send`` is False for an overdue tick older than the last ``max_burst`` (see the module
    docstring): the consumer processes its inbound side and skips its packet.

    A stall and overload look alike to one firing (ticks overdue) but call for opposite answers.
    After a stall every missed tick runs (up to ``max_catch_up``): if ticks cost less than real
    time the backlog shrinks firing after firing until the clock is on time again. If the backlog
    fails to shrink on two firings in a row, the ticks cost more than real time and catching up
    would only grow the delay: the clock then sheds load, running at most ``max_burst`` ticks per
    firing and dropping older ones (``dropped_ticks``; the jitter buffers trim what piles up),
    until a firing finds it on time. (Two, not one: a firing made late by load followed by a stall
    is not overload.)
    """

    def __init__(self, on_tick: TickCallback, interval: float = FRAME_INTERVAL, max_burst: int = 2,
                 max_catch_up: int = MAX_CATCH_UP_TICKS):
        self.on_tick = on_tick
        self.interval = interval
        self.max_burst = max_burst
        self.max_catch_up = max(max_catch_up, max_burst)
        self.tick_number = 0
        #: False while a catch-up tick runs (its ``send`` argument): a consumer that cannot be
        #: passed ``send`` (the batched ``on_tick``) reads it here to hold its outbound audio.
        self.sending = True
        #: Ticks run with ``send=False`` after a stall (inbound processed, packet skipped).
        self.catch_up_ticks = 0
        #: Ticks not run at all (overload, or more than ``max_catch_up`` behind).
        self.dropped_ticks = 0
        self._last_backlog = 0  # ticks overdue at the previous firing
        self._backlog_held = 0  # firings in a row whose backlog did not shrink
        #: True while the clock sheds load (see the class docstring).
        self.overloaded = False
        #: How late each firing started against its due time, and how long its ticks ran.
        self.lateness = TickTimings()
        self.tick_duration = TickTimings()
        self._t0 = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start ticking on ``loop`` (default: the running loop); the first tick is one interval
        from now. Anything with ``time()`` and ``call_at()`` will do, which lets tests drive the
        clock through stalls and overload deterministically."""
        if self._handle is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self.tick_number = 0
        self._last_backlog = self._backlog_held = 0
        self.overloaded = False
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._handle = self._loop.call_at(self._t0 + (self.tick_number + 1) * self.interval, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        # The latest tick that is due; the epsilon keeps a timer that fired a hair early (asyncio
        # allows for its clock resolution) from being taken for "nothing due yet".
        due = int((now - self._t0) / self.interval + 1e-6)
        behind = due - self.tick_number
        self.lateness.observe(max(0.0, now - (self._t0 + (self.tick_number + 1) * self.interval)))
        if behind <= self.max_burst:
            if self.overloaded:
                log.info("media clock on time again: %d ticks dropped so far", self.dropped_ticks)
            self.overloaded = False
            self._backlog_held = 0
        elif self._last_backlog > self.max_burst and behind >= self._last_backlog:
            self._backlog_held += 1
            if self._backlog_held >= 2 and not self.overloaded:
                log.warning("media clock backlog not shrinking (%d ticks): overloaded, dropping ticks",
                            behind)
                self.overloaded = True
        else:
            self._backlog_held = 0
        self._last_backlog = behind
        limit = self.max_burst if self.overloaded else self.max_catch_up
        if behind > limit:
            self.dropped_ticks += behind - limit
            self.tick_number = due - limit
        first_to_send = due - self.max_burst + 1
        while self.tick_number < due:
            self.tick_number += 1
            send = self.tick_number >= first_to_send
            if not send:
                self.catch_up_ticks += 1
            self.sending = send
            try:
                self.on_tick(now, self.tick_number, send)
            except Exception:  # the clock must keep running for every other call
                log.exception("media tick %d failed", self.tick_number)
            finally:
                self.sending = True
        self.tick_duration.observe(self._loop.time() - now)
        if self._handle is not None:
            self._schedule()


class MediaLeg(Protocol):
    """What :func:`run_tick` needs of a call: its RTP session and socket, and four public methods
    (:class:`simplesip.aio.call.Call` provides them).

    ``send_packet`` sends to ``rtp.remote_addr`` through ``rtp_socket``. On the compiled path the
    extension sends most packets itself, to the same address on the same socket (the descriptor
    :class:`RtpSocket` gives the session's core), and calls ``send_packet`` only for the rest."""

    rtp: "RtpSession"
    rtp_socket: RtpSocket | None
    on_hold: bool

    def send_packet(self, packet: bytes) -> None: ...
    def next_outbound_frame(self) -> bytes | None: ...
    def deliver_frame(self, pcm: np.ndarray) -> None: ...
    def deliver_dtmf(self, digits: list) -> None: ...


#: ``on_tick(calls, inbound, now, tick) -> outbound or None``: the batched consumer of one tick;
#: ``now`` and ``tick`` are the media clock's (see :class:`MediaClock`).
OnTick = Callable[[list, np.ndarray, float, int], "np.ndarray | None"]


def run_tick(calls: Sequence[MediaLeg], on_tick: OnTick | None, now: float, send: bool = True,
             tick: int = 0) -> None:
    """One 20 ms media step for every call in ``calls`` (see the module docstring).

    With ``on_tick`` the consumer gets the whole inbound batch (with ``now`` and the clock's
    ``tick`` number) and returns the outbound one;
    without it each call's ``on_audio`` gets its frame and its send queue gives the next frame.

    ``send=False`` is a tick the clock runs late to catch up after a stall: the inbound side is
    processed in full (sockets drained first, nothing dropped from the jitter buffers), the
    consumer runs as usual, and no packet is sent: each call's RTP timestamp moves on instead,
    and the plain path leaves its send queue alone so that no queued audio is lost (``on_tick``
    learns it from :attr:`MediaClock.sending` and must hold its own audio).
    """
    n = len(calls)
    if n == 0:
        return
    if _native is not None:
        try:
            cores = [call.rtp._core for call in calls]  # type: ignore[attr-defined]
        except AttributeError:  # a pure-Python session among them: the reference path
            pass
        else:
            _run_tick_native(calls, cores, on_tick, now, send, tick)
            return
    catch_up = not send
    # One bytes join and one frombuffer for the whole batch: per-row numpy assignment costs
    # about a microsecond per call, which adds up at hundreds of calls every 20 ms. For the same
    # reason the law and the DTMF state are read from plain session attributes (no call per
    # call per tick), and pop_dtmf runs only for a session that has a key press to report.
    frames: list[bytes] = []
    append_frame = frames.append
    alaw_calls = 0
    if catch_up:
        _drain_sockets(calls)  # what arrived during the stall (see RtpSocket.drain)
    for call in calls:
        rtp = call.rtp
        append_frame(rtp.pull_frame(catch_up))
        if rtp.is_alaw:
            alaw_calls += 1
        if rtp.last_dtmf_in is not None:  # None: no key press open or waiting (the common case)
            digits = rtp.pop_dtmf(now)
            if digits:
                call.deliver_dtmf(digits)
    codes = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(n, -1)
    samples = codes.shape[1]  # the sessions' frame size (frame_samples)
    is_alaw: np.ndarray | bool
    if alaw_calls in (0, n):
        is_alaw = alaw_calls == n  # every call in one law: one table lookup for the batch
    else:  # a mix (rare): a mask of the A-law rows
        is_alaw = np.fromiter((call.rtp.is_alaw for call in calls), dtype=bool, count=n)
    inbound = _decode_rows(codes, is_alaw)

    outbound = _consume(calls, inbound, on_tick, now, tick, send)
    if catch_up:
        _skip_tick(calls)
        return
    if outbound is None:
        outbound = np.zeros(inbound.shape, dtype=np.int16)
    out = _encode_rows(outbound, is_alaw).tobytes()
    offset = 0
    for call in calls:
        if call.on_hold:
            call.rtp.skip_frame()  # keep the RTP timestamp moving so resuming is seamless
        else:
            call.send_packet(call.rtp.build_packet(out[offset:offset + samples]))
        offset += samples


def _run_tick_native(calls: Sequence[MediaLeg], cores: list, on_tick: OnTick | None, now: float,
                     send: bool, tick: int) -> None:
    """:func:`run_tick` with the per-call work in the extension: one call pulls and decodes every
    call's frame, one encodes and builds every packet. What it returns for a call with DTMF
    scheduled or SRTP is built by the session in Python, as on the reference path."""
    n = len(calls)
    catch_up = not send
    if catch_up:
        _drain_sockets(calls)
    samples = cores[0].frame_samples
    inbound = np.empty((n, samples), dtype=np.int16)
    for i in _native.pull_batch(cores, catch_up, inbound):  # the calls with a key press open
        call = calls[i]
        digits = call.rtp.pop_dtmf(now)
        if digits:
            call.deliver_dtmf(digits)

    outbound = _consume(calls, inbound, on_tick, now, tick, send)
    if catch_up:
        _skip_tick(calls)
        return
    if outbound is None:
        outbound = np.zeros(inbound.shape, dtype=np.int16)
    elif outbound.dtype != np.int16:  # as g711.encode: saturate a wider type rather than wrap
        outbound = np.clip(outbound, -32768, 32767).astype(np.int16)
    outbound = np.ascontiguousarray(outbound)
    # The extension builds every packet and sends it itself on the call's RTP socket (see
    # RtpSocket.session); what it hands back is the few calls Python must finish: DTMF scheduled
    # or SRTP (False: the session builds it), no socket or peer for C, a send that failed or a
    # transport with packets queued (the transport sends it, in order, or reports the error).
    for i, packet in _native.build_batch(cores, outbound, [call.on_hold for call in calls], True):
        call = calls[i]
        if packet is False:
            rtp = call.rtp
            packet = rtp.build_packet(g711.encode(outbound[i], rtp.codec).tobytes())
        call.send_packet(packet)


def _consume(calls: Sequence[MediaLeg], inbound: np.ndarray, on_tick: OnTick | None, now: float,
             tick: int, send: bool) -> np.ndarray | None:
    """The tick's consumer: ``on_tick`` with the whole batch, or each call's ``deliver_frame``
    and send queue; returns the outbound frames (None: silence for every call)."""
    n, samples = inbound.shape
    outbound: np.ndarray | None
    if on_tick is not None:
        outbound = on_tick(list(calls), inbound, now, tick)
    else:
        outbound = np.zeros((n, samples), dtype=np.int16) if send else None
        for i, call in enumerate(calls):
            call.deliver_frame(inbound[i])
            if outbound is not None:
                pcm = call.next_outbound_frame()
                if pcm is not None:
                    outbound[i] = np.frombuffer(pcm, dtype="<i2", count=samples)
    return outbound


def _skip_tick(calls: Sequence[MediaLeg]) -> None:
    """A catch-up tick sends nothing: every call's RTP timestamp moves on instead."""
    for call in calls:
        if call.on_hold:
            call.rtp.skip_frame()
        else:
            call.rtp.skip_tick()


def _drain_sockets(calls: Sequence[MediaLeg]) -> None:
    """Read what waits on every call's RTP socket: once per :class:`RtpReader` for the sockets
    one reads, socket by socket for the others."""
    drained: list[RtpReader] = []
    for call in calls:
        rtp_socket = call.rtp_socket
        if rtp_socket is None:
            continue
        reader = rtp_socket.reader
        if reader is None:
            rtp_socket.drain()
        elif reader not in drained:
            drained.append(reader)
            reader.drain()


def _decode_rows(codes: np.ndarray, is_alaw: np.ndarray | bool) -> np.ndarray:
    return _by_law(g711.decode, codes, is_alaw, np.int16)


def _encode_rows(pcm: np.ndarray, is_alaw: np.ndarray | bool) -> np.ndarray:
    return _by_law(g711.encode, pcm, is_alaw, np.uint8)


def _by_law(convert, rows: np.ndarray, is_alaw: np.ndarray | bool, dtype) -> np.ndarray:
    """Apply ``convert(rows, codec)`` with each row's law: ``is_alaw`` is one bool when every
    row shares the law (one call), else a mask of the A-law rows."""
    if isinstance(is_alaw, bool):
        return convert(rows, "PCMA" if is_alaw else "PCMU")
    out = np.empty(rows.shape, dtype=dtype)
    out[~is_alaw] = convert(rows[~is_alaw], "PCMU")
    out[is_alaw] = convert(rows[is_alaw], "PCMA")
    return out


def send_rtcp_reports(calls: Sequence, now: float) -> None:
    """Give every call's session the chance to send its RTCP report (it knows when one is due)."""
    for call in calls:
        report = call.rtp.rtcp_report(now)
        if report is not None and call.rtp_socket is not None and call.rtp.rtcp_addr is not None:
            call.rtp_socket.send_rtcp(report, call.rtp.rtcp_addr)
