"""The ``ivr`` command line: argument handling, embedded defaults, exit statuses."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from ivr import hookimpl
from ivr.cli import build_parser, main, parse_dtmf_script
from ivr.config import DEFAULT_FLOW_FILE, load_config, parse_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.plugins import make_plugin_manager
from tests.helpers.engine_fakes import ScriptedFlows
from tests.helpers.net import free_port


def test_dtmf_script_pauses():
    assert parse_dtmf_script("1 2#") == [(1.0, "1"), (1.0, "2"), (0.25, "#")]
    assert parse_dtmf_script("+3s 1 +200ms 2") == [(3.0, "1"), (0.2, "2")]
    assert parse_dtmf_script("") == []
    with pytest.raises(ValueError, match="not a DTMF digit"):
        parse_dtmf_script("1x")


def test_serve_without_arguments_is_the_embedded_attendant():
    args = build_parser().parse_args(["serve"])
    assert args.config is None and args.flows == []
    config = load_config(None)
    assert (config.listen_host, config.listen_port, config.transports) == ("127.0.0.1", 5060, ["udp", "tcp"])
    assert config.flows == [DEFAULT_FLOW_FILE] and config.accounts == []
    runner = FlowStoreRunner(config, make_plugin_manager(entry_points=False, environ={}))
    assert "attendant" in runner.flow_names()


def test_flow_commands_are_wired():
    assert main(["check", str(DEFAULT_FLOW_FILE)]) == 0


def test_bad_config_exit_status_and_message(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("listen:\n  transports: [sctp]\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert f"{path}:2: transports: 'sctp' is not udp or tcp" in capsys.readouterr().err


async def test_ivr_call_exit_status_when_rejected(capsys):
    class Busy:
        @hookimpl
        def ivr_incoming_call(self, call):
            return 486

    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})
    pm.register(Busy(), name="busy")
    engine = Engine(parse_config("listen: {port: 0, transports: [udp]}\n"), pm, flows=ScriptedFlows())
    await engine.start()
    try:
        uri = f"sip:x@127.0.0.1:{engine.endpoint.local_address[1]}"
        status = await asyncio.to_thread(main, ["call", uri, "--duration", "1", "--timeout", "5"])
    finally:
        await engine.stop()
    assert status == 1 and "486" in capsys.readouterr().err


def test_ivr_call_unreachable_gives_up_with_status_1():
    port = free_port()  # nothing listens there
    result = subprocess.run([sys.executable, "-m", "ivr", "call", f"sip:x@127.0.0.1:{port}", "--timeout", "2"],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 1 and "not answered" in result.stderr
