"""DTMF on the wire: the RFC 4733 telephone-event payload and SIP INFO DTMF bodies.

The stateful parts (a receiver that reports each key press once, a sender that times a press into
packets) are sans-IO protocol logic in :mod:`simplesip.core.dtmf`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["DTMF_EVENTS", "TelephoneEvent", "parse_info_dtmf"]

#: RFC 4733 §3.2 event codes 0..15, indexed by code.
DTMF_EVENTS: Final = "0123456789*#ABCD"
_EVENT_FORMAT = struct.Struct("!BBH")  # event, E/R/volume, duration


@dataclass(frozen=True)
class TelephoneEvent:
    """The 4-byte RFC 4733 telephone-event payload."""

    event: int
    end: bool = False
    volume: int = 10  # power level in -dBm0, 0..63
    duration: int = 0  # in RTP timestamp units since the event's timestamp

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"event code out of range: {self.event}")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume out of range: {self.volume}")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"duration out of range: {self.duration}")

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse the first event of a payload (redundant trailing events are ignored)."""
        if len(payload) < _EVENT_FORMAT.size:
            raise ValueError(f"telephone-event payload too short ({len(payload)} bytes)")
        event, flags, duration = _EVENT_FORMAT.unpack_from(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        return _EVENT_FORMAT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        """The DTMF key for codes 0..15, None for other events (flash, tones)."""
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None


_RELAY_SIGNAL = re.compile(r"^\s*signal\s*=\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
_RELAY_DURATION = re.compile(r"^\s*duration\s*=\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)


def parse_info_dtmf(content_type: str, body: bytes | str) -> tuple[str, int | None] | None:
    """Extract a key press from a SIP INFO body.

    ``application/dtmf-relay`` bodies look like ``Signal=5\\r\\nDuration=160`` (duration in ms);
    ``application/dtmf`` bodies are the key alone (``5``), or the event code (``11`` for ``#``).
    Returns ``(digit, duration_ms or None)`` or None when the body is not a DTMF key.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if media_type == "application/dtmf-relay":
        signal = _RELAY_SIGNAL.search(text)
        if signal is None:
            return None
        duration = _RELAY_DURATION.search(text)
        digit = _info_key(signal.group(1))
        return (digit, int(duration.group(1)) if duration else None) if digit else None
    if media_type == "application/dtmf":
        digit = _info_key(text.strip())
        return (digit, None) if digit else None
    return None


def _info_key(value: str) -> str | None:
    if len(value) == 1 and value.upper() in DTMF_EVENTS:
        return value.upper()
    # Some phones send the RFC 4733 event code instead of the key ("10" for "*"). Only codes
    # 0-15 are keys; str.isdigit() also accepts "²" (int() refuses it) and other scripts' digits.
    if value.isascii() and value.isdigit() and int(value) < len(DTMF_EVENTS):
        return DTMF_EVENTS[int(value)]
    return None
