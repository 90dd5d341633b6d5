"""Receive-side RTP helpers, sans-IO: statistics (RFC 3550) and a G.711 jitter buffer.

The jitter buffer places payload bytes by RTP timestamp, not by packet: sample ``n`` of the stream
lands in 20 ms frame ``n // 160``. That one rule reorders packets, splits 30 ms packets over two
frames, joins two 10 ms packets into one, and makes a lost packet a hole in exactly the frames it
covered. It assumes one byte per sample, which holds for G.711 (PCMU/PCMA).

Playout: after ``target_ms`` of audio has arrived the buffer starts handing out one frame per
:meth:`JitterBuffer.pop`. A hole with newer audio behind it is a lost frame (None). If the buffer
runs dry it re-buffers instead of running ahead of the sender, which absorbs a slower sender
clock, silence suppression gaps and timestamp jumps. If it holds more than
``target_ms + max_extra_ms`` (a faster sender clock) it drops the oldest frames.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Final

import numpy as np

from . import g711

__all__ = ["ReceiveStats", "JitterBuffer", "conceal", "SequenceUnwrapper"]

logger = logging.getLogger(__name__)

FRAME_SAMPLES: Final = 160  # 20 ms at 8 kHz
MAX_DROPOUT: Final = 3000  # RFC 3550 A.1: a forward sequence jump beyond this is a restart
MAX_MISORDER: Final = 100


class SequenceUnwrapper:
    """Extends a wrapping counter (16-bit sequence numbers, 32-bit timestamps) to a monotonic int.

    Each value is placed at the extension nearest to the last extended value seen, so reordering
    around a wrap lands on the right side of it.
    """

    def __init__(self, bits: int) -> None:
        self._modulus = 1 << bits
        self._last: int | None = None

    def peek(self, value: int) -> int:
        """The extension of ``value`` without accepting it as the new reference."""
        if self._last is None:
            return value
        half = self._modulus // 2
        return self._last + (value - self._last + half) % self._modulus - half

    def extend(self, value: int) -> int:
        """The extension of ``value``; it becomes the reference if it is the newest so far."""
        extended = self.peek(value)
        if self._last is None or extended > self._last:
            self._last = extended
        return extended

    def reset(self) -> None:
        self._last = None


class ReceiveStats:
    """Reception statistics of one RTP source (RFC 3550 §6.4.1 and appendix A).

    ``received`` counts distinct packets (duplicates are counted apart), so ``lost`` does not go
    negative because of duplicates. Jitter follows A.8: ``J += (|D| - J) / 16`` in timestamp
    units, over packets in arrival order.
    """

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.reset()

    def reset(self) -> None:
        """Start over (new SSRC)."""
        self._restart_run()
        self.duplicates = 0
        self.late = 0
        self.discarded = 0  # stray packets far outside the sequence window
        self.jitter = 0.0  # timestamp units
        self._last_transit: float | None = None

    def _restart_run(self) -> None:
        self._sequence = SequenceUnwrapper(16)
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._bad_sequence: int | None = None
        self.base_sequence: int | None = None
        self.highest_sequence: int | None = None  # extended
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def record(self, sequence: int, timestamp: int, arrival: float, timing: bool = True) -> int | None:
        """Account for one packet; returns its extended sequence number, or None if it is a
        duplicate or a stray far outside the sequence window (the caller drops those).

        ``arrival`` is in seconds. ``timing=False`` leaves the jitter alone: telephone-event
        packets repeat their start timestamp, which says nothing about network delay.
        """
        extended = self._sequence.peek(sequence)
        if self.highest_sequence is not None:
            delta = extended - self.highest_sequence
            if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
                # RFC 3550 A.1: a huge jump is believed only when the next packet follows it;
                # then the sender restarted its numbering and a new accounting run begins.
                if sequence != self._bad_sequence:
                    self._bad_sequence = (sequence + 1) & 0xFFFF
                    self.discarded += 1
                    return None
                logger.debug("sequence restart at %d: restarting receive statistics", sequence)
                self._restart_run()
                extended = self._sequence.peek(sequence)
        self._sequence.extend(sequence)
        if extended in self._seen:
            self.duplicates += 1
            return None
        self._remember(extended)
        if self.base_sequence is None or self.highest_sequence is None:
            self.base_sequence = self.highest_sequence = extended
        else:
            self.base_sequence = min(self.base_sequence, extended)
            self.highest_sequence = max(self.highest_sequence, extended)
        self.received += 1
        if timing:
            transit = arrival * self.clock_rate - timestamp
            if self._last_transit is not None:
                # Differences of 32-bit timestamps: fold the wrap into the signed range.
                delta = transit - self._last_transit
                delta = (delta + 2**31) % 2**32 - 2**31
                self.jitter += (abs(delta) - self.jitter) / 16
            self._last_transit = transit
        return extended

    def _remember(self, extended: int) -> None:
        self._seen.add(extended)
        self._seen_order.append(extended)
        if len(self._seen_order) > 2 * MAX_MISORDER:
            self._seen.discard(self._seen_order.popleft())

    @property
    def expected(self) -> int:
        if self.base_sequence is None or self.highest_sequence is None:
            return 0
        return self.highest_sequence - self.base_sequence + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def fraction_lost(self) -> float:
        """Loss over the whole stream, 0.0..1.0."""
        return self.lost / self.expected if self.expected else 0.0

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    def interval_fraction_lost(self) -> int:
        """Fraction lost since the previous call, as RTCP's 8-bit fixed point (A.3)."""
        expected_interval = self.expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = self.expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "expected": self.expected,
            "lost": self.lost,
            "fraction_lost": round(self.fraction_lost, 4),
            "jitter": int(self.jitter),
            "jitter_ms": round(self.jitter_ms, 2),
            "late": self.late,
            "duplicates": self.duplicates,
        }


class JitterBuffer:
    """Reorders G.711 payloads into 20 ms frames; see the module docstring for the playout rules.

    ``fill_byte`` is the codec's silence code, used for the unfilled part of a partly received
    frame. A timestamp more than ``max_jump_ms`` away from the playout point resets the timeline.
    """

    def __init__(
        self,
        target_ms: int = 60,
        max_extra_ms: int = 100,
        fill_byte: int = g711.ULAW_SILENCE,
        clock_rate: int = 8000,
        max_jump_ms: int = 2000,
    ) -> None:
        self.target_frames = max(1, target_ms // 20)
        self.max_frames = self.target_frames + max(1, max_extra_ms // 20)
        self.max_jump_frames = max_jump_ms // 20
        self.fill_byte = fill_byte
        self.stats = ReceiveStats(clock_rate)
        self._timestamps = SequenceUnwrapper(32)
        self.reset()

    def reset(self) -> None:
        """Drop everything, statistics included (new SSRC)."""
        self._frames: dict[int, bytearray] = {}  # frame index -> 160 codec bytes
        self._base_timestamp: int | None = None
        self._next_frame = 0  # index of the frame pop() hands out next
        self._playing = False
        self._started_once = False
        self._timestamps.reset()
        self.stats.reset()

    @property
    def started(self) -> bool:
        """True once playout has begun (it stays True across re-buffering)."""
        return self._started_once

    @property
    def depth_ms(self) -> int:
        """Audio buffered ahead of the playout point, in ms."""
        return self._depth() * 20

    def push(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> bool:
        """Add one packet's payload; False if it was a duplicate, too late or empty."""
        if self.stats.record(seq, timestamp, arrival) is None or not payload:
            return False
        ext_ts = self._timestamps.extend(timestamp)
        if self._base_timestamp is None:
            self._rebase(ext_ts, self._next_frame)
        assert self._base_timestamp is not None
        start = ext_ts - self._base_timestamp
        first, last = start // FRAME_SAMPLES, (start + len(payload) - 1) // FRAME_SAMPLES
        if abs(first - self._next_frame) > self.max_jump_frames:
            # The sender's timestamps leapt: splice the new timeline right after what is buffered.
            logger.debug("timestamp jump of %d frames: new timeline", first - self._next_frame)
            self._rebase(ext_ts, max(self._frames, default=self._next_frame - 1) + 1)
            start = ext_ts - self._base_timestamp
            first, last = start // FRAME_SAMPLES, (start + len(payload) - 1) // FRAME_SAMPLES
        # Before playout ever started, an early packet arriving late still has a place.
        lowest = self._next_frame if self._started_once else first
        if last < lowest:
            self.stats.late += 1
            return False
        for index in range(max(first, lowest), last + 1):
            frame = self._frames.get(index)
            if frame is None:
                frame = self._frames[index] = bytearray([self.fill_byte]) * FRAME_SAMPLES
            frame_start = index * FRAME_SAMPLES
            lo = max(start, frame_start)
            hi = min(start + len(payload), frame_start + FRAME_SAMPLES)
            frame[lo - frame_start : hi - frame_start] = payload[lo - start : hi - start]
        return True

    def pop(self) -> bytes | None:
        """The next 20 ms frame, or None (not started yet, re-buffering, or a lost frame)."""
        if not self._playing:
            if not self._frames or self._depth() < self.target_frames:
                return None
            self._playing = self._started_once = True
            self._next_frame = min(self._frames)
        if not self._frames:
            # Ran dry: wait for target_ms again rather than skipping ahead of the sender.
            self._playing = False
            return None
        if self._depth() > self.max_frames:
            # The sender's clock runs faster than ours: cut back to the target in one step.
            overflow = self._depth() - self.target_frames
            logger.debug("jitter buffer over depth: dropping %d frames", overflow)
            for index in range(self._next_frame, self._next_frame + overflow):
                self._frames.pop(index, None)
            self._next_frame += overflow
        frame = self._frames.pop(self._next_frame, None)
        self._next_frame += 1
        return bytes(frame) if frame is not None else None

    def _depth(self) -> int:
        if not self._frames:
            return 0
        oldest = self._next_frame if self._playing else min(self._frames)
        return max(self._frames) - oldest + 1

    def _rebase(self, ext_ts: int, frame_index: int) -> None:
        """Map timestamp ``ext_ts`` to the start of frame ``frame_index``."""
        self._base_timestamp = ext_ts - frame_index * FRAME_SAMPLES


def conceal(last_frame: bytes | None, codec: str, lost_in_a_row: int, max_repeats: int = 3) -> bytes:
    """A replacement for a lost G.711 frame.

    The first ``max_repeats`` losses in a row repeat the last good frame, 6 dB quieter each
    time, which hides a single loss well; after that the frame is silence, since repeating a
    longer stretch turns into an audible buzz.
    """
    silence = bytes([g711.silence_byte(codec)]) * FRAME_SAMPLES
    if last_frame is None or lost_in_a_row > max_repeats or len(last_frame) != FRAME_SAMPLES:
        return silence
    pcm = g711.decode(np.frombuffer(last_frame, dtype=np.uint8), codec).astype(np.int32)
    return g711.encode(pcm >> lost_in_a_row, codec).tobytes()
