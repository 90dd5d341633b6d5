"""The receive side of RTP, sans-IO: a G.711 jitter buffer (statistics in :mod:`.rtpstats`).

The jitter buffer places payload bytes by RTP timestamp, not by packet: sample ``n`` of the stream
lands in 20 ms frame ``n // 160``. That one rule reorders packets, splits 30 ms packets over two
frames, joins two 10 ms packets into one, and makes a lost packet a hole in exactly the frames it
covered. It assumes one byte per sample, which holds for G.711 (PCMU/PCMA).

Playout: after ``target_ms`` of audio has arrived the buffer starts handing out one frame per
:meth:`JitterBuffer.pop`. A hole with newer audio behind it is a lost frame (None). If the buffer
runs dry it re-buffers instead of running ahead of the sender, which absorbs a slower sender
clock, silence suppression gaps and timestamp jumps. A timestamp more than ``max_jump_ms`` away,
or any step back in timestamps while the sequence numbers go forward, is a new timeline: it is
spliced right after the buffered audio rather than played as a gap or dropped as late.

A buffer deeper than ``target_ms + max_extra_ms`` has one of two causes, and they are treated
apart. A consumer that stalled (the event loop was blocked) owes the frames it did not pull: it
catches up with ``pop(catch_up=True)``, which never drops anything. A sender whose clock runs
faster than ours (or a burst after a network hiccup) leaves a standing excess: that is trimmed
one frame at a time, a quiet frame as soon as one comes up, a speech frame only after
``drift_patience`` pops without a quiet one, so the listener hears at most an isolated 20 ms
skip instead of a 100 ms cut. Only a buffer four times too deep (a consumer so overloaded that
it sheds ticks) is cut back at once.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import numpy as np

from simplesip.core.rtpstats import ReceiveStats, SequenceUnwrapper
from simplesip.wire import g711

__all__ = ["JitterBuffer", "ReceiveStats", "SequenceUnwrapper", "conceal"]  # the last two from .rtpstats

logger = logging.getLogger(__name__)

FRAME_SAMPLES: Final = 160  # 20 ms at 8 kHz
#: A frame whose every sample is within this of zero (about -48 dBFS) counts as quiet: dropping
#: it to correct clock drift is inaudible.
QUIET_LEVEL: Final = 128


def _codes_where(codec: str, keep: Any) -> bytes:
    codes = np.arange(256, dtype=np.uint8)
    return bytes(codes[keep(g711.decode(codes, codec).astype(np.int32))].tolist())


#: Per codec, the codes of quiet samples: ``frame.translate(None, quiet)`` is empty for a quiet frame.
_QUIET_CODES: Final = {codec: _codes_where(codec, lambda pcm: np.abs(pcm) <= QUIET_LEVEL)
                       for codec in ("PCMU", "PCMA")}


class JitterBuffer:
    """Reorders G.711 payloads into 20 ms frames; see the module docstring for the playout rules.

    ``fill_byte`` is the codec's silence code, used for the unfilled part of a partly received
    frame; ``codec`` (default: the law whose silence ``fill_byte`` is) tells quiet frames apart for
    drift correction. A timestamp more than ``max_jump_ms`` away from the playout point resets the
    timeline. ``frame_samples`` is the frame size (default: 20 ms at ``clock_rate``).
    ``drift_patience`` is how many pops a buffer may stay too deep without a quiet frame
    coming up before a speech frame is dropped; past twice the maximum depth one frame is dropped
    every pop whatever it holds.
    """

    def __init__(
        self,
        target_ms: int = 60,
        max_extra_ms: int = 100,
        fill_byte: int = g711.ULAW_SILENCE,
        clock_rate: int = 8000,
        max_jump_ms: int = 2000,
        *,
        codec: str | None = None,
        drift_patience: int = 10,
        frame_samples: int | None = None,
    ) -> None:
        #: Samples (= G.711 codes) per 20 ms frame: ``clock_rate // 50`` unless given.
        self.frame_samples = frame_samples or clock_rate // 50
        self.target_frames = max(1, target_ms // 20)
        self.max_frames = self.target_frames + max(1, max_extra_ms // 20)
        self.max_jump_frames = max_jump_ms // 20
        self.drift_patience = drift_patience
        self.fill_byte = fill_byte
        self.codec = g711.normalize_codec(codec) if codec else (
            "PCMA" if fill_byte == g711.ALAW_SILENCE else "PCMU")
        self.stats = ReceiveStats(clock_rate)
        #: Frames dropped to bring a too deep buffer back (a fast sender clock); never while catching up.
        self.drift_dropped = 0
        self._timestamps = SequenceUnwrapper(32)
        self.reset()

    @property
    def codec(self) -> str:
        """The law of the buffered codes (PCMU or PCMA)."""
        return self._codec

    @codec.setter
    def codec(self, codec: str) -> None:
        self._codec = g711.normalize_codec(codec)
        self._quiet_codes = _QUIET_CODES[self._codec]

    def reset(self) -> None:
        """Drop everything, statistics included (new SSRC)."""
        # frame index -> 160 codec bytes: the payload itself when one packet filled the frame
        # (the common case: nothing copied), a bytearray when packets were assembled into it.
        self._frames: dict[int, bytes | bytearray] = {}
        self._newest = -1  # highest frame index stored (meaningful while _frames is not empty)
        self._base_timestamp: int | None = None
        self._next_frame = 0  # index of the frame pop() hands out next
        self._playing = False
        self._started_once = False
        self._over_depth_pops = 0
        self._timestamps.reset()
        self.stats.reset()
        self._in_order_timestamp = -1  # see _note_in_order_slot
        self._in_order_frame = 0

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
        # In-order path, nearly every packet: the next sequence number, 20 ms after the newest
        # audio, landing on a frame boundary past everything stored and within the playout
        # window. Each of those conditions is one the general path below would test; together
        # they leave it nothing to decide but "store it as the next frame".
        stats = self.stats
        frame = self._in_order_frame
        size = self.frame_samples
        if (seq == stats.next_sequence and timestamp == self._in_order_timestamp
                and len(payload) == size and (frame > self._newest or not self._frames)
                and 0 <= frame - self._next_frame <= self.max_jump_frames):
            stats.record_next(timestamp, arrival)
            self._timestamps.last += size  # type: ignore[operator]
            self._in_order_timestamp = (timestamp + size) & 0xFFFFFFFF
            self._in_order_frame = frame + 1
            self._newest = frame
            self._frames[frame] = payload
            return True
        accepted = self._push_any(seq, timestamp, payload, arrival)
        self._note_in_order_slot()
        return accepted

    def _note_in_order_slot(self) -> None:
        """Remember where a packet continuing the newest audio would go: the raw timestamp it
        carries and its frame index. Only when the newest audio ends on a frame boundary; -1
        (no timestamp matches) otherwise. Depends on the timestamp reference and the base only,
        so it is refreshed after every packet the general path handles."""
        newest, base, frame_samples = self._timestamps.last, self._base_timestamp, self.frame_samples
        if newest is None or base is None or (newest - base) % frame_samples:
            self._in_order_timestamp = -1
            return
        self._in_order_timestamp = (newest + frame_samples) & 0xFFFFFFFF
        self._in_order_frame = (newest - base) // frame_samples + 1

    def _push_any(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> bool:
        stats = self.stats
        frame_samples = self.frame_samples
        extended_seq = stats.record(seq, timestamp, arrival)
        if extended_seq is None or not payload:
            return False
        newest_ts = self._timestamps.last
        ext_ts = self._timestamps.extend(timestamp)
        if self._base_timestamp is None:
            self._rebase(ext_ts, self._next_frame)
        start = ext_ts - self._base_timestamp  # type: ignore[operator]
        size = len(payload)
        first = start // frame_samples
        # The newest packet by sequence number with a timestamp not after the newest audio's: the
        # sender's timeline stepped back (a source switch behind one SSRC). Placed by timestamp
        # it would be late or overwrite audio; like a big jump, it starts a new timeline.
        stepped_back = (extended_seq == stats.highest_sequence and newest_ts is not None
                        and ext_ts <= newest_ts)
        if stepped_back:
            self._timestamps.last = ext_ts  # later packets of the new timeline unwrap around it
        if stepped_back or abs(first - self._next_frame) > self.max_jump_frames:
            # The sender's timestamps leapt: splice the new timeline right after what is buffered.
            logger.debug("timestamp jump of %d frames: new timeline", first - self._next_frame)
            self._rebase(ext_ts, (self._newest if self._frames else self._next_frame - 1) + 1)
            start = ext_ts - self._base_timestamp  # type: ignore[operator]
            first = start // frame_samples
        last = (start + size - 1) // frame_samples
        # Before playout ever started, an early packet arriving late still has a place.
        lowest = self._next_frame if self._started_once else first
        if last < lowest:
            self.stats.late += 1
            return False
        frames = self._frames
        if last > self._newest or not frames:
            self._newest = last if not frames else max(last, self._newest)
        if size == frame_samples and start == first * frame_samples and first not in frames:
            frames[first] = payload  # one packet, one whole frame: keep it as it is
            return True
        for index in range(max(first, lowest), last + 1):
            frame = frames.get(index)
            if frame is None:
                frame = frames[index] = bytearray([self.fill_byte]) * frame_samples
            elif not isinstance(frame, bytearray):
                frame = frames[index] = bytearray(frame)
            frame_start = index * frame_samples
            lo = max(start, frame_start)
            hi = min(start + size, frame_start + frame_samples)
            frame[lo - frame_start : hi - frame_start] = payload[lo - start : hi - start]
        return True

    def pop(self, catch_up: bool = False) -> bytes | None:
        """The next 20 ms frame, or None (not started yet, re-buffering, or a lost frame).

        ``catch_up=True`` says the consumer is pulling frames it owes from a stall: the depth is
        its own backlog, so no frame is dropped for being too deep.
        """
        frames = self._frames
        if not self._playing:
            if not frames or self._depth() < self.target_frames:
                return None
            self._playing = self._started_once = True
            self._next_frame = min(frames)
        if not frames:
            # Ran dry: wait for target_ms again rather than skipping ahead of the sender.
            self._playing = False
            return None
        if not catch_up and self._newest - self._next_frame >= self.max_frames:
            self._trim_one_frame()
            if not frames:
                self._playing = False
                return None
        frame = frames.pop(self._next_frame, None)
        self._next_frame += 1
        if frame is None:
            return None
        return frame if type(frame) is bytes else bytes(frame)

    def _trim_one_frame(self) -> None:
        """Too deep while the consumer keeps time: the sender is ahead. Drop the next frame if
        it is quiet (or missing), else wait ``drift_patience`` pops for a quiet one; past twice
        the maximum depth drop one every pop. Past four times the maximum only an overloaded
        consumer (one that sheds ticks) can have let it grow: cut back to the maximum at once,
        or the delay would grow without bound."""
        depth = self._depth()
        if depth > 4 * self.max_frames:
            excess = depth - self.max_frames
            logger.debug("jitter buffer %d ms deep: consumer overloaded, dropping %d frames",
                         depth * 20, excess)
            for index in range(self._next_frame, self._next_frame + excess):
                self._frames.pop(index, None)
            self._next_frame += excess
            self.drift_dropped += excess
            return
        self._over_depth_pops += 1
        upcoming = self._frames.get(self._next_frame)
        quiet = upcoming is None or not upcoming.translate(None, self._quiet_codes)
        if not (quiet or self._over_depth_pops >= self.drift_patience or depth > 2 * self.max_frames):
            return
        logger.debug("jitter buffer %d ms deep: dropping one %s frame", depth * 20,
                     "quiet" if quiet else "speech")
        self._frames.pop(self._next_frame, None)
        self._next_frame += 1
        self._over_depth_pops = 0
        self.drift_dropped += 1

    def _depth(self) -> int:
        if not self._frames:
            return 0
        oldest = self._next_frame if self._playing else min(self._frames)
        return self._newest - oldest + 1

    def _rebase(self, ext_ts: int, frame_index: int) -> None:
        """Map timestamp ``ext_ts`` to the start of frame ``frame_index``."""
        self._base_timestamp = ext_ts - frame_index * self.frame_samples


def _attenuation_tables(codec: str, steps: int) -> list[bytes]:
    """``tables[n]`` maps a code to the code of its sample shifted right by ``n`` (6 dB each)."""
    codes = np.arange(256, dtype=np.uint8)
    pcm = g711.decode(codes, codec).astype(np.int32)
    return [g711.encode(pcm >> n, codec).tobytes() for n in range(steps + 1)]


_CONCEAL_STEPS: Final = 8
#: Concealment is one ``bytes.translate`` per lost frame: the same result as decoding, shifting
#: and re-encoding, at a fraction of the cost.
_ATTENUATE: Final = {codec: _attenuation_tables(codec, _CONCEAL_STEPS) for codec in ("PCMU", "PCMA")}


def conceal(last_frame: bytes | None, codec: str, lost_in_a_row: int, max_repeats: int = 3,
            frame_samples: int = FRAME_SAMPLES) -> bytes:
    """A replacement for a lost G.711 frame.

    The first ``max_repeats`` losses in a row repeat the last good frame, 6 dB quieter each
    time, which hides a single loss well; after that the frame (``frame_samples`` codes) is
    silence, since repeating a longer stretch turns into an audible buzz.
    """
    law = g711.normalize_codec(codec)
    if (last_frame is None or lost_in_a_row > max_repeats or lost_in_a_row > _CONCEAL_STEPS
            or len(last_frame) != frame_samples):
        return bytes([g711.silence_byte(law)]) * frame_samples
    return bytes(last_frame).translate(_ATTENUATE[law][lost_in_a_row])
