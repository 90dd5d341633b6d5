"""A call simplesip ends with ``session_expired`` (RFC 4028: the peer stopped refreshing) is an
``error`` for the hooks, and its CDR says why."""

from __future__ import annotations

import json
from pathlib import Path

from ivr import hookimpl
from ivr.cdr import CdrWriter
from ivr.config import parse_config
from ivr.engine import Engine
from ivr.plugins import make_plugin_manager
from tests.helpers.engine_fakes import FakeCall, FakeEndpoint, ScriptedFlows, settle


async def test_session_expired_is_an_error_with_its_reason_in_the_cdr(tmp_path: Path):
    ended: list[str] = []

    class Watcher:
        @hookimpl
        def ivr_call_ended(self, call, reason):
            ended.append(reason)

    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})
    pm.register(Watcher(), name="Watcher")
    endpoint = FakeEndpoint()
    engine = Engine(parse_config(""), pm, flows=ScriptedFlows(), endpoint_factory=lambda cfg: endpoint)
    cdr = CdrWriter(tmp_path / "cdr.jsonl")
    engine.observers.append(cdr)
    await engine.start()
    try:
        call = endpoint.ring(FakeCall())
        await settle()
        call._end("session_expired")  # what simplesip reports when the refreshes stop
        await settle(10)
    finally:
        await engine.stop()
        cdr.close()
    assert ended == ["error"]
    record = json.loads((tmp_path / "cdr.jsonl").read_text().splitlines()[0])
    assert record["outcome"] == "error" and "session expired" in record["error"]
