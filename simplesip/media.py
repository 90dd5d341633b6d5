"""The media side of an Endpoint: per-call RTP sockets and the one 20 ms media clock.

One :class:`MediaClock` per Endpoint drives every call. Tick ``k`` is scheduled at ``t0 + k*20 ms``
(absolute times, so scheduling error never accumulates). When the loop was blocked and several
ticks are overdue, at most ``max_burst`` of them run back to back and the rest are dropped: sending
a second of backlog in one burst would overflow every peer's jitter buffer.

Each tick (:func:`run_tick`) pulls one frame per live call, decodes all calls at once with numpy
(``(N, 160)`` codes -> ``(N, 160)`` int16), lets the consumer produce ``(N, 160)`` outbound audio,
encodes it per codec in one lookup per codec, and sends one packet per call. Nothing here is
allocated per call per tick beyond the packets themselves.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from simplesip import g711

if TYPE_CHECKING:
    from simplesip.rtpsession import RtpSession

log = logging.getLogger(__name__)

__all__ = [
    "FRAME_SAMPLES", "FRAME_INTERVAL", "MediaClock", "MediaLeg", "RtpSocket", "open_rtp_socket",
    "run_tick", "send_rtcp_reports",
]

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_INTERVAL = 0.020
_FRAME_BYTES = FRAME_SAMPLES * 2


class MediaClock:
    """Calls ``on_tick(now, tick_number)`` every ``interval`` seconds without drift."""

    def __init__(self, on_tick: Callable[[float, int], None], interval: float = FRAME_INTERVAL,
                 max_burst: int = 2):
        self.on_tick = on_tick
        self.interval = interval
        self.max_burst = max_burst
        self.tick_number = 0
        self.dropped_ticks = 0
        self._t0 = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        """Start ticking on the running loop (the first tick is one interval from now)."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self.tick_number = 0
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
        due = int((now - self._t0) / self.interval)  # number of the latest tick that is due
        behind = due - self.tick_number
        if behind > self.max_burst:
            # Far behind (loop blocked): forget the oldest ticks rather than burst them out.
            self.dropped_ticks += behind - self.max_burst
            self.tick_number = due - self.max_burst
        while self.tick_number < due:
            self.tick_number += 1
            try:
                self.on_tick(now, self.tick_number)
            except Exception:  # the clock must keep running for every other call
                log.exception("media tick %d failed", self.tick_number)
        if self._handle is not None:
            self._schedule()


class RtpSocket(asyncio.DatagramProtocol):
    """One call's RTP socket (and its RTCP companion on port + 1): datagrams go to the call's
    RtpSession with their arrival time; the session tells RTP from RTCP itself."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.session: RtpSession | None = None  # set once the media is negotiated
        self._time = loop.time
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The RTCP socket shares this protocol and connects second: RTP must keep going out of the
        # RTP port, or a peer that latches (symmetric RTP, RFC 4961) answers to the RTCP port.
        if self.transport is None:
            self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.session is None:
            return  # media arrived before our answer was processed: nothing to play it into
        try:
            self.session.receive(data, addr, self._time())
        except Exception:  # a malformed packet is the peer's problem, not the call's end
            log.debug("dropped RTP packet from %s", addr, exc_info=True)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error: %s", exc)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def send_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.rtcp_transport is not None and not self.rtcp_transport.is_closing():
            self.rtcp_transport.sendto(data, addr)

    def close(self) -> None:
        for transport in (self.transport, self.rtcp_transport):
            if transport is not None:
                transport.close()


async def open_rtp_socket(host: str, port_range: tuple[int, int]) -> tuple[RtpSocket, int]:
    """Bind an even RTP port from ``port_range`` and the RTCP port above it (RFC 3550 §11).

    The search starts at a random even port so that endpoints in parallel processes rarely race
    for the same one.
    """
    loop = asyncio.get_running_loop()
    low, high = port_range
    low += low % 2
    count = max(1, (high - low) // 2)
    first = random.randrange(count)
    for i in range(count):
        port = low + 2 * ((first + i) % count)
        protocol = RtpSocket(loop)
        try:
            await loop.create_datagram_endpoint(lambda p=protocol: p, local_addr=(host, port))
        except OSError:
            continue
        try:
            rtcp, _ = await loop.create_datagram_endpoint(lambda p=protocol: p, local_addr=(host, port + 1))
        except OSError:
            protocol.close()
            continue
        protocol.rtcp_transport = rtcp  # type: ignore[assignment]
        return protocol, port
    raise OSError(f"no free RTP/RTCP port pair in {port_range[0]}-{port_range[1]}")


class MediaLeg(Protocol):
    """What :func:`run_tick` needs from a call (``simplesip.endpoint.Call`` provides it)."""

    rtp: "RtpSession"
    on_hold: bool

    def _media_send(self, packet: bytes) -> None: ...
    def _media_take_outbound(self) -> bytes | None: ...
    def _media_deliver(self, pcm: np.ndarray) -> None: ...
    def _media_dtmf(self, digits: list) -> None: ...


OnTick = Callable[[list, np.ndarray], "np.ndarray | None"]


def run_tick(calls: Sequence[MediaLeg], on_tick: OnTick | None, now: float) -> None:
    """One 20 ms media step for every call in ``calls`` (see the module docstring).

    With ``on_tick`` the consumer gets the whole inbound batch and returns the outbound one;
    without it each call's ``on_audio`` gets its frame and its send queue gives the next frame.
    """
    n = len(calls)
    if n == 0:
        return
    # One bytes join and one frombuffer for the whole batch: per-row numpy assignment costs
    # about a microsecond per call, which adds up at hundreds of calls every 20 ms.
    frames = []
    alaw_flags = []
    for call in calls:
        rtp = call.rtp
        frames.append(rtp.pull_frame())
        alaw_flags.append(rtp.codec == "PCMA")
        digits = rtp.pop_dtmf(now)
        if digits:
            call._media_dtmf(digits)
    codes = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(n, FRAME_SAMPLES)
    is_alaw = np.array(alaw_flags, dtype=bool)
    inbound = _decode_rows(codes, is_alaw)

    if on_tick is not None:
        outbound = on_tick(list(calls), inbound)
    else:
        outbound = np.zeros((n, FRAME_SAMPLES), dtype=np.int16)
        for i, call in enumerate(calls):
            call._media_deliver(inbound[i])
            pcm = call._media_take_outbound()
            if pcm is not None:
                outbound[i] = np.frombuffer(pcm, dtype="<i2", count=FRAME_SAMPLES)
    if outbound is None:
        outbound = np.zeros((n, FRAME_SAMPLES), dtype=np.int16)

    out = _encode_rows(outbound, is_alaw).tobytes()
    for i, call in enumerate(calls):
        if call.on_hold:
            call.rtp.skip_frame()  # keep the RTP timestamp moving so resuming is seamless
            continue
        offset = i * FRAME_SAMPLES
        call._media_send(call.rtp.build_packet(out[offset:offset + FRAME_SAMPLES]))


def _decode_rows(codes: np.ndarray, is_alaw: np.ndarray) -> np.ndarray:
    if not is_alaw.any():
        return g711.decode(codes, "PCMU")
    if is_alaw.all():
        return g711.decode(codes, "PCMA")
    pcm = np.empty(codes.shape, dtype=np.int16)
    pcm[~is_alaw] = g711.decode(codes[~is_alaw], "PCMU")
    pcm[is_alaw] = g711.decode(codes[is_alaw], "PCMA")
    return pcm


def _encode_rows(pcm: np.ndarray, is_alaw: np.ndarray) -> np.ndarray:
    if not is_alaw.any():
        return g711.encode(pcm, "PCMU")
    if is_alaw.all():
        return g711.encode(pcm, "PCMA")
    codes = np.empty(pcm.shape, dtype=np.uint8)
    codes[~is_alaw] = g711.encode(pcm[~is_alaw], "PCMU")
    codes[is_alaw] = g711.encode(pcm[is_alaw], "PCMA")
    return codes


def send_rtcp_reports(calls: Sequence, now: float) -> None:
    """Give every call's session the chance to send its RTCP report (it knows when one is due)."""
    for call in calls:
        report = call.rtp.rtcp_report(now)
        if report is not None and call.rtp_socket is not None and call.rtp.rtcp_addr is not None:
            call.rtp_socket.send_rtcp(report, call.rtp.rtcp_addr)
