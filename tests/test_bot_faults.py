"""The ``bot`` action when the bot is unreachable, hostile or broken: the flow always gets an
outcome and goes on, bad frames are counted and logged once each (no traceback), queues stay
bounded, and a call next to the faulty one does not notice. Also wss:// with certificate
verification, and ``ivr check`` on the action's options."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import ssl
import subprocess
import time

import pytest
from websockets.asyncio.server import serve

from ivr.cli import main as ivr_main
from tests.bots.plain import BotConnection, ScriptedBot, ulaw_tone
from tests.helpers.bot_rig import EngineRig, heard, sound_spans
from tests.helpers.e2e_audio import tone_share
from tests.helpers.net import free_port

pytestmark = pytest.mark.timeout(60)

#: After the bot: 300 Hz for done, 2000 Hz for failed / broken; the flow's vars tell the rest.
FLOW = """\
flow: bot
start: talk
nodes:
  talk:
    bot: {url: "%(url)s", %(options)s}
    on: {done: after, failed: oops, broken: oops}
  after: {play: {tone: "300", duration: 400ms}, next: bye}
  oops: {play: {tone: "2000", duration: 400ms}, next: bye}
  bye: {hangup: }
"""


def flow(url: str, options: str = "") -> str:
    return FLOW % {"url": url, "options": options}


def outcome_tone(report) -> float:
    """The frequency of the last loud stretch the caller heard: the flow's verdict."""
    audio = heard(report)
    spans = sound_spans(audio)
    assert spans, "the caller heard nothing"
    start, end = spans[-1]
    stretch = audio[int(start * 8000):int(end * 8000)]
    return 300.0 if tone_share(stretch, 300) > 0.8 else 2000.0 if tone_share(stretch, 2000) > 0.8 else 0.0


async def run(tmp_path, flow_text: str, config_extra: str = "", **call_options):
    async with EngineRig(tmp_path, flow_text, config_extra) as rig:
        started = time.monotonic()
        report = await rig.call(**{"duration": 10, **call_options})
        await rig.wait_call_ended()
        elapsed = time.monotonic() - started
    return rig, report, elapsed


async def test_refused_url_fails_at_once_and_the_flow_goes_on(tmp_path):
    rig, report, _ = await run(tmp_path, flow(f"ws://127.0.0.1:{free_port(socket.SOCK_STREAM)}/"))
    outcome, _, _ = rig.observer.only()
    assert outcome == "failed"
    assert "refused" in next(iter(rig.observer.vars.values()))["bot"]["error"].lower()
    assert outcome_tone(report) == 2000.0


async def test_a_bot_that_never_answers_fails_within_connect_timeout(tmp_path):
    async def silent(reader, writer):  # accepts the TCP connection, never answers the upgrade
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        rig, report, _ = await run(tmp_path, flow(f"ws://127.0.0.1:{port}/", "connect_timeout: 1s"))
    finally:
        server.close()
    outcome, _, _ = rig.observer.only()
    call_vars = next(iter(rig.observer.vars.values()))
    assert outcome == "failed" and call_vars["bot"]["error"] == "no answer within 1 s"
    assert time.monotonic() - started >= 1.0
    assert outcome_tone(report) == 2000.0


async def test_http_refusal_and_untrusted_certificate_fail(tmp_path):
    async def refuse(connection, request):
        return connection.respond(403, "go away\n")

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run, ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                         "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def closes(conn: BotConnection) -> None:
        await conn.wait_for("start")
        await conn.ws.close(1000, '{"secure": true}')

    async with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as refusing, \
            ScriptedBot(closes, ssl=context) as tls_bot:
        port = next(iter(refusing.sockets)).getsockname()[1]
        rig, _, _ = await run(tmp_path / "a", flow(f"ws://127.0.0.1:{port}/"))
        assert rig.observer.only()[0] == "failed"
        assert "HTTP 403" in next(iter(rig.observer.vars.values()))["bot"]["error"]
        wss = tls_bot.url.replace("ws://", "wss://")
        rig, _, _ = await run(tmp_path / "b", flow(wss))  # verification is on by default
        assert rig.observer.only()[0] == "failed"
        assert "certificate" in next(iter(rig.observer.vars.values()))["bot"]["error"]
        (tmp_path / "c" / "flows").mkdir(parents=True)
        (tmp_path / "c" / "flows" / "ca.pem").write_bytes(cert.read_bytes())
        rig, _, _ = await run(tmp_path / "c", flow(wss, "ca_file: ca.pem"))
        outcome, _, values = rig.observer.only()
        assert outcome == "done" and values == {"secure": True}  # a JSON close reason is values too


async def test_bot_breaking_mid_call_and_a_giant_frame_end_the_bridge_not_the_call(tmp_path, caplog):
    async def script(conn: BotConnection) -> None:
        await conn.wait_for("media", 10)
        if conn.path == "/abort":
            conn.ws.transport.abort()  # no close frame: the socket just breaks (1006)
        else:
            await conn.send({"event": "media", "streamSid": conn.stream_sid,
                             "media": {"payload": "A" * (2 << 20)}})
            await asyncio.sleep(5)

    caplog.set_level(logging.INFO)
    async with ScriptedBot(script) as bot:
        base = bot.url.rsplit("/", 1)[0]
        async with EngineRig(tmp_path, flow(base + "/{{ call.to }}")) as rig:
            reports = await asyncio.gather(rig.call("abort", duration=8), rig.call("giant", duration=8))
            await rig.wait_call_ended(2)
    ended = {values["bot"]["close_code"]: values for values in rig.observer.vars.values()}
    assert set(ended) == {1006, 1009}, ended
    assert all(outcome == "broken" for outcome, _, _ in rig.observer.ended.values())
    assert [outcome_tone(report) for report in reports] == [2000.0, 2000.0]  # both flows went on
    assert "frame over 1048576 bytes" in caplog.text
    assert "Traceback" not in caplog.text


async def test_bad_frames_are_counted_logged_once_and_the_call_goes_on_beside_a_good_one(tmp_path, caplog):
    async def script(conn: BotConnection) -> None:
        await conn.wait_for("media", 5)
        if conn.path == "/bad":
            for _ in range(3):
                await conn.send("{this is not json")
                await conn.send({"event": "dance", "streamSid": conn.stream_sid})
                pcm = b"".join(int(v).to_bytes(2, "little", signed=True) for v in range(-200, 200)) * 2
                await conn.send({"event": "media", "streamSid": conn.stream_sid,
                                 "media": {"payload": base64.b64encode(pcm).decode()}})
                await conn.send(b"\x00binary")
                await conn.send({"event": "media", "media": {"payload": "@@@"}})
            await conn.send_media(ulaw_tone(1000, 0.5))
        else:
            await conn.send_media(ulaw_tone(1000, 0.5), chunk=160)
        await conn.mark("end")
        await conn.wait_for("mark")
        await asyncio.sleep(0.5)  # a gap between the bot's tone and the flow's
        await conn.ws.close(1000)

    caplog.set_level(logging.INFO)
    async with ScriptedBot(script) as bot:
        base = bot.url.rsplit("/", 1)[0]
        async with EngineRig(tmp_path, flow(base + "/{{ call.to }}")) as rig:
            reports = await asyncio.gather(rig.call("bad", duration=8), rig.call("good", duration=8))
            await rig.wait_call_ended(2)
    assert not bot.errors, bot.errors
    by_path = {}
    for call_id, (outcome, stats, _) in rig.observer.ended.items():
        by_path[rig.observer.vars[call_id]["bot"]["stream_sid"]] = (outcome, stats)
    paths = {conn.stream_sid: conn.path for conn in bot.connections}
    stats = {paths[sid]: value for sid, value in by_path.items()}
    assert stats["/bad"][0] == stats["/good"][0] == "done"
    bad, good = stats["/bad"][1], stats["/good"][1]
    assert (bad["malformed"], bad["unknown"], bad["bad_payload"]) == (6, 3, 6), bad
    assert bad["audio_played_ms"] == good["audio_played_ms"] == 500
    assert not any(good[k] for k in ("malformed", "unknown", "bad_payload", "media_dropped"))
    for report in reports:  # both callers heard the 0.5 s tone, then the flow's 300 Hz
        spans = sound_spans(heard(report))
        assert len(spans) == 2 and outcome_tone(report) == 300.0, spans
    for what in ("not JSON", "unknown event 'dance'", "16-bit linear PCM", "binary frame"):
        assert caplog.text.count(what) == 1, what  # once per bridge at WARNING; the rest at DEBUG
    assert "Traceback" not in caplog.text


async def test_a_bot_that_never_reads_gets_bounded_drops(tmp_path, caplog):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader's small window
    listener.bind(("127.0.0.1", 0))

    async def sleeper(conn: BotConnection) -> None:
        await asyncio.sleep(6)  # reads nothing: websockets stops reading after max_queue frames
        await conn.ws.close(1000)

    caplog.set_level(logging.INFO)
    async with ScriptedBot(sleeper, read=False, sock=listener, max_queue=1):
        bot_url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
        rig, report, _ = await run(tmp_path, flow(bot_url), "plugins: {bot: {send_queue: 10}}\n", duration=12)
    outcome, stats, _ = rig.observer.only()
    assert outcome == "done" and stats["media_dropped"] > 20, stats
    assert caplog.text.count("slow consumer") == 1
    assert outcome_tone(report) == 300.0


def test_ivr_check_reports_bad_options_with_positions(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("flow: bad\nstart: talk\nnodes:\n  talk:\n    bot:\n      url: http://x\n"
                    "      barge_in: sometimes\n      conect_timeout: 1s\n    next: bye\n  bye: {hangup: }\n")
    assert ivr_main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:6:12: nodes.talk.bot.url" in out
    assert f"{path}:7:17: nodes.talk.bot.barge_in" in out
    assert f"{path}:8:7: nodes.talk.bot: unknown key 'conect_timeout'" in out


def test_simulate_takes_the_bots_outcome_from_bot_result(capsys):
    from tests.helpers.paths import FLOWS

    assert ivr_main(["simulate", str(FLOWS / "bot.yaml"), "--dtmf", "+1s 1", "--outcome", "bot=broken"]) == 0
    trace = capsys.readouterr().out
    assert "not connected under simulate; outcome broken" in trace
    assert "sorry" in trace and "Connecting you to a person" in trace  # broken -> sorry -> operator
    assert ivr_main(["check", str(FLOWS / "bot.yaml")]) == 0
