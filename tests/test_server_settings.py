"""Follow-ups of the server: the configured clock that ``hours`` reads, the SIP transport
timeouts, ``plugins.load`` re-read on SIGHUP, and the per-source rate limit."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.admission import HOST_RATE_FACTOR, Admission
from ivr.call import CallContext
from ivr.config import ConfigError, parse_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.plugins import make_plugin_manager
from ivr.server import IvrServer
from tests.helpers.engine_fakes import FakeEndpoint, ScriptedFlows

HOURS_FLOW = """\
flow: office
start: check
schedules:
  office:
    timezone: Europe/Paris
    weekly: {mon-fri: "09:00-18:00"}
nodes:
  check: {hours: office, on: {open: is_open, closed: is_closed}}
  is_open: {set: {result: open}}
  is_closed: {set: {result: closed}}
"""


class HangupOnly:
    """A controller for flows that never answer: the end of the flow hangs up."""

    async def hangup(self, reason: str = "local_hangup") -> None:
        pass


async def hours_result(tmp_path: Path, clock_line: str) -> str:
    (tmp_path / "office.yaml").write_text(HOURS_FLOW)
    config = parse_config(f"flows: [office.yaml]\n{clock_line}", base_dir=tmp_path)
    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})
    runner = FlowStoreRunner(config, pm)
    call = CallContext("clock-1", pm.hook)
    call.controller = HangupOnly()
    await runner.run("office", call)
    return call.vars["result"]


async def test_configured_clock_is_the_time_hours_reads(tmp_path: Path) -> None:
    # Thursday 26 November 2026: 10:00 in Paris is open, 20:00 closed, whatever the real time
    assert await hours_result(tmp_path, 'clock: {now: "2026-11-26T10:00:00", tz: Europe/Paris}\n') == "open"
    assert await hours_result(tmp_path, 'clock: {now: "2026-11-26T20:00:00", tz: Europe/Paris}\n') == "closed"
    # an offset in the time is honoured: 09:30 UTC is 10:30 in Paris
    assert await hours_result(tmp_path, "clock: {now: 2026-11-26T09:30:00+00:00}\n") == "open"


def test_configured_clock_runs_on_in_real_time() -> None:
    config = parse_config('clock: {now: "2026-11-26T10:00:00", tz: Europe/Paris}\n')
    assert config.clock is not None
    first = config.clock.now()
    assert first.tzinfo is not None and first.utcoffset() == dt.timedelta(hours=1)
    assert abs(first - dt.datetime(2026, 11, 26, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))) < dt.timedelta(seconds=1)
    time.sleep(0.2)
    assert dt.timedelta(seconds=0.15) < config.clock.now() - first < dt.timedelta(seconds=2)
    assert parse_config("").clock is None  # real time by default


@pytest.mark.parametrize("text, message", [
    ('clock: {now: "soon"}\n', ":1: now: 'soon' is not an ISO 8601 date-time"),
    ('clock: {now: "2026-11-26T10:00:00", tz: Mars/Olympus}\n', ":1: tz: unknown time zone 'Mars/Olympus'"),
    ("clock:\n  tz: UTC\n", ":2: clock: 'now' is missing"),
    ("listen: {tcp_idle_timeout: 0}\n", ":1: tcp_idle_timeout: must be > 0 seconds"),
    ("hangup_tail: 9\n", ":1: hangup_tail: must be between 0 and 5 seconds"),
])
def test_bad_new_keys_point_at_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "ivr.yaml")
    assert str(info.value).startswith(f"ivr.yaml{message}")


async def test_tcp_idle_timeout_from_the_configuration_closes_idle_connections() -> None:
    config = parse_config("listen: {port: 0, transports: [udp, tcp], tcp_idle_timeout: 0.3, "
                          "tcp_message_timeout: 0.2}\n")
    engine = Engine(config, make_plugin_manager(builtins=False, entry_points=False, environ={}),
                    flows=ScriptedFlows())
    await engine.start()
    try:
        assert engine.endpoint.config.tcp_idle_timeout == 0.3
        assert engine.endpoint.config.tcp_message_timeout == 0.2
        reader, writer = await asyncio.open_connection(*engine.endpoint.local_address)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the server
        assert time.monotonic() - started < 1.5  # the default would be 64 s
        writer.close()
    finally:
        await engine.stop()


PLUGIN_SOURCE = '''
import ivr

@ivr.hookimpl
def ivr_register_actions(register):
    async def greet(session, params):
        return "done"
    register("{name}_greet", greet, schema={{"type": "object"}}, outcomes=("done",))
'''


async def test_sighup_loads_new_and_unloads_removed_plugins(tmp_path: Path, monkeypatch) -> None:
    modules = tmp_path / "mods"
    modules.mkdir()
    for name in ("p_followup_one", "p_followup_two"):
        (modules / f"{name}.py").write_text(PLUGIN_SOURCE.format(name=name))
    monkeypatch.syspath_prepend(str(modules))
    (tmp_path / "office.yaml").write_text(HOURS_FLOW)
    config_path = tmp_path / "ivr.yaml"
    config_path.write_text("flows: [office.yaml]\nplugins: {load: [p_followup_one]}\n")
    server = IvrServer(config_path, endpoint_factory=lambda cfg: FakeEndpoint())
    try:
        assert server.pm.has_plugin("p_followup_one") and not server.pm.has_plugin("p_followup_two")
        assert server.engine.flows.actions.get("p_followup_one_greet") is not None

        config_path.write_text("flows: [office.yaml]\nplugins: {load: [p_followup_two, not_a_module_xyz]}\n")
        server.reload()
        assert not server.pm.has_plugin("p_followup_one") and server.pm.has_plugin("p_followup_two")
        assert server.engine.flows.actions.get("p_followup_one_greet") is None
        assert server.engine.flows.actions.get("p_followup_two_greet") is not None
        assert server.extra_plugins == ["p_followup_two"]  # the missing module is retried next time
        assert server.engine.flows.flow_names() == ["office"]  # the flows are served still
        assert server.pm.has_plugin("ivr_plugins.playback")  # built-ins are never touched
    finally:
        server.close()
        for name in ("p_followup_one", "p_followup_two"):
            sys.modules.pop(name, None)


def _admit(admission: Admission, source: tuple[str, int]) -> int | None:
    call = CallContext(f"rate-{source}", None, source=source)
    return admission(None, call)


def test_a_flooding_source_does_not_lock_out_other_ports_of_the_same_host() -> None:
    now = [50.0]
    engine = type("Calls", (), {"calls": {"the call being admitted": None}})()
    admission = Admission(engine, parse_config("limits: {rate: {per_source: 2, burst: 3}}\n"),
                          clock=lambda: now[0])
    flood = [_admit(admission, ("127.0.0.1", 40000)) for _ in range(15)]
    assert flood == [None] * 3 + [503] * 12
    assert _admit(admission, ("127.0.0.1", 40002)) is None  # a phone beside the flood still gets in
    # ...but a flood that changes its source port on each INVITE meets the host's own limit
    rotating = [_admit(admission, ("127.0.0.1", 41000 + port)) for port in range(3 * HOST_RATE_FACTOR)]
    assert rotating.count(None) == 3 * HOST_RATE_FACTOR - 4 and rotating[-1] == 503
    assert _admit(admission, ("127.0.0.2", 40000)) is None  # other hosts are unaffected
