"""RTP reception statistics, sans-IO (RFC 3550 §6.4.1 and appendix A), and the unwrapping of
16-bit sequence numbers and 32-bit timestamps they rest on."""

from __future__ import annotations

import logging
from typing import Any, Final

__all__ = ["MAX_DROPOUT", "MAX_MISORDER", "ReceiveFigures", "ReceiveStats", "SequenceUnwrapper"]

logger = logging.getLogger(__name__)

MAX_DROPOUT: Final = 3000  # RFC 3550 A.1: a forward sequence jump beyond this is a restart
MAX_MISORDER: Final = 100
#: Duplicates are recognised among the last this many sequence numbers (older ones are strays
#: refused by the MAX_MISORDER rule before the duplicate check is reached).
_SEEN_WINDOW: Final = 128
_SEEN_MASK: Final = (1 << _SEEN_WINDOW) - 1


class SequenceUnwrapper:
    """Extends a wrapping counter (16-bit sequence numbers, 32-bit timestamps) to a monotonic int.

    Each value is placed at the extension nearest to the last extended value seen, so reordering
    around a wrap lands on the right side of it.
    """

    def __init__(self, bits: int) -> None:
        self._modulus = 1 << bits
        self._half = self._modulus >> 1
        #: The newest extended value so far (None before the first). The jitter buffer's in-order
        #: path advances it directly when it knows the extension without computing it.
        self.last: int | None = None

    def peek(self, value: int) -> int:
        """The extension of ``value`` without accepting it as the new reference."""
        last = self.last
        if last is None:
            return value
        return last + (value - last + self._half) % self._modulus - self._half

    def extend(self, value: int) -> int:
        """The extension of ``value``; it becomes the reference if it is the newest so far."""
        last = self.last
        if last is None:
            self.last = value
            return value
        extended = last + (value - last + self._half) % self._modulus - self._half
        if extended > last:
            self.last = extended
        return extended

    def reset(self) -> None:
        self.last = None


class ReceiveFigures:
    """The figures derived from the counters of a receive statistics object (``expected``,
    ``received``, ``jitter``, ``clock_rate``, ``late``, ``duplicates``): shared by
    :class:`ReceiveStats` and the compiled core (:class:`simplesip.core.native.NativeCore`)."""

    __slots__ = ()

    @property
    def lost(self) -> int:
        return self.expected - self.received  # type: ignore[attr-defined]

    @property
    def fraction_lost(self) -> float:
        """Loss over the whole stream, 0.0..1.0."""
        expected = self.expected  # type: ignore[attr-defined]
        return self.lost / expected if expected else 0.0

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate  # type: ignore[attr-defined]

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,  # type: ignore[attr-defined]
            "expected": self.expected,  # type: ignore[attr-defined]
            "lost": self.lost,
            "fraction_lost": round(self.fraction_lost, 4),
            "jitter": int(self.jitter),  # type: ignore[attr-defined]
            "jitter_ms": round(self.jitter_ms, 2),
            "late": self.late,  # type: ignore[attr-defined]
            "duplicates": self.duplicates,  # type: ignore[attr-defined]
        }


class ReceiveStats(ReceiveFigures):
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
        # Bit i set: extended sequence number highest_sequence - i was received. An int bitmask
        # rather than a set, so the per-packet duplicate check allocates nothing.
        self._seen_bits = 0
        self._bad_sequence: int | None = None
        self.base_sequence: int | None = None
        self.highest_sequence: int | None = None  # extended
        #: The 16-bit sequence number that follows the highest one: an in-order packet carries
        #: it (-1 before the first packet, which no packet matches).
        self.next_sequence = -1
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def record(self, sequence: int, timestamp: int, arrival: float, timing: bool = True) -> int | None:
        """Account for one packet; returns its extended sequence number, or None if it is a
        duplicate or a stray far outside the sequence window (the caller drops those).

        ``arrival`` is in seconds. ``timing=False`` leaves the jitter alone: telephone-event
        packets repeat their start timestamp, which says nothing about network delay.
        """
        if sequence == self.next_sequence:
            return self.record_next(timestamp, arrival, timing)
        highest = self.highest_sequence
        if highest is None:
            extended = sequence
            self.base_sequence = self.highest_sequence = extended
            self.next_sequence = (extended + 1) & 0xFFFF
            self._seen_bits = 1
        else:
            # The extension nearest the highest so far (16-bit wrap-around).
            delta = ((sequence - highest + 0x8000) & 0xFFFF) - 0x8000
            if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
                # RFC 3550 A.1: a huge jump is believed only when the next packet follows it;
                # then the sender restarted its numbering and a new accounting run begins.
                if sequence != self._bad_sequence:
                    self._bad_sequence = (sequence + 1) & 0xFFFF
                    self.discarded += 1
                    return None
                logger.debug("sequence restart at %d: restarting receive statistics", sequence)
                self._restart_run()
                return self.record(sequence, timestamp, arrival, timing)
            extended = highest + delta
            if delta > 0:
                self._seen_bits = ((self._seen_bits << delta) | 1) & _SEEN_MASK
                self.highest_sequence = extended
                self.next_sequence = (extended + 1) & 0xFFFF
            else:
                bit = 1 << -delta
                if self._seen_bits & bit:
                    self.duplicates += 1
                    return None
                self._seen_bits |= bit
                if extended < self.base_sequence:  # type: ignore[operator]
                    self.base_sequence = extended
        self.received += 1
        if timing:
            self._update_jitter(timestamp, arrival)
        return extended

    def record_next(self, timestamp: int, arrival: float, timing: bool = True) -> int:
        """:meth:`record` for the packet carrying :attr:`next_sequence` (in order, the common
        case): it can be neither a duplicate nor a stray, so it is counted without the checks."""
        extended = self.highest_sequence + 1  # type: ignore[operator]
        self.highest_sequence = extended
        self.next_sequence = (extended + 1) & 0xFFFF
        self._seen_bits = ((self._seen_bits << 1) | 1) & _SEEN_MASK
        self.received += 1
        if timing:
            self._update_jitter(timestamp, arrival)
        return extended

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        # RFC 3550 A.8, in timestamp units.
        transit = arrival * self.clock_rate - timestamp
        last_transit = self._last_transit
        if last_transit is not None:
            # Differences of 32-bit timestamps: fold the wrap into the signed range.
            delta_transit = (transit - last_transit + 2**31) % 2**32 - 2**31
            self.jitter += (abs(delta_transit) - self.jitter) / 16
        self._last_transit = transit

    @property
    def expected(self) -> int:
        if self.base_sequence is None or self.highest_sequence is None:
            return 0
        return self.highest_sequence - self.base_sequence + 1

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

