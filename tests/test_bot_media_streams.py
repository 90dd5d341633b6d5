"""The sans-IO Twilio Media Streams module: the exact messages we send, and what becomes of
every kind of frame a bot may send (good, malformed, not µ-law)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from ivr_plugins.media_streams import (
    BotClear,
    BotMark,
    BotMedia,
    BotProtocolError,
    BotSet,
    BotUnknown,
    MediaStreamEncoder,
    parse_bot_message,
)

SID = "MZ" + "a" * 32


def test_messages_are_twilios_and_numbered():
    enc = MediaStreamEncoder(SID, "CA" + "b" * 32, "AC" + "0" * 32)
    assert json.loads(enc.connected()) == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = json.loads(enc.dump(enc.start({"caller": "alice"})))
    assert start == {
        "event": "start", "sequenceNumber": "1", "streamSid": SID,
        "start": {"accountSid": "AC" + "0" * 32, "streamSid": SID, "callSid": "CA" + "b" * 32,
                  "tracks": ["inbound"], "customParameters": {"caller": "alice"},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
    media = [json.loads(enc.media(bytes([i]) * 160, i * 20)) for i in range(3)]
    assert [m["sequenceNumber"] for m in media] == ["2", "3", "4"]
    assert [m["media"]["chunk"] for m in media] == ["1", "2", "3"]
    assert [m["media"]["timestamp"] for m in media] == ["0", "20", "40"]
    assert all(m["media"]["track"] == "inbound" and m["streamSid"] == SID for m in media)
    assert base64.b64decode(media[2]["media"]["payload"]) == b"\x02" * 160
    assert json.loads(enc.dtmf("7")) == {"event": "dtmf", "streamSid": SID, "sequenceNumber": "5",
                                         "dtmf": {"track": "inbound_track", "digit": "7"}}
    assert json.loads(enc.mark("m")) == {"event": "mark", "sequenceNumber": "6", "streamSid": SID,
                                         "mark": {"name": "m"}}
    assert json.loads(enc.stop()) == {"event": "stop", "sequenceNumber": "7", "streamSid": SID,
                                      "stop": {"accountSid": "AC" + "0" * 32, "callSid": "CA" + "b" * 32}}
    assert json.loads(enc.event("interrupt", {"source": "speech"}))["interrupt"] == {"source": "speech"}


def _media(payload: bytes) -> str:
    return json.dumps({"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(payload).decode()}})


def test_bot_events_parse():
    assert parse_bot_message(_media(b"\xff\x7f\x10")) == BotMedia(b"\xff\x7f\x10")
    assert parse_bot_message('{"event": "mark", "mark": {"name": "x"}}') == BotMark("x")
    assert parse_bot_message('{"event": "clear", "streamSid": "s"}') == BotClear()
    assert parse_bot_message('{"event": "set", "set": {"intent": "sales"}}') == BotSet({"intent": "sales"})
    unknown = parse_bot_message('{"event": "dance", "x": 1}')
    assert isinstance(unknown, BotUnknown) and unknown.event == "dance"


@pytest.mark.parametrize("text, kind", [
    ("{not json", "malformed"),
    ("[1, 2]", "malformed"),
    ('{"no": "event"}', "malformed"),
    ('{"event": "media", "media": {}}', "malformed"),
    ('{"event": "media", "media": {"payload": "***"}}', "bad_payload"),
    ('{"event": "mark", "mark": {}}', "malformed"),
    ('{"event": "set", "set": [1]}', "malformed"),
    (b"\x00\x01binary", "malformed"),
    ("[" * 100000, "malformed"),
])
def test_unusable_frames_raise_with_a_kind(text, kind):
    with pytest.raises(BotProtocolError) as raised:
        parse_bot_message(text)
    assert raised.value.kind == kind


def test_payloads_that_are_not_ulaw_are_refused():
    speech = (3000 * np.sin(np.arange(800) / 5)).astype("<i2")
    with pytest.raises(BotProtocolError, match="16-bit linear PCM"):
        parse_bot_message(_media((speech // 40).tobytes()))  # quiet PCM: high bytes 0x00 / 0xFF
    with pytest.raises(BotProtocolError, match="WAV"):
        parse_bot_message(_media(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200)))
    # real µ-law speech-like audio and µ-law silence pass
    from simplesip.wire.g711 import encode
    parse_bot_message(_media(encode(speech, "PCMU").tobytes()))
    parse_bot_message(_media(b"\xff" * 1600))
