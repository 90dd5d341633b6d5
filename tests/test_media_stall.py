"""No received frame is lost when the event loop stalls, and the catch-up never bursts outbound.

A real UDP sender in a thread keeps sending 20 ms PCMU packets while the loop is blocked for
300 ms (inside a tick, or in an unrelated callback). Every frame must then reach the consumer
exactly once and in order, through the batched ``on_tick`` path and through the plain per-call
path alike; and the outbound side must send at most ``max_burst`` packets per clock firing, with
a timestamp gap (not a burst) where the skipped ticks were.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import numpy as np
import pytest

from simplesip.aio.media import FRAME_SAMPLES, MediaClock, run_tick
from simplesip.aio.rtpsocket import RtpReader, open_rtp_socket
from simplesip.core.rtpsession import RtpSession
from simplesip.wire import g711
from tests.helpers.waiting import wait_for

FRAMES = 60  # 1.2 s of audio
STALL = 0.3
PEER_SSRC = 0x5EED1234


def frame_payload(k: int) -> bytes:
    """Frame k's PCMU codes: a pattern no other frame of the stream shares."""
    return bytes((k * 37 + i * 5) % 256 for i in range(FRAME_SAMPLES))


def send_stream(port: int, started: threading.Event) -> None:
    """Send FRAMES packets 20 ms apart on absolute times (the loop's stall does not pace us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        started.set()
        t0 = time.perf_counter()
        for k in range(FRAMES):
            delay = t0 + k * 0.020 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            header = struct.pack("!BBHII", 0x80, 0, (1000 + k) & 0xFFFF, 5000 + k * FRAME_SAMPLES, PEER_SSRC)
            sock.sendto(header + frame_payload(k), ("127.0.0.1", port))


class Leg:
    """The parts of a Call that run_tick uses; records what it delivers and sends."""

    def __init__(self, session: RtpSession, rtp_socket) -> None:
        self.rtp = session
        self.rtp_socket = rtp_socket
        self.on_hold = False
        self.delivered: list[np.ndarray] = []
        self.sent: list[tuple[float, bytes]] = []  # (the `now` of the clock firing, packet)
        self.firing_now = 0.0
        self.on_deliver = None
        core = getattr(session, "_core", None)
        if core is not None:  # every packet through send_packet (recorded), none sent from C
            core.send_fd = -1

    def send_packet(self, packet: bytes) -> None:
        self.sent.append((self.firing_now, packet))

    def next_outbound_frame(self) -> bytes | None:
        return None

    def deliver_frame(self, pcm: np.ndarray) -> None:
        self.delivered.append(pcm.copy())
        if self.on_deliver is not None:
            self.on_deliver(len(self.delivered))

    def deliver_dtmf(self, digits: list) -> None:
        pass


def frame_numbers(rows: list[np.ndarray]) -> list[int]:
    """Which sent frame each consumed row is (silence and concealment rows are left out)."""
    known = {g711.ulaw_to_pcm(frame_payload(k)): k for k in range(FRAMES)}
    return [known[row.astype("<i2").tobytes()] for row in rows if row.astype("<i2").tobytes() in known]


@pytest.mark.parametrize("consumer", ["batched on_tick, stall inside the tick",
                                      "plain per-call, stall in another callback"])
@pytest.mark.parametrize("reading", ["RtpReader", "loop"])
async def test_every_frame_arrives_once_and_in_order_across_a_loop_stall(consumer: str, reading: str) -> None:
    loop = asyncio.get_running_loop()
    reader = RtpReader.create(loop) if reading == "RtpReader" else None
    rtp_socket, port = await open_rtp_socket("127.0.0.1", (42000, 49998), reader)
    session = RtpSession(0, "PCMU", None, jitter_target_ms=60)
    rtp_socket.session = session
    leg = Leg(session, rtp_socket)
    batched = consumer.startswith("batched")
    consumed: list[np.ndarray] = []
    ticks = 0

    def on_tick(calls: list, inbound: np.ndarray, now: float, tick: int) -> None:
        nonlocal ticks
        ticks += 1
        consumed.append(inbound[0].copy())
        if ticks == 20:
            time.sleep(STALL)  # a consumer that blocks the loop in the middle of the stream

    def on_clock(now: float, tick: int, send: bool) -> None:
        leg.firing_now = now
        run_tick([leg], on_tick if batched else None, now, send, tick)

    clock = MediaClock(on_clock, max_burst=2)
    started = threading.Event()
    sender = threading.Thread(target=send_stream, args=(port, started), daemon=True)
    try:
        sender.start()
        started.wait(2)
        clock.start()
        if not batched:
            loop.call_later(0.45, time.sleep, STALL)  # a blocking callback unrelated to media
        # until the last frame sent has been consumed (the sender and the clock run late on a
        # busy machine: a fixed sleep would cut the stream short)
        last = g711.ulaw_to_pcm(frame_payload(FRAMES - 1))
        rows = consumed if batched else leg.delivered
        await wait_for(lambda: any(row.astype("<i2").tobytes() == last for row in rows),
                       timeout=FRAMES * 0.020 + STALL + 10, message="the last frame consumed")
    finally:
        clock.stop()
        sender.join(2)
        rtp_socket.close()
        if reader is not None:
            reader.close()

    rows = consumed if batched else leg.delivered
    assert frame_numbers(rows) == list(range(FRAMES))  # each frame once, in order, none missing
    stats = session.stats()
    assert stats["received"] == FRAMES and stats["lost"] == 0 and stats["jitter_dropped"] == 0
    assert clock.catch_up_ticks >= 8 and clock.dropped_ticks == 0

    # Outbound: no firing sent more than max_burst packets back to back...
    per_firing: dict[float, int] = {}
    for now, _ in leg.sent:
        per_firing[now] = per_firing.get(now, 0) + 1
    assert max(per_firing.values()) <= 2
    # ...the skipped ticks left a timestamp gap but no sequence gap, and a marker on resuming.
    headers = [struct.unpack_from("!BBHI", packet) for _, packet in leg.sent]
    sequences = [h[2] for h in headers]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(sequences, sequences[1:]))
    steps = [(b[3] - a[3]) & 0xFFFFFFFF for a, b in zip(headers, headers[1:])]
    assert all(step % FRAME_SAMPLES == 0 and step > 0 for step in steps)
    assert sum(step // FRAME_SAMPLES - 1 for step in steps) == clock.catch_up_ticks
    gaps = [i for i, step in enumerate(steps) if step > FRAME_SAMPLES]
    assert gaps and all(headers[i + 1][1] & 0x80 for i in gaps)  # marker: a new talk spurt
    assert session.ticks_skipped == clock.catch_up_ticks
