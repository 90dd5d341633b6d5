"""The ``bot`` action end to end inside one process: the engine with its real plugins answers a
call from simplesip's own caller and bridges it to a real ``websockets`` bot (tests/bots/plain.py).
What Pipecat does not exercise is checked here: the exact start message and custom parameters
templated from the caller, callee and flow variables, sequence numbers, chunks and timestamps of
20 ms chunks, DTMF, marks echoed only once the audio before them has played, ``clear`` with pending
marks, values and the close reason handed back to the flow, the hooks, local barge-in and the
recording of both directions."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import wave

import numpy as np
import pytest

from tests.bots.plain import BotConnection, ScriptedBot, ulaw_tone
from tests.helpers.bot_rig import EngineRig, heard, sound_spans
from tests.helpers.e2e_audio import tone_share
from tests.helpers.speech_corpus import synthesise

pytestmark = pytest.mark.timeout(60)

FLOW = """\
flow: bot
start: init
vars: {account: A-17}
nodes:
  init: {set: {tier: gold}, next: talk}
  talk:
    bot:
      url: "{{ config.bot_url }}"
      parameters: {caller: "{{ call.from }}", callee: "{{ call.to }}", tier: "{{ vars.tier }}",
                   account: "{{ vars.account }}", n: 7}
      %(extra)s
    on: {done: after, broken: after, failed: after}
  after: {set: {next_step: "{{ vars.bot.intent | default('none') }}"}, next: bye}
  bye: {hangup: }
"""


def flow(extra: str = "") -> str:
    return FLOW % {"extra": extra}


async def bridged_call(tmp_path, script, extra: str = "", observer_setup=None, **call_options):
    """One call through the engine to a :class:`ScriptedBot` running ``script``; returns the
    bot, the rig (its observer has the hooks' reports) and what the caller heard."""
    async with ScriptedBot(script) as bot, \
            EngineRig(tmp_path, flow(extra), f"variables: {{bot_url: '{bot.url}'}}\n") as rig:
        if observer_setup is not None:
            observer_setup(rig.observer)
        report = await rig.call(**call_options)
        await rig.wait_call_ended()
    assert not bot.errors, bot.errors
    return bot, rig, report


async def test_protocol_details_marks_dtmf_values_and_hooks(tmp_path):
    """The rig's observer plugin implements the bridge's hooks: ivr_bot_start adds a custom
    parameter, ivr_bot_message sees every non-media message and claims ``ping`` (answering with
    ``bridge.send_event``), ivr_bot_ended reports the outcome, the counters and the values."""
    times: dict[str, float] = {}

    async def script(conn: BotConnection) -> None:
        await conn.wait_for("media", 25)
        await conn.send_media(ulaw_tone(1000, 0.6))  # one 4800-byte chunk
        await conn.mark("after-tone")
        times["mark_sent"] = time.monotonic()
        await conn.wait_for("mark")
        await conn.send({"event": "ping", "streamSid": conn.stream_sid})  # a plugin claims it
        await conn.send({"event": "dance", "streamSid": conn.stream_sid})  # nobody does
        await conn.wait_for("dtmf")
        await conn.send({"event": "set", "streamSid": conn.stream_sid, "set": {"intent": "sales", "score": 3}})
        await conn.wait_for("ack")
        await conn.ws.close(1000, "bye")

    def setup(observer):
        observer.extra_parameters = {"added_by": "plugin"}
        observer.claim = {"ping"}

    bot, rig, report = await bridged_call(tmp_path, script, observer_setup=setup, dtmf="+1.5s 5", duration=15)
    conn = bot.connections[0]
    messages = [m for _, m in conn.received]
    assert messages[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = messages[1]
    sid = start["streamSid"]
    assert sid.startswith("MZ") and len(sid) == 34
    assert start["sequenceNumber"] == "1" and start["start"]["streamSid"] == sid
    assert start["start"]["callSid"].startswith("CA") and len(start["start"]["callSid"]) == 34
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    params = start["start"]["customParameters"]
    assert params["callee"] == "bot" and params["caller"] and params["tier"] == "gold"
    assert params["account"] == "A-17" and params["n"] == "7" and params["added_by"] == "plugin"
    # every message after connected is numbered 1, 2, 3... in the order it was sent
    assert [m["sequenceNumber"] for m in messages[1:]] == [str(i) for i in range(1, len(messages))]
    media = conn.events("media")
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert stamps[0] == 0 and all(b - a == 20 for a, b in itertools.pairwise(stamps))
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 and m["media"]["track"] == "inbound"
               and m["streamSid"] == sid for m in media)
    assert conn.first("dtmf") == {"event": "dtmf", "streamSid": sid, "sequenceNumber": conn.first("dtmf")["sequenceNumber"],
                                  "dtmf": {"track": "inbound_track", "digit": "5"}}
    # the mark comes back only once the 600 ms before it have been played
    assert conn.first("mark")["mark"] == {"name": "after-tone"}
    assert conn.time_of("mark") - times["mark_sent"] >= 0.55
    assert conn.first("ack")["ack"] == {"of": "ping"}
    # the flow got the bot's values and the close reason, and went on
    outcome, stats, values = rig.observer.only()
    assert outcome == "done" and values == {"intent": "sales", "score": 3}
    assert stats["unknown"] == 1 and stats["marks"] == 1 and stats["media_dropped"] == 0
    call_vars = next(iter(rig.observer.vars.values()))
    assert call_vars["next_step"] == "sales"
    assert call_vars["bot"]["close_code"] == 1000 and call_vars["bot"]["close_reason"] == "bye"
    assert call_vars["bot"]["stream_sid"] == sid and call_vars["bot"]["intent"] == "sales"
    assert [m["event"] for m in rig.observer.messages] == ["mark", "ping", "dance", "set"]
    # and the caller heard the tone, 0.6 s of it
    audio = heard(report)
    spans = sound_spans(audio)
    assert len(spans) == 1 and 0.5 <= spans[0][1] - spans[0][0] <= 0.7, spans
    start_s, end_s = spans[0]
    assert tone_share(audio[int(start_s * 8000):int(end_s * 8000)], 1000) > 0.9


async def test_clear_flushes_at_once_and_echoes_pending_marks(tmp_path):
    async def script(conn: BotConnection) -> None:
        await conn.wait_for("media", 5)
        tone = ulaw_tone(1000, 4.0)
        await conn.send_media(tone[:8000], chunk=1234)  # odd chunk sizes: queued as one stream
        await conn.mark("one-second")
        await conn.send_media(tone[8000:], chunk=160)
        await conn.mark("four-seconds")
        await asyncio.sleep(0.6)
        await conn.send({"event": "clear", "streamSid": conn.stream_sid})
        await conn.wait_for("mark", 2)
        await asyncio.sleep(0.5)
        await conn.send_media(ulaw_tone(500, 0.4), chunk=3200)
        await conn.mark("after-clear")
        await conn.wait_for("mark", 3)
        await conn.ws.close(1000)

    bot, rig, report = await bridged_call(tmp_path, script, duration=12)
    conn = bot.connections[0]
    assert [m["mark"]["name"] for m in conn.events("mark")] == ["one-second", "four-seconds", "after-clear"]
    outcome, stats, _ = rig.observer.only()
    assert outcome == "done" and stats["clears"] == 1 and stats["audio_cleared_ms"] >= 1500
    audio = heard(report)
    spans = sound_spans(audio)
    assert len(spans) == 2, spans
    first, second = spans
    assert first[1] - first[0] < 3.0  # of 4 s sent: the rest was cleared
    assert tone_share(audio[int(first[0] * 8000):int(first[1] * 8000)], 1000) > 0.9
    assert tone_share(audio[int(second[0] * 8000):int(second[1] * 8000)], 500) > 0.9
    assert 0.3 <= second[1] - second[0] <= 0.5


async def test_speech_barge_in_flushes_locally_and_recording_keeps_both_sides(tmp_path):
    speech = synthesise("Hello, I would like to talk to somebody about my bill please.", voice="en-us")
    wav = tmp_path / "caller.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.concatenate([np.zeros(12000, np.int16), speech]).astype("<i2").tobytes())

    async def script(conn: BotConnection) -> None:
        await conn.wait_for("media", 5)
        await conn.send_media(ulaw_tone(1000, 6.0), chunk=8000)
        await conn.wait_for("interrupt")
        await asyncio.sleep(0.3)
        await conn.send({"event": "clear", "streamSid": conn.stream_sid})
        await asyncio.sleep(0.5)
        await conn.ws.close(1000)

    bot, rig, report = await bridged_call(tmp_path, script, "barge_in: speech\n      record: true",
                                          play=str(wav), duration=12)
    interrupt = bot.connections[0].first("interrupt")["interrupt"]
    assert interrupt["source"] == "speech" and interrupt["clearedMs"] > 1000
    outcome, stats, _ = rig.observer.only()
    assert outcome == "done" and stats["barge_ins"] >= 1
    spans = sound_spans(heard(report))
    assert spans and spans[0][1] - spans[0][0] < 4.5  # the caller spoke after 1.5 s; 6 s were sent
    recording = next(iter(rig.observer.vars.values()))["bot"]["recording"]
    with wave.open(recording) as w:
        assert w.getnchannels() == 2
        both = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert sound_spans(both[:, 0]), "the caller's speech is on the left"
    assert tone_share(both[:, 1], 1000) > 0.8, "the bot's tone is on the right"


async def test_caller_hanging_up_sends_stop_and_the_outcome_is_hangup(tmp_path):
    async def script(conn: BotConnection) -> None:
        await conn.wait_for("stop", timeout=30)

    bot, rig, report = await bridged_call(tmp_path, script, duration=2)
    conn = bot.connections[0]
    stop = conn.first("stop")
    start = conn.first("start")
    assert stop == {"event": "stop", "sequenceNumber": stop["sequenceNumber"], "streamSid": start["streamSid"],
                    "stop": {"accountSid": start["start"]["accountSid"], "callSid": start["start"]["callSid"]}}
    assert int(stop["sequenceNumber"]) == len(conn.received) - 1  # the last message, numbered in turn
    outcome, _, _ = rig.observer.only()
    assert outcome == "hangup" and report.end_reason == "local_hangup"
    await asyncio.wait_for(conn.closed.wait(), 10)
    assert conn.ws.close_code == 1000


async def test_a_fragmented_message_is_played_in_order_with_the_whole_ones(tmp_path):
    """Whole frames are handled as they are read and fragmented messages through the library's
    reassembly: a fragmented message followed by whole ones must still be heard in order."""

    async def script(conn: BotConnection) -> None:
        await conn.wait_for("media", 5)
        text = json.dumps({"event": "media", "streamSid": conn.stream_sid,
                           "media": {"payload": base64.b64encode(ulaw_tone(500, 0.4)).decode()}})
        await conn.ws.send([text[:100], text[100:2000], text[2000:]])  # one message in three frames
        await conn.send_media(ulaw_tone(1000, 0.4))
        await conn.mark("both")
        await conn.wait_for("mark", 1, timeout=5)
        await conn.ws.close(1000)

    bot, rig, report = await bridged_call(tmp_path, script, duration=8)
    outcome, stats, _ = rig.observer.only()
    assert outcome == "done" and stats["audio_received_ms"] == 800 and stats["malformed"] == 0
    audio = heard(report)
    spans = sound_spans(audio)
    assert len(spans) == 1 and 0.7 <= spans[0][1] - spans[0][0] <= 0.9, spans
    start = int(spans[0][0] * 8000)
    assert tone_share(audio[start:start + 2400], 500) > 0.9  # the fragmented message first
    assert tone_share(audio[start + 4000:start + 6400], 1000) > 0.9
