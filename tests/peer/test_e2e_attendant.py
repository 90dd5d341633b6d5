"""Flows end to end (issue 9), on real calls from real peers:

- the shipped auto-attendant (``flows/attendant.yaml``, unchanged) inside business hours: SIPp
  presses 1 and the REFER to the configured ``sales_uri`` arrives at SIPp, which accepts it and
  reports success with a ``message/sipfrag`` NOTIFY; the IVR then ends the call;
- the same flow out of hours: baresip leaves a message and hangs up; the voicemail is a valid WAV
  holding baresip's voice;
- an ``http`` node querying a local HTTP server during a real call, its JSON reply steering the
  prompt the caller hears;
- hot reload: the flow file is edited during a live call; that call keeps the version it
  started with, the next call gets the new one.

The two attendant tests run the real engine in this process, built as ``ivr serve`` builds it,
with the configuration's ``clock`` setting the time that ``hours`` reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from ivr.cdr import CdrWriter
from ivr.config import DEFAULT_FLOW_FILE, parse_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.plugins import make_plugin_manager
from tests.helpers.audio import speech
from tests.helpers.e2e_audio import RATE, assert_contains, tone_share
from tests.helpers.net import free_port
from tests.helpers.paths import DATA, PROJECT
from tests.helpers.peers import BaresipRunner, SippRunner
from tests.helpers.robust_server import IvrServeProcess
from tests.helpers.sipp_xml import response, send

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

E2E_DATA = DATA / "e2e"
PARIS = dt.timezone(dt.timedelta(hours=1))  # CET: the dates below are in winter
OPEN_TIME = dt.datetime(2026, 11, 26, 10, 0, tzinfo=PARIS)  # a Thursday morning
CLOSED_TIME = dt.datetime(2026, 11, 26, 20, 0, tzinfo=PARIS)  # the same Thursday evening


# -- the attendant on the in-process engine, its clock set by the configuration ---------------


class Attendant:
    """``flows/attendant.yaml`` served by the real engine and built-in plugins on a free port."""

    def __init__(self, folder: Path, at: dt.datetime, variables: dict[str, str]) -> None:
        text = (f"listen: {{host: 127.0.0.1, port: 0, transports: [udp]}}\nflows: [{DEFAULT_FLOW_FILE}]\n"
                f"recordings: {folder / 'rec'}\nvariables: {json.dumps(variables)}\n"
                f"clock: {{now: \"{at.isoformat()}\", tz: Europe/Paris}}\n")
        self.config = parse_config(text, base_dir=folder)
        pm = make_plugin_manager(builtins=True, entry_points=False, environ={})
        self.engine = Engine(self.config, pm, flows=FlowStoreRunner(self.config, pm))
        self.events: list[tuple[str, Any, dict]] = []
        self.finished = asyncio.Event()
        self.engine.observers.append(self._observe)

    def _observe(self, event: str, call: Any, details: dict) -> None:
        self.events.append((event, call, details))
        if event == "finished":
            self.finished.set()

    def first(self, event: str) -> Any:
        return next(call for kind, call, _ in self.events if kind == event)

    @property
    def port(self) -> int:
        return self.engine.endpoint.local_address[1]

    async def __aenter__(self) -> "Attendant":
        await self.engine.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.stop()


async def test_in_hours_key_1_transfers_to_sales_with_refer(tmp_path: Path) -> None:
    sales = f"sip:sales@127.0.0.1:{free_port()}"
    scenario = tmp_path / "uac_refer.xml"
    scenario.write_text((E2E_DATA / "uac_dtmf_accept_refer.xml").read_text()
                        .replace("KEY_PCAP", "pcap/dtmf_2833_1.pcap"))
    async with Attendant(tmp_path, OPEN_TIME, {"sales_uri": sales}) as ivr:
        with SippRunner(tmp_path / "sipp", scenario, remote=("127.0.0.1", ivr.port), service="attendant",
                        extra=["-timeout", "20s", "-timeout_error"]) as sipp:
            assert await sipp.wait_async(20) == 0, sipp.log()[-4000:]
            messages = sipp.messages()
        await asyncio.wait_for(ivr.finished.wait(), 5)
    refer = messages[messages.index("REFER sip:"):]
    refer = refer[: refer.index("\n\n") if "\n\n" in refer else len(refer)]
    refer_to = next(line for line in refer.splitlines() if line.lower().startswith(("refer-to:", "r:")))
    assert sales in refer_to, refer
    call = ivr.first("finished")
    assert call.flow == "attendant" and "".join(call.digits) == "1"
    assert call.end_reason == "transferred", call.end_reason
    assert call.data["engine"]["flow_outcome"] == "transferred"
    assert call.vars["target"] == sales



#: After the REFER is refused, (603) the BYE that ends the call is answered; (481: the dialog is
#: gone for the transferee) the scenario ends there.
ANSWER_BYE = '  <recv request="BYE" timeout="20000"/>\n' + send(response("200 OK"))


@pytest.mark.parametrize("status", [603, 481])
async def test_a_refused_transfer_is_in_the_cdr_and_the_log(tmp_path: Path, status: int, caplog) -> None:
    """603: the flow goes on (unavailable prompt, then our BYE). 481: the transferee says the
    dialog is gone, so the call ends at once; its CDR says ``error`` with the REFER's status,
    not that the caller hung up."""
    accept = (E2E_DATA / "uac_dtmf_accept_refer.xml").read_text().replace("KEY_PCAP", "pcap/dtmf_2833_1.pcap")
    head = accept[: accept.index('  <recv request="REFER" timeout="12000"/>\n')]
    tail = ANSWER_BYE if status == 603 else ""
    scenario = tmp_path / "uac_refuse_refer.xml"
    scenario.write_text(head + '  <recv request="REFER" timeout="12000"/>\n'
                        + send(response(f"{status} Refused")) + tail + "</scenario>\n")
    sales = f"sip:sales@127.0.0.1:{free_port()}"
    async with Attendant(tmp_path, OPEN_TIME, {"sales_uri": sales}) as ivr:
        cdr = CdrWriter(tmp_path / "cdr.jsonl")
        ivr.engine.observers.append(cdr)
        with SippRunner(tmp_path / "sipp", scenario, remote=("127.0.0.1", ivr.port), service="attendant",
                        extra=["-timeout", "25s", "-timeout_error"]) as sipp:
            assert await sipp.wait_async(25) == 0, sipp.log()[-4000:]
        await asyncio.wait_for(ivr.finished.wait(), 10)
        cdr.close()
    [record] = [json.loads(line) for line in (tmp_path / "cdr.jsonl").read_text().splitlines()]
    assert record["transfers"] == [{"to": sales, "status": status, "outcome": "failed"}], record
    if status == 481:
        assert record["outcome"] == "error" and record["flow_outcome"] == "error", record
    else:
        assert record["outcome"] == "local_hangup" and record["flow_outcome"] == "hangup", record
    assert f"transfer to {sales} refused: {status}" in caplog.text

async def test_out_of_hours_caller_leaves_a_voicemail(tmp_path: Path) -> None:
    voice = speech("Hi, this is Bob. Please call me back about the invoice.")
    speech_at = 6.8  # seconds into baresip's microphone: after the greeting and the beep
    microphone = np.concatenate([np.zeros(int(speech_at * RATE), np.int16), voice, np.zeros(10 * RATE, np.int16)])
    async with Attendant(tmp_path, CLOSED_TIME, {}) as ivr:
        with BaresipRunner(tmp_path / "baresip", microphone=microphone, run_seconds=20,
                           commands=[f"/dial sip:attendant@127.0.0.1:{ivr.port}"]) as baresip:
            deadline = time.monotonic() + 8
            while not any(kind == "answered" for kind, _, _ in ivr.events):
                assert time.monotonic() < deadline, baresip.log()[-3000:]
                await asyncio.sleep(0.05)
            answered = time.monotonic()
            await asyncio.sleep(0.6)
            await asyncio.to_thread(baresip.command, "sndcode", "5")  # skip the closed notice
            hang_up_at = answered + speech_at + len(voice) / RATE + 1.0
            await asyncio.sleep(hang_up_at - time.monotonic())
            await asyncio.to_thread(baresip.command, "hangup")  # how most voicemails end
            await asyncio.wait_for(ivr.finished.wait(), 5)
    call = ivr.first("finished")
    assert call.end_reason == "remote_hangup"
    [path] = call.recordings
    assert Path(path).parent == tmp_path / "rec" / "voicemail" / "general"
    assert call.vars["message"] == path
    size = Path(path).stat().st_size
    with wave.open(path) as wav:  # a valid file: the header's sizes match the data written
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.getnframes() * 2 + 44 == size
        recorded = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    pieces = assert_contains(voice, recorded)  # baresip's voice, through G.711, is in the message
    index, match = next((i, m) for i, m in enumerate(pieces) if m.correlation > 0.9)
    voice_ends = match.offset - index * RATE // 2 + len(voice)
    # the message runs until the hang-up, 1 s after the voice, and stops there
    assert 0.5 * RATE < len(recorded) - voice_ends < 1.6 * RATE, (len(recorded) - voice_ends) / RATE


# -- http and hot reload on `ivr serve` called with `ivr call` -------------------------------


def ivr_call(uri: str, *args: str, timeout: float = 14) -> subprocess.Popen:
    """``ivr call`` as a subprocess (what a person types); ``communicate()`` to wait."""
    return subprocess.Popen([sys.executable, "-m", "ivr", "call", uri, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PROJECT)})


def heard(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


class CrmHandler(BaseHTTPRequestHandler):
    """A customer database: ``GET /caller?id=...`` answers which tone the caller should hear."""

    requests: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        type(self).requests.append({"path": [url.path], **parse_qs(url.query)})
        body = json.dumps({"tone": 660, "name": "gold customer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass


HTTP_FLOW = """\
flow: lookup
start: ask_crm
nodes:
  ask_crm:
    http: {{url: "http://127.0.0.1:{port}/caller?id={{{{ call.id | urlencode }}}}", save_as: crm, timeout: 2s}}
    on: {{ok: greet, error: failed, timeout: failed}}
  greet: {{play: {{tone: "{{{{ vars.crm.tone }}}}", duration: 1500ms}}, next: bye}}
  failed: {{play: {{tone: "300", duration: 1500ms}}, next: bye}}
  bye: {{hangup: }}
"""


def test_http_node_during_a_real_call_steers_the_prompt(tmp_path: Path) -> None:
    CrmHandler.requests = []
    crm = ThreadingHTTPServer(("127.0.0.1", 0), CrmHandler)
    threading.Thread(target=crm.serve_forever, daemon=True).start()
    try:
        flow = HTTP_FLOW.format(port=crm.server_address[1])
        with IvrServeProcess(tmp_path / "ivr", flow, transports="[udp]") as server:
            caller = ivr_call(f"sip:lookup@127.0.0.1:{server.port}", "--record", str(tmp_path / "heard.wav"),
                              "--duration", "5")
            out, err = caller.communicate(timeout=12)
            assert caller.returncode == 0 and "remote_hangup" in out, out + err + server.log()[-3000:]
            server.stop()
            [record] = [json.loads(line) for line in (tmp_path / "ivr" / "cdr.jsonl").read_text().splitlines()]
    finally:
        crm.shutdown()
    [request] = CrmHandler.requests
    assert request["path"] == ["/caller"] and request["id"] == [record["call_id"]]
    assert record["flow_outcome"] == "hangup" and record["outcome"] == "local_hangup"
    audio = heard(tmp_path / "heard.wav")
    assert tone_share(audio, 660) > 0.8 and tone_share(audio, 300) < 0.01


RELOAD_FLOW = """\
flow: reload
start: first
nodes:
  first: {{play: {{tone: "{hz}", duration: 1s}}, next: gap}}
  gap: {{pause: 2500ms, next: second}}
  second: {{play: {{tone: "{hz}", duration: 1s}}, next: bye}}
  bye: {{hangup: }}
"""


def test_flow_edited_during_a_live_call_applies_to_the_next_call_only(tmp_path: Path) -> None:
    with IvrServeProcess(tmp_path / "ivr", RELOAD_FLOW.format(hz=440), transports="[udp]") as server:
        uri = f"sip:reload@127.0.0.1:{server.port}"
        live = ivr_call(uri, "--record", str(tmp_path / "live.wav"), "--duration", "8")
        deadline = time.monotonic() + 5
        while " answered" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        time.sleep(0.3)  # the live call is playing its first tone
        (tmp_path / "ivr" / "flow.yaml").write_text(RELOAD_FLOW.format(hz=880))
        time.sleep(1.2)  # the store looks at file times at most once a second
        new = ivr_call(uri, "--record", str(tmp_path / "new.wav"), "--duration", "8")
        for caller in (live, new):
            out, err = caller.communicate(timeout=12)
            assert caller.returncode == 0 and "remote_hangup" in out, out + err + server.log()[-3000:]
        log = server.log()
    assert "reloaded" in log, log[-3000:]
    live_audio, new_audio = heard(tmp_path / "live.wav"), heard(tmp_path / "new.wav")
    # the live call's second tone started after the edit, and is still the old version's
    second_half = live_audio[int(2.5 * RATE):]
    assert tone_share(second_half, 440) > 0.8 and tone_share(second_half, 880) < 0.01
    assert tone_share(new_audio, 880) > 0.8 and tone_share(new_audio, 440) < 0.01
