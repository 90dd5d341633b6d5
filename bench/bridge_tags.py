"""Tagged 20 ms µ-law frames for the bridge benchmark: a frame carries (kind, call index,
counter) in its first bytes, in codes that survive G.711 decoding and re-encoding unchanged (every
µ-law code but 0x7F, the second zero, maps back to itself), so the same frame can be recognised
on both sides of the IVR: in the RTP the caller sends and in the WebSocket media the bot gets,
and back."""

from __future__ import annotations

__all__ = ["KIND_BURST", "KIND_CALLER", "KIND_PROBE", "SAMPLE_EVERY", "make_frame", "read_tag"]

MAGIC = b"\x55\x66"
KIND_CALLER = 0x21  # the caller's frames (echoed back by the bot)
KIND_BURST = 0x22  # the bot's own audio on clear probe calls
KIND_PROBE = 0x23  # single frames the bot sends on latency probe calls (its queue is empty)
#: Frames whose counter is a multiple of this have their times recorded (memory stays small).
SAMPLE_EVERY = 10
_NIBBLE = 0x30  # nibbles are sent as codes 0x30..0x3F
_SILENCE = b"\xff" * (160 - 15)


def make_frame(kind: int, index: int, counter: int) -> bytes:
    """160 µ-law bytes: magic, kind, 4 nibbles of ``index``, 8 nibbles of ``counter``, silence."""
    value = (index & 0xFFFF) << 32 | (counter & 0xFFFFFFFF)
    nibbles = bytes(_NIBBLE | (value >> shift) & 0xF for shift in range(44, -4, -4))
    return MAGIC + bytes([kind]) + nibbles + _SILENCE


def read_tag(frame: bytes) -> int | None:
    """``kind << 48 | index << 32 | counter`` of a tagged frame, else None."""
    if len(frame) < 15 or frame[:2] != MAGIC:
        return None
    value = 0
    for code in frame[3:15]:
        if code & 0xF0 != _NIBBLE:
            return None
        value = value << 4 | (code & 0xF)
    return frame[2] << 48 | value
