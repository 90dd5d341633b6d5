"""Engine behaviour against a fake endpoint: routing, lifecycle hooks, DTMF, media dispatch and
fault isolation between calls."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from ivr import hookimpl
from ivr.config import parse_config
from ivr.engine import Engine
from ivr.plugins import make_plugin_manager
from tests.helpers.engine_fakes import FakeCall, FakeEndpoint, ScriptedFlows, settle


def make_engine(config_text: str = "", flows: ScriptedFlows | None = None, plugins=()) -> tuple[Engine, FakeEndpoint, ScriptedFlows]:
    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})
    for plugin in plugins:
        pm.register(plugin, name=type(plugin).__name__)
    flows = flows or ScriptedFlows()
    endpoint = FakeEndpoint()
    engine = Engine(parse_config(config_text), pm, flows=flows, endpoint_factory=lambda cfg: endpoint)
    return engine, endpoint, flows


class FrameCounter:
    """Counts the rows it sees per call and writes a per-call tone into the outbound audio."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    @hookimpl
    def ivr_audio_in(self, batch):
        assert batch.pcm.shape == (len(batch.calls), 160)
        for call in batch.calls:
            self.seen[call.id] = self.seen.get(call.id, 0) + 1

    @hookimpl
    def ivr_audio_out(self, batch):
        batch.pcm[:] = 1000


class ExplodesForOneCall:
    """Raises on every frame for the call whose caller is ``bad``."""

    @hookimpl
    def ivr_audio_in(self, batch):
        if any(call.from_user == "bad" for call in batch.calls):
            raise ValueError("boom")


async def test_routes_answers_and_collects_dtmf_without_dtmf_plugin():
    engine, endpoint, flows = make_engine('routes: {"100": sales}\n')
    await engine.start()
    call = endpoint.ring(FakeCall(to_user="100"))
    await settle()
    assert call.answered and flows.started[0][0] == "sales"
    for digit in "42#":
        call.on_dtmf(digit, "rfc4733", 100)
    await asyncio.wait_for(call.ended.wait(), 2)
    await settle()
    context = flows.started[0][1]
    assert context.vars["digits"] == "42"
    assert call.hung_up and context.end_reason == "local_hangup"
    assert engine.calls == {}


async def test_route_falls_back_to_flow_named_like_called_user_then_default():
    engine, endpoint, flows = make_engine("default_flow: attendant\n")
    await engine.start()
    endpoint.ring(FakeCall(to_user="sales"))
    endpoint.ring(FakeCall(to_user="9999"))
    await settle()
    assert [name for name, _ in flows.started] == ["sales", "attendant"]


async def test_plugin_can_reject_or_choose_flow():
    class Gate:
        @hookimpl
        def ivr_incoming_call(self, call):
            return 403 if call.from_user == "mallory" else ("sales" if call.from_user == "vip" else None)

    engine, endpoint, flows = make_engine(plugins=[Gate()])
    await engine.start()
    rejected = endpoint.ring(FakeCall(from_user="mallory"))
    vip = endpoint.ring(FakeCall(from_user="vip", to_user="attendant"))
    await settle()
    assert rejected.rejected == 403 and not rejected.answered
    assert vip.answered and flows.started[-1][0] == "sales"


async def test_flow_that_never_answers_gets_480_and_unknown_route_404():
    engine, endpoint, _ = make_engine(flows=ScriptedFlows(answer=False))
    await engine.start()
    call = endpoint.ring(FakeCall())
    await settle()
    assert call.rejected == 480
    engine2, endpoint2, _ = make_engine(flows=ScriptedFlows(names=()))
    await engine2.start()
    nowhere = endpoint2.ring(FakeCall(to_user="x"))
    await settle()
    assert nowhere.rejected == 404


async def test_remote_bye_ends_call_once_with_hangup_event_and_hook():
    ended: list[tuple[str, str]] = []

    class Watcher:
        @hookimpl
        def ivr_call_ended(self, call, reason):
            ended.append((call.id, reason))

    engine, endpoint, flows = make_engine(plugins=[Watcher()])
    await engine.start()
    call = endpoint.ring(FakeCall())
    await settle()
    call.remote_bye()
    await settle(10)
    assert ended == [(call.id, "remote_hangup")]
    assert flows.started[0][1].vars["digits"] == ""
    assert not call.hung_up  # no BYE back for a BYE


async def test_media_tick_dispatches_batches_and_returns_outbound_frames():
    counter = FrameCounter()
    engine, endpoint, _ = make_engine(plugins=[counter])
    await engine.start()
    calls = [endpoint.ring(FakeCall()) for _ in range(3)]
    await settle()
    for _ in range(5):
        live, out = endpoint.tick()
    assert len(live) == 3 and out.shape == (3, 160) and (out == 1000).all()
    assert sorted(counter.seen.values()) == [5, 5, 5]
    # a call the engine does not own (not in its media table) gets a silent row
    stranger = FakeCall()
    stranger.answered = True
    endpoint.calls.append(stranger)
    live, out = endpoint.tick()
    assert (out[3] == 0).all() and (out[:3] == 1000).all()
    assert engine.media_call_count == 3 and calls


async def test_inbound_audio_is_read_only_for_plugins():
    errors: list[BaseException] = []

    class Writer:
        @hookimpl
        def ivr_audio_in(self, batch):
            try:
                batch.pcm[:] = 1
            except ValueError as exc:
                errors.append(exc)

    engine, endpoint, _ = make_engine(plugins=[Writer()])
    await engine.start()
    endpoint.ring(FakeCall())
    await settle()
    pcm = np.full((1, 160), 7, dtype=np.int16)
    endpoint.tick(pcm)
    assert errors and (pcm == 7).all()


async def test_plugin_raising_on_every_frame_of_one_call_does_not_disturb_another(caplog):
    counter = FrameCounter()
    ended: list[tuple[str, str]] = []

    class Watcher:
        @hookimpl
        def ivr_call_ended(self, call, reason):
            ended.append((call.from_user, reason))

    engine, endpoint, _ = make_engine(plugins=[counter, ExplodesForOneCall(), Watcher()])
    await engine.start()
    good = endpoint.ring(FakeCall(from_user="good"))
    bad = endpoint.ring(FakeCall(from_user="bad"))
    await settle()
    caplog.set_level(logging.ERROR)
    for _ in range(50):
        endpoint.tick()
        await settle(2)
    assert ("bad", "error") in ended and bad.hung_up
    assert not good.ended.is_set() and engine.media_call_count == 1
    assert counter.seen[good.id] == 50  # every tick reached the healthy call
    assert any("ExplodesForOneCall" in r.getMessage() or "boom" in r.getMessage() for r in caplog.records)
    assert any("plugin" in r.getMessage() and bad.id in r.getMessage() for r in caplog.records)


async def test_exception_in_call_hook_fails_that_call_only():
    class BadStart:
        @hookimpl
        def ivr_call_started(self, call):
            if call.from_user == "bad":
                raise RuntimeError("cannot start")

    engine, endpoint, flows = make_engine(plugins=[BadStart()])
    await engine.start()
    good = endpoint.ring(FakeCall(from_user="good"))
    bad = endpoint.ring(FakeCall(from_user="bad"))
    await settle(20)
    bad_context = next(c for _, c in flows.started if c.from_user == "bad")
    assert bad.hung_up and bad_context.end_reason == "error" and "BadStart" in bad_context.failed
    assert not good.ended.is_set()


async def test_transfer_outcomes_map_refer_status():
    engine, endpoint, _ = make_engine()
    await engine.start()
    outcomes = {}
    for status in (200, 486, 408, 503):
        call = endpoint.ring(FakeCall(refer_status=status))
        await settle()
        context = engine.calls[call.id]
        outcomes[status] = await context.controller.transfer("sip:op@127.0.0.1")
        if status == 200:
            assert context.end_reason == "transferred" and call.hung_up
    assert outcomes == {200: "ok", 486: "busy", 408: "no_answer", 503: "failed"}


async def test_stop_ends_live_calls_with_shutdown_and_stops_recording():
    stopped: list[str] = []

    class Recorder:
        @hookimpl
        def ivr_stop_recording(self, call, reason):
            stopped.append(reason)

    engine, endpoint, flows = make_engine(plugins=[Recorder()])
    await engine.start()
    call = endpoint.ring(FakeCall())
    await settle()
    await engine.stop(drain_timeout=0.1)
    assert call.hung_up and stopped == ["shutdown"] and endpoint.stopped
    assert flows.started[0][1].end_reason == "shutdown"
    assert flows.started[0][1].vars["digits"] == ""  # the flow saw the HangupEvent and returned


async def test_not_accepting_rejects_with_503():
    engine, endpoint, _ = make_engine()
    await engine.start()
    engine.accepting = False
    call = endpoint.ring(FakeCall())
    await settle()
    assert call.rejected == 503 and call.reject_headers == {"Retry-After": "5"}


@pytest.mark.parametrize("count", [1, 7])
async def test_dtmf_goes_through_dtmf_received_hook_when_a_plugin_implements_it(count):
    received: list[tuple[str, str]] = []

    class Merger:
        @hookimpl
        def ivr_dtmf_received(self, call, digit, source, duration_ms):
            received.append((digit, source))
            call.report_dtmf(digit, source)

    engine, endpoint, flows = make_engine(plugins=[Merger()])
    await engine.start()
    call = endpoint.ring(FakeCall())
    await settle()
    for _ in range(count):
        call.on_dtmf("5", "info", None)
    call.on_dtmf("#", "rfc4733", 80)
    await asyncio.wait_for(call.ended.wait(), 2)
    assert received[-1] == ("#", "rfc4733") and len(received) == count + 1
    assert flows.started[0][1].vars["digits"] == "5" * count


async def test_every_fault_before_the_answer_gets_a_final_response():
    """A plugin deciding the route, a flow that fails to start, the admission policy: each raises
    before the 200, and the caller gets 500 (not silence until it gives up)."""

    class BadDecision:
        @hookimpl
        def ivr_incoming_call(self, call):
            if call.from_user == "plugin":
                raise RuntimeError("plugin bug")

    class FailingFlows(ScriptedFlows):
        async def run(self, name, call):
            if call.from_user == "flow":
                raise LookupError("no flow named 'gone'")
            return await super().run(name, call)

    engine, endpoint, _ = make_engine(flows=FailingFlows(), plugins=[BadDecision()])

    def admission(sip_call, call):
        if call.from_user == "admission":
            raise RuntimeError("policy bug")
        return None

    engine.admission = admission
    await engine.start()
    calls = {who: endpoint.ring(FakeCall(from_user=who)) for who in ("plugin", "flow", "admission", "fine")}
    await settle(20)
    assert {who: call.rejected for who, call in calls.items()} == {
        "plugin": 500, "flow": 500, "admission": 500, "fine": None}
    assert calls["fine"].answered and not calls["fine"].ended.is_set()
    assert not engine.calls.keys() - {calls["fine"].id}  # the failed calls are gone
