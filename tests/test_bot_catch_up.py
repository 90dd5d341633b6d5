"""The bot plugin on the media clock's catch-up ticks: a tick that sends no packet (after a stall,
``AudioBatch.send`` False) must leave the bot's audio queued for the ticks that do, or the caller
loses it (the drop the bridge once had when the machine was busy)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import numpy as np
import pytest

from ivr.call import AudioBatch
from ivr_plugins import bot
from ivr_plugins.bot_bridge import BotBridge

pytestmark = pytest.mark.timeout(10)


def media(payload: bytes) -> str:
    return json.dumps({"event": "media", "streamSid": "MZ", "media": {"payload": base64.b64encode(payload).decode()}})


async def test_a_catch_up_tick_holds_the_bots_audio_for_the_ticks_that_send():
    call = SimpleNamespace(id="catch-up", data={}, hook=None)
    bridge = BotBridge(call, "ws://127.0.0.1:9/")
    bridge._on_message(media(b"\x10" * 160 + b"\x20" * 160 + b"\x30" * 160))  # 60 ms, as it is read
    assert bridge.pending_audio == pytest.approx(0.06)
    call.data[bot.NAME] = bridge
    bot._bridged[call.id] = bridge
    try:
        out = np.zeros((1, 160), dtype=np.int16)
        bot.ivr_audio_out(AudioBatch([call], out, 0.0, 1, send=False))
        bot.ivr_audio_out(AudioBatch([call], out, 0.0, 2, send=False))
        assert not out.any() and bridge.pending_audio == pytest.approx(0.06)
        heard = []
        for tick in (3, 4, 5):
            out = np.zeros((1, 160), dtype=np.int16)
            bot.ivr_audio_out(AudioBatch([call], out, 0.0, tick, send=True))
            heard.append(int(out[0, 0]))
        assert len(set(heard)) == 3 and all(heard) and bridge.pending_audio == 0  # each 20 ms once, in order
        assert bridge.stats["audio_played_ms"] == 60
    finally:
        bot._bridged.pop(call.id, None)
