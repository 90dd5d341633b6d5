"""The Twilio Media Streams bidirectional protocol, sans-IO: messages to text, text to events.

No socket and no clock here: :class:`MediaStreamEncoder` turns what happens on a call into the
JSON text frames a bot server expects from Twilio, numbering them as Twilio does, and
:func:`parse_bot_message` turns one text frame from the bot into an event (or raises
:class:`BotProtocolError` saying what is wrong with it). ``ivr_plugins.bot`` does the I/O.

What we send (Twilio's names and layout, numbers as strings where Twilio sends strings)::

    {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    {"event": "start", "sequenceNumber": "1", "start": {"accountSid", "streamSid", "callSid",
        "tracks": ["inbound"], "customParameters": {...},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
     "streamSid": ...}
    {"event": "media", "sequenceNumber": "2", "media": {"track": "inbound", "chunk": "1",
        "timestamp": "0", "payload": <base64 of 160 µ-law bytes>}, "streamSid": ...}
    {"event": "dtmf", "streamSid", "sequenceNumber", "dtmf": {"track": "inbound_track", "digit"}}
    {"event": "mark", "sequenceNumber", "streamSid", "mark": {"name"}}      (an echo of the bot's)
    {"event": "stop", "sequenceNumber", "streamSid", "stop": {"accountSid", "callSid"}}

``sequenceNumber`` counts every message after ``connected`` from 1; ``chunk`` counts media
messages from 1; ``timestamp`` is milliseconds of media since the stream started. Two
extensions, sent only when asked for: ``interrupt`` (local barge-in, see ``ivr_plugins.bot``)
and whatever a plugin sends through the bridge.

What the bot sends: ``media`` (``media.payload``: base64 µ-law, 8 kHz, mono, no file header,
any length), ``mark`` (``mark.name``), ``clear``; and, as an extension, ``set`` (``set``: an
object of values handed back to the flow).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MEDIA_FORMAT",
    "BotClear",
    "BotMark",
    "BotMedia",
    "BotProtocolError",
    "BotSet",
    "BotUnknown",
    "MediaStreamEncoder",
    "check_ulaw_payload",
    "parse_bot_message",
]

#: The one media format of the stream, both ways.
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
#: Media milliseconds per chunk we send (one media-clock tick).
CHUNK_MS = 20

# Headers of audio files (a bot must send raw µ-law; Twilio plays a header as noise).
_FILE_MAGIC = {b"RIFF": "a WAV (RIFF) file", b"OggS": "an Ogg file", b"fLaC": "a FLAC file",
               b"ID3": "an MP3 file", b"#!AMR": "an AMR file"}


class BotProtocolError(ValueError):
    """A frame from the bot that cannot be used; ``kind`` names the fault for counting
    (``malformed``, ``bad_payload``), ``what`` the particular fault (``not_json``, ``binary``,
    ``linear_pcm``...: logs say each once) and the message says what was wrong."""

    def __init__(self, kind: str, message: str, what: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.what = what or kind


@dataclass(frozen=True)
class BotMedia:
    """Audio to play: raw µ-law bytes (any length)."""

    payload: bytes


@dataclass(frozen=True)
class BotMark:
    """A label to echo once the audio sent before it has been played to the caller."""

    name: str


@dataclass(frozen=True)
class BotClear:
    """Empty everything queued to play, at once."""


@dataclass(frozen=True)
class BotSet:
    """Values the bot hands back to the flow (extension event ``set``)."""

    values: dict[str, Any]


@dataclass(frozen=True)
class BotUnknown:
    """A well-formed message with an event this bridge does not handle (plugins may)."""

    event: str
    message: dict[str, Any] = field(default_factory=dict)


BotEvent = BotMedia | BotMark | BotClear | BotSet | BotUnknown


def check_ulaw_payload(payload: bytes) -> None:
    """Raise :class:`BotProtocolError` (``bad_payload``) when ``payload`` is plainly not raw
    µ-law: an audio file's header, or 16-bit linear PCM (most high bytes 0x00 or 0xFF, where
    µ-law code 0x00 is the loudest negative sample and rare in speech)."""
    for magic, what in _FILE_MAGIC.items():
        if payload.startswith(magic):
            raise BotProtocolError("bad_payload", f"payload is {what}, not raw µ-law", "file_header")
    if len(payload) >= 160 and len(payload) % 2 == 0:
        high = payload[1::2]
        zeros = high.count(0)
        if zeros * 3 >= len(high) and zeros + high.count(0xFF) >= len(high) * 0.8:
            raise BotProtocolError("bad_payload", "payload looks like 16-bit linear PCM, not µ-law", "linear_pcm")


def parse_bot_message(text: str | bytes) -> BotEvent:
    """One frame from the bot as an event; raises :class:`BotProtocolError` when unusable.

    Binary frames are refused (Twilio's protocol is text). ``streamSid`` is not checked here.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise BotProtocolError("malformed", f"binary frame of {len(text)} bytes (the protocol is JSON text)",
                               "binary")
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BotProtocolError("malformed", f"not JSON: {exc}: {text[:60]!r}", "not_json") from None
    if not isinstance(message, dict):
        raise BotProtocolError("malformed", f"not a JSON object: {text[:60]!r}", "not_object")
    event = message.get("event")
    if not isinstance(event, str):
        raise BotProtocolError("malformed", f"no event name: {text[:60]!r}", "no_event")
    if event == "media":
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise BotProtocolError("malformed", "media without media.payload", "no_payload")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise BotProtocolError("bad_payload", "media.payload is not base64", "not_base64") from None
        check_ulaw_payload(audio)
        return BotMedia(audio)
    if event == "mark":
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise BotProtocolError("malformed", "mark without mark.name", "no_mark_name")
        return BotMark(name)
    if event == "clear":
        return BotClear()
    if event == "set":
        values = message.get("set")
        if not isinstance(values, dict):
            raise BotProtocolError("malformed", "set without an object of values", "bad_set")
        return BotSet(values)
    return BotUnknown(event, message)


class MediaStreamEncoder:
    """The messages of one stream, numbered: every method returns one JSON text frame.

    ``stream_sid``, ``call_sid`` and ``account_sid`` are Twilio-shaped identifiers (``MZ``,
    ``CA``, ``AC`` + 32 hex digits) the caller makes up.
    """

    def __init__(self, stream_sid: str, call_sid: str, account_sid: str) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.sequence = 0  # of the last message sent
        self.chunk = 0  # of the last media message
        # the tail of every media message (streamSid is ours: plain characters, no escaping)
        self._media_tail = '"}, "streamSid": "' + stream_sid + '"}'

    def _next(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def _dump(self, message: dict[str, Any]) -> str:
        return json.dumps(message, ensure_ascii=False)

    def connected(self) -> str:
        return self._dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters: dict[str, str]) -> dict[str, Any]:
        """The ``start`` message as a dict (plugins may add to it); :meth:`dump` sends it."""
        return {
            "event": "start",
            "sequenceNumber": self._next(),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(custom_parameters),
                "mediaFormat": dict(MEDIA_FORMAT),
            },
            "streamSid": self.stream_sid,
        }

    def dump(self, message: dict[str, Any]) -> str:
        """A message built here (or by a plugin) as text."""
        return self._dump(message)

    def media(self, ulaw: bytes, timestamp_ms: int) -> str:
        """One inbound chunk. Built by hand: this runs for every call on every tick."""
        return self.media_text(self.number_media(), ulaw, timestamp_ms)

    def number_media(self) -> tuple[int, int]:
        """Take the next (sequence number, chunk) for a media message that :meth:`media_text`
        builds later (the bridge numbers in the media tick and builds the text after it)."""
        self.sequence += 1
        self.chunk += 1
        return self.sequence, self.chunk

    def media_text(self, numbers: tuple[int, int], ulaw: bytes, timestamp_ms: int) -> str:
        """The media message numbered ``numbers`` (from :meth:`number_media`)."""
        return ('{"event": "media", "sequenceNumber": "' + str(numbers[0]) + '", "media": {"track": "inbound", '
                '"chunk": "' + str(numbers[1]) + '", "timestamp": "' + str(timestamp_ms) + '", "payload": "'
                + base64.b64encode(ulaw).decode("ascii") + self._media_tail)

    def dtmf(self, digit: str) -> str:
        return self._dump({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": self._next(),
                           "dtmf": {"track": "inbound_track", "digit": digit}})

    def mark(self, name: str) -> str:
        return self._dump({"event": "mark", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "mark": {"name": name}})

    def stop(self) -> str:
        return self._dump({"event": "stop", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})

    def event(self, name: str, body: dict[str, Any] | None = None) -> str:
        """An extension event: ``{"event": name, "sequenceNumber", "streamSid", name: body}``."""
        message: dict[str, Any] = {"event": name, "sequenceNumber": self._next(), "streamSid": self.stream_sid}
        if body is not None:
            message[name] = body
        return self._dump(message)
