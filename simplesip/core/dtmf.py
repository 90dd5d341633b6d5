"""DTMF key presses over RTP (RFC 4733), sans-IO: a receiver and a sender (payloads in wire.dtmf_payloads).

A key press on the wire is one *event*: a run of packets sharing one RTP timestamp (the event
start), the first with the marker bit, each carrying the duration so far, the last few with the
E (end) bit. Packets get lost, end packets are sent three times and may all be lost, so the
receiver reports an event once, on whichever comes first: an end packet, a packet for a newer
event, or a timeout after the last packet seen.

A press longer than the 16-bit duration holds (about 8 s at 8 kHz) is sent in *segments* (RFC 4733
§2.5.1.3): the last packet of a full segment carries the maximum duration 0xFFFF and no E bit, and
the event goes on with the same code under a new timestamp, the old one plus 0xFFFF, without the
marker bit. The receiver joins the segments into one press whose duration is their sum.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final, NamedTuple

from simplesip.wire.dtmf_payloads import DTMF_EVENTS, TelephoneEvent

__all__ = ["DtmfDigit", "DtmfPacket", "DtmfReceiver", "DtmfSender"]

logger = logging.getLogger(__name__)

#: The largest duration one telephone-event packet carries (a 16-bit field).
MAX_SEGMENT_DURATION: Final = 0xFFFF

class DtmfDigit(NamedTuple):
    """One reported key press. A tuple, so ``digit, duration_ms = ...`` works."""

    digit: str
    duration_ms: int


class DtmfReceiver:
    """Turns a stream of telephone-event packets into key presses, each reported exactly once.

    ``clock_rate`` converts durations to milliseconds; ``timeout`` (seconds without a packet for
    the current event) closes an event whose end packets were all lost.
    """

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.5) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._current_ts: int | None = None
        self._current_digit: str | None = None
        self._current_duration = 0
        # Durations of the full segments of a long press before the current one (RFC 4733
        # §2.5.1.3), and their timestamps, whose late packets belong to the press too.
        self._earlier_duration = 0
        self._earlier_segments: list[int] = []
        self._last_packet_at = 0.0
        # Timestamps of events already reported: late updates and repeated end packets of those
        # must not start a second report. A few suffice, events never interleave.
        self._finished: deque[int] = deque(maxlen=8)

    def feed(self, timestamp: int, marker: bool, payload: bytes, now: float = 0.0) -> list[DtmfDigit]:
        """Process one telephone-event packet; returns the key presses it completes (0, 1 or 2)."""
        del marker  # a lost first packet must not lose the digit: the timestamp alone decides
        try:
            event = TelephoneEvent.parse(payload)
        except ValueError as exc:
            logger.debug("dropping telephone-event packet: %s", exc)
            return []
        reported: list[DtmfDigit] = []
        if timestamp in self._finished or timestamp in self._earlier_segments:
            return reported
        digit = event.digit
        if self._current_ts is not None and timestamp != self._current_ts:
            if digit is not None and self._continues_current(timestamp, digit):
                self._earlier_segments.append(self._current_ts)
                self._earlier_duration += (timestamp - self._current_ts) % 2**32
                self._current_ts = None  # the next segment opens below, as a new press would
            else:
                reported.extend(self._finish())  # a newer event means the previous one ended
        if digit is None:
            logger.debug("ignoring non-DTMF telephone-event %d", event.event)
            return reported
        if self._current_ts is None:
            self._current_ts = timestamp
            self._current_digit = digit
            self._current_duration = 0
        self._current_duration = max(self._current_duration, event.duration)
        self._last_packet_at = now
        if event.end:
            reported.extend(self._finish())
        return reported

    def _continues_current(self, timestamp: int, digit: str) -> bool:
        """Is a packet of ``digit`` at ``timestamp`` the next segment of the open press?

        The full segment ended at 0xFFFF, so the next one starts 0xFFFF after it. The packet at
        the maximum may be lost: a segment that got within ``timeout`` of it counts as full.
        Some senders start the continuation at their current media timestamp, a tick later:
        a start up to ``timeout`` past 0xFFFF is accepted too.
        """
        if digit != self._current_digit or self._current_ts is None:
            return False
        slack = int(self.timeout * self.clock_rate)
        offset = (timestamp - self._current_ts) % 2**32
        return (self._current_duration >= MAX_SEGMENT_DURATION - slack
                and MAX_SEGMENT_DURATION <= offset <= MAX_SEGMENT_DURATION + slack)

    def poll(self, now: float) -> list[DtmfDigit]:
        """Close the current event if its packets stopped ``timeout`` seconds ago."""
        if self._current_ts is not None and now - self._last_packet_at > self.timeout:
            logger.debug("telephone-event %s timed out without an end packet", self._current_digit)
            return self._finish()
        return []

    def flush(self) -> list[DtmfDigit]:
        """Close the current event now (its stream ended); returns it, if one was open."""
        return self._finish()

    def reset(self) -> None:
        """Forget everything (new SSRC: its timestamps mean nothing to the old stream).

        An open event is dropped: call :meth:`flush` first to report it."""
        self._current_ts = None
        self._current_digit = None
        self._earlier_duration = 0
        self._earlier_segments = []
        self._finished.clear()

    def _finish(self) -> list[DtmfDigit]:
        if self._current_ts is None or self._current_digit is None:
            return []
        self._finished.extend(self._earlier_segments)
        self._finished.append(self._current_ts)
        duration = self._earlier_duration + self._current_duration
        result = DtmfDigit(self._current_digit, duration * 1000 // self.clock_rate)
        self._current_ts = None
        self._current_digit = None
        self._earlier_duration = 0
        self._earlier_segments = []
        return [result]


class DtmfPacket(NamedTuple):
    """One telephone-event packet to send at a media tick.

    ``timestamp_offset`` is how many samples before the current tick the event started: the RTP
    timestamp of the packet is the current media timestamp minus this offset.
    """

    payload: bytes
    marker: bool
    timestamp_offset: int


class DtmfSender:
    """Schedules RFC 4733 packets for digits, one call to :meth:`next_tick` per ptime.

    Per digit: the first packet has the marker bit and the event starts at that tick's timestamp;
    every following tick the duration grows by one ptime; the end packet goes out three times (on
    three ticks, so a burst loss does not take them all); then ``gap_ms`` of ordinary audio
    separates the next digit. A press too long for the 16-bit duration goes out in segments (see
    the module docstring).
    """

    END_REPEATS: Final = 3

    def __init__(
        self, clock_rate: int = 8000, ptime_ms: int = 20, volume: int = 10, gap_ms: int = 60
    ) -> None:
        self.clock_rate = clock_rate
        self.ptime_ms = ptime_ms
        self.volume = volume
        self.gap_ms = gap_ms
        self._samples_per_tick = clock_rate * ptime_ms // 1000
        # Each scheduled tick: a packet, or None for an audio tick (the gap after a digit).
        self._ticks: deque[DtmfPacket | None] = deque()

    @property
    def busy(self) -> bool:
        """True while digits (or the gap after the last one) remain to be sent."""
        return bool(self._ticks)

    def send(self, digits: str, duration_ms: int = 100) -> None:
        """Queue ``digits`` (any of ``0-9 * # A-D``), each held for ``duration_ms``."""
        if duration_ms <= 0:
            raise ValueError("DTMF duration must be positive")
        for key in digits:
            code = DTMF_EVENTS.find(key.upper())
            if code < 0:
                raise ValueError(f"not a DTMF key: {key!r}")
            self._schedule(code, duration_ms)

    def next_tick(self) -> DtmfPacket | None:
        """The packet to send in place of audio at this tick, or None to send audio."""
        return self._ticks.popleft() if self._ticks else None

    def _schedule(self, code: int, duration_ms: int) -> None:
        ticks = max(1, -(-duration_ms // self.ptime_ms))  # at least one tick
        step = self._samples_per_tick
        first_index = len(self._ticks)
        segment_start = 0  # samples from the event start to the current segment's timestamp

        def append(duration: int, end: bool, marker: bool) -> None:
            # The RTP timestamp stays at the segment start while the media clock moves on.
            offset = (len(self._ticks) - first_index) * step - segment_start
            event = TelephoneEvent(code, end=end, volume=self.volume, duration=duration)
            self._ticks.append(DtmfPacket(event.serialize(), marker, offset))

        for tick in range(ticks):
            final = tick == ticks - 1
            elapsed = (tick + 1) * step
            if elapsed - segment_start > MAX_SEGMENT_DURATION:
                # RFC 4733 §2.5.1.3: this segment is full. Report it at the maximum, go on in a
                # new segment starting where the maximum ends (same event, no marker).
                append(MAX_SEGMENT_DURATION, False, False)
                segment_start += MAX_SEGMENT_DURATION
                if not final:
                    continue
                # The end packets follow on the next ticks, in the new segment.
            for _ in range(self.END_REPEATS if final else 1):
                append(elapsed - segment_start, final, tick == 0)
        self._ticks.extend([None] * -(-self.gap_ms // self.ptime_ms))
