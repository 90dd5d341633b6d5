"""Server policy and observability against a fake endpoint: limits, CDR, metrics, reload."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from pathlib import Path

import pytest

from ivr.admission import Admission
from ivr.config import parse_config
from ivr.logs import CallLog, JsonLogFormatter
from ivr.server import IvrServer
from tests.helpers.engine_fakes import FakeCall, FakeEndpoint, ScriptedFlows, settle
from tests.helpers.net import free_port
from tests.helpers.waiting import wait_for


def write_config(folder: Path, text: str) -> Path:
    path = folder / "ivr.yaml"
    path.write_text(text)
    return path


def make_server(tmp_path: Path, text: str, **kwargs) -> tuple[IvrServer, FakeEndpoint]:
    endpoint = FakeEndpoint()
    server = IvrServer(write_config(tmp_path, "drain_timeout: 0\n" + text), endpoint_factory=lambda cfg: endpoint,
                       flows=ScriptedFlows(), **kwargs)
    return server, endpoint


async def start(server: IvrServer) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(server.run())
    await wait_for(lambda: server.engine.endpoint is not None and server.engine.endpoint.started,
                   message="server started")
    return task


async def test_max_calls_rejects_with_503_and_retry_after(tmp_path):
    server, endpoint = make_server(tmp_path, "recordings: rec\nlimits: {max_calls: 2, retry_after: 7}\n")
    task = await start(server)
    first, second, third = (endpoint.ring(FakeCall()) for _ in range(3))
    await settle(10)
    assert first.answered and second.answered
    assert third.rejected == 503 and third.reject_headers == {"Retry-After": "7"}
    first.remote_bye()
    await settle(10)
    fourth = endpoint.ring(FakeCall())
    await settle(10)
    assert fourth.answered  # room again once a call ended
    server.request_stop()
    assert await asyncio.wait_for(task, 5) == 0


def test_rate_limit_is_per_source_with_burst():
    now = [100.0]
    config = parse_config("limits: {rate: {per_source: 2, burst: 3}}\n")
    engine = type("E", (), {"calls": {}})()
    admission = Admission(engine, config, clock=lambda: now[0])

    def attempt(host: str):
        call = type("C", (), {"source": (host, 5060)})()
        engine.calls = {"x": None}  # only the call being admitted
        return admission(None, call)

    assert [attempt("127.0.0.2") for _ in range(4)] == [None, None, None, 503]
    assert attempt("127.0.0.3") is None  # another source has its own bucket
    now[0] += 0.5  # 2 calls/s: one token back after half a second
    assert attempt("127.0.0.2") is None and attempt("127.0.0.2") == 503


def test_allow_list_rejects_other_networks_with_403():
    config = parse_config('limits: {allow: ["127.0.0.0/30", "::1/128"]}\n')
    engine = type("E", (), {"calls": {"x": None}})()
    admission = Admission(engine, config)
    inside = type("C", (), {"source": ("127.0.0.2", 5060)})()
    outside = type("C", (), {"source": ("127.0.0.9", 5060)})()
    assert admission(None, inside) is None and admission(None, outside) == 403


def test_inbound_digest_auth_challenges_then_accepts():
    from simplesip.core.auth import Challenge, build_authorization

    config = parse_config("limits: {auth: {realm: ivr.test, users: {alice: secret}}}\n")
    engine = type("E", (), {"calls": {"x": None}})()
    admission = Admission(engine, config)
    caller = type("C", (), {"source": ("127.0.0.1", 5070)})()
    unauthenticated = type("S", (), {"id": "a", "headers": {}})()
    assert admission(unauthenticated, caller) == 401
    challenge_value = admission.reject_headers(401)["WWW-Authenticate"]
    assert challenge_value.startswith("Digest") and 'realm="ivr.test"' in challenge_value
    challenge = Challenge.parse(challenge_value)
    authorization = build_authorization(challenge, "INVITE", "sip:ivr@127.0.0.1", "alice", "secret")
    good = type("S", (), {"id": "b", "headers": {"Authorization": authorization}})()
    assert admission(good, caller) is None
    wrong = build_authorization(challenge, "INVITE", "sip:ivr@127.0.0.1", "alice", "guess")
    assert admission(type("S", (), {"id": "c", "headers": {"Authorization": wrong}})(), caller) == 401


async def test_cdr_lines_and_metrics(tmp_path):
    port = free_port()
    server, endpoint = make_server(
        tmp_path, f"recordings: rec\ncdr: cdr.jsonl\nmetrics_port: {port}\nlimits: {{max_calls: 1}}\n")
    task = await start(server)
    call = endpoint.ring(FakeCall(to_user="sales", from_user="bob"))
    busy = endpoint.ring(FakeCall())
    await settle(10)
    for digit in "12#":
        call.on_dtmf(digit, "rfc4733", 100)
    await asyncio.wait_for(call.ended.wait(), 2)
    await settle(10)
    metrics = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
    server.request_stop()
    assert await asyncio.wait_for(task, 5) == 0
    lines = [json.loads(line) for line in (tmp_path / "cdr.jsonl").read_text().splitlines()]
    answered = next(r for r in lines if r["call_id"] == call.id)
    assert answered["from"] == "sip:bob@127.0.0.1" and answered["flow"] == "sales"
    assert answered["digits"] == "12#" and answered["outcome"] == "local_hangup"
    assert answered["start"] <= answered["answer"] <= answered["end"]
    rejected = next(r for r in lines if r["call_id"] == busy.id)
    assert rejected["outcome"] == "rejected_503" and rejected["answer"] is None
    assert 'ivr_calls_total{outcome="local_hangup"} 1.0' in metrics
    assert 'ivr_calls_total{outcome="rejected_503"} 1.0' in metrics
    assert 'ivr_dtmf_events_total{source="rfc4733"} 3.0' in metrics
    assert "ivr_active_calls 0.0" in metrics


def test_call_events_log_as_json_lines(caplog):
    from ivr.call import CallContext

    recorder = CallLog()
    caplog.set_level(logging.INFO, logger="ivr.calls")
    call = CallContext("abc", None, from_uri="sip:a@x", to_uri="sip:b@y")
    recorder("dtmf", call, {"digit": "5", "source": "info"})
    record = next(r for r in caplog.records if r.name == "ivr.calls")
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["event"] == "dtmf" and entry["call_id"] == "abc" and entry["digit"] == "5"
    assert "abc" in record.getMessage()


async def test_sighup_style_reload_applies_new_routes_and_keeps_old_on_error(tmp_path, caplog):
    server, endpoint = make_server(tmp_path, 'recordings: rec\nroutes: {"7": sales}\n')
    task = await start(server)
    write_config(tmp_path, 'drain_timeout: 0\nrecordings: rec\nroutes: {"7": attendant}\n')
    server.reload()
    endpoint.ring(FakeCall(to_user="7"))
    await settle(10)
    assert server.engine.flows.started[-1][0] == "attendant"
    write_config(tmp_path, "limits: {max_calls: 0}\n")
    server.reload()
    assert server.config.routes == {"7": "attendant"}
    assert any("reload failed" in r.getMessage() and "ivr.yaml:1" in r.getMessage() for r in caplog.records)
    server.request_stop()
    assert await asyncio.wait_for(task, 5) == 0


@pytest.mark.parametrize("text, message", [
    ("limits:\n  max_calls: many\n", ":2: max_calls: expected int, got 'many'"),
    ("drain_timeout: 5\nlogging: {format: xml}\n", ":2: format: 'xml' is not text or json"),
])
def test_bad_config_reports_file_and_line(tmp_path, text, message):
    from ivr.config import ConfigError

    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        IvrServer(path, flows=ScriptedFlows())
    assert str(info.value) == f"{path}{message}"


async def test_a_second_stop_request_ends_the_calls_at_once(tmp_path, caplog):
    """Ctrl-C drains (up to drain_timeout, here 30 s); a second Ctrl-C ends the calls now, and
    says so."""
    endpoint = FakeEndpoint()
    server = IvrServer(write_config(tmp_path, "drain_timeout: 30\nrecordings: rec\n"),
                       endpoint_factory=lambda cfg: endpoint, flows=ScriptedFlows())
    task = await start(server)
    call = endpoint.ring(FakeCall())
    await settle(10)
    assert call.answered
    server.request_stop()
    await asyncio.sleep(0.3)
    assert not task.done() and not call.hung_up  # draining: the call goes on
    server.request_stop()
    assert await asyncio.wait_for(task, 5) == 0
    assert call.hung_up
    assert "asked again to stop: ending 1 call(s) now instead of waiting" in caplog.text


async def test_log_lines_written_for_a_call_name_its_flow_caller_and_callee(tmp_path):
    """Whatever logs while a call's task runs (here the engine, when the flow fails) names the
    call; so do call events, in text and in JSON."""
    import io

    from ivr.logs import CallContextFilter

    class FailingFlows(ScriptedFlows):
        async def run(self, name, call):
            await call.controller.answer()
            raise RuntimeError("flow bug")

    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.addFilter(CallContextFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s%(call_tag)s"))
    json_lines = io.StringIO()
    json_handler = logging.StreamHandler(json_lines)
    json_handler.addFilter(CallContextFilter())
    json_handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    root.addHandler(json_handler)
    try:
        endpoint = FakeEndpoint()
        server = IvrServer(write_config(tmp_path, "drain_timeout: 0\nrecordings: rec\n"),
                           endpoint_factory=lambda cfg: endpoint, flows=FailingFlows())
        task = await start(server)
        call = endpoint.ring(FakeCall(from_user="alice", to_user="sales"))
        await settle(20)
        server.request_stop()
        await asyncio.wait_for(task, 5)
    finally:
        root.setLevel(level)
        root.removeHandler(handler)
        root.removeHandler(json_handler)
    tag = f"[call={call.id} flow=sales from=alice to=sales]"
    failure = next(line for line in lines.getvalue().splitlines() if "flow bug" in line)
    assert failure.endswith(tag), failure
    event = next(line for line in lines.getvalue().splitlines() if f"call {call.id} answered" in line)
    assert event.endswith(f"[call={call.id} flow=sales from=sip:alice@127.0.0.1 to=sip:sales@127.0.0.1]"), event
    entries = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    failed = next(e for e in entries if "flow bug" in e["message"])
    assert (failed["call_id"], failed["flow"], failed["from"], failed["to"]) == (call.id, "sales", "alice", "sales")
