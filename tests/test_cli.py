"""The ``ivr`` command line: argument handling, embedded defaults, exit statuses."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import time

import pytest

from ivr import hookimpl
from ivr.caller_script import parse_dtmf_script
from ivr.cli import build_parser, main, sip_uri
from ivr.config import DEFAULT_FLOW_FILE, load_config, parse_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.plugins import make_plugin_manager
from tests.helpers.engine_fakes import ScriptedFlows
from tests.helpers.net import free_port


def test_dtmf_script_is_the_same_for_ivr_call_and_ivr_simulate():
    """One script language: times from the answer, +N moves on, @N jumps, hangup ends."""
    import ivr.cli

    assert importlib.import_module("ivr.flows.simulate").parse_dtmf_script is parse_dtmf_script
    assert ivr.cli.parse_dtmf_script is parse_dtmf_script
    assert parse_dtmf_script("1 2#") == [(0.0, "1"), (0.0, "2"), (0.0, "#")]
    assert parse_dtmf_script("+3s 1 +200ms 2 @10 hangup") == [(3.0, "1"), (3.2, "2"), (10.0, "hangup")]
    assert parse_dtmf_script("") == []
    with pytest.raises(ValueError, match="bad DTMF script token '1x'"):
        parse_dtmf_script("1x")
    with pytest.raises(ValueError, match="bad DTMF script time"):
        parse_dtmf_script("+soon 1")


def test_sip_uri_accepts_what_people_type_and_refuses_the_rest():
    assert sip_uri("sip:attendant@127.0.0.1:5060") == "sip:attendant@127.0.0.1:5060"
    assert sip_uri("attendant@127.0.0.1:5060") == "sip:attendant@127.0.0.1:5060"
    assert sip_uri("127.0.0.1:5060") == "sip:127.0.0.1:5060"
    for bad in ("sip:", "sip:@", "<>"):
        with pytest.raises(ValueError, match="SIP URI|no host"):
            sip_uri(bad)


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
    assert f"{path}:2: transports: 'sctp' is not udp, tcp or tls" in capsys.readouterr().err


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


def test_ivr_call_says_what_really_happened_at_once_and_writes_no_empty_wav(tmp_path):
    """Nothing listening: the ICMP error, at once. An unknown host: "not found", at once (not
    "no answer" after the INVITE's timers). Neither leaves a WAV behind."""
    port = free_port()
    heard = tmp_path / "heard.wav"
    for uri, expected in ((f"127.0.0.1:{port}", f"nothing answers SIP at 127.0.0.1:{port}"),
                          ("sip:ivr@no-such-host.invalid", "host 'no-such-host.invalid' not found")):
        result = subprocess.run([sys.executable, "-m", "ivr", "call", uri, "--record", str(heard), "--timeout", "20"],
                                capture_output=True, text=True, timeout=15)
        assert result.returncode == 1 and expected in result.stderr, result.stderr
        assert not heard.exists()
    bad = subprocess.run([sys.executable, "-m", "ivr", "call", "sip:"], capture_output=True, text=True, timeout=15)
    assert bad.returncode == 2 and "is not a SIP URI" in bad.stderr


def test_serve_refuses_to_start_without_a_flow_to_serve(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("flow: broken\nstart: nowhere\nnodes:\n  a: {hangup: }\n")
    missing = tmp_path / "missing.yaml"
    result = subprocess.run([sys.executable, "-m", "ivr", "serve", "--listen", "127.0.0.1:0", str(missing), str(broken)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert any(str(missing) in line and "No such file" in line for line in lines), lines
    assert any(line.startswith(f"ivr serve: {broken}:2:") for line in lines), lines
    assert lines[-1] == "ivr serve: no flow to serve; not starting"


def test_serve_names_a_skipped_flow_and_picks_it_up_once_fixed(tmp_path, caplog):
    from ivr.server import IvrServer

    good = tmp_path / "good.yaml"
    good.write_text("flow: good\nstart: a\nnodes:\n  a: {hangup: }\n")
    later = tmp_path / "later.yaml"
    later.write_text("flow: later\nstart: nowhere\nnodes:\n  a: {hangup: }\n")
    server = IvrServer(None, [str(good), str(later)], listen=("127.0.0.1", 0))
    try:
        assert server.engine.flows.flow_names() == ["good"]
        assert f"flow not served (fix it and it is picked up): {later}:2:" in caplog.text
        later.write_text("flow: later\nstart: a\nnodes:\n  a: {hangup: }\n")
        os.utime(later, (time.time() + 5, time.time() + 5))  # a new mtime even on a coarse clock
        server.engine.flows.store._last_check = float("-inf")  # do not wait out the 1 s interval
        assert server.engine.flows.flow_names() == ["good", "later"]
        assert server.engine.flows.problems() == []
    finally:
        server.close()


def test_serve_listen_option_and_help():
    args = build_parser().parse_args(["serve", "--listen", "0.0.0.0:5070"])
    assert args.listen == ("0.0.0.0", 5070)
    assert build_parser().parse_args(["serve", "-l", "[::1]:0"]).listen == ("::1", 0)
    for bad in ("5060", "localhost:5060", "0.0.0.0:99999"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--listen", bad])
    text = subprocess.run([sys.executable, "-m", "ivr", "serve", "--help"], capture_output=True, text=True,
                          timeout=30).stdout
    assert "127.0.0.1:5060" in text and "attendant.yaml" in text and "docs/deploy.md" in text


def test_check_takes_folders_as_serve_does(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("flow: a\nstart: x\nnodes:\n  x: {hangup: }\n")
    (tmp_path / "b.yml").write_text("flow: b\nstart: x\nnodes:\n  x: {hangup: }\n")
    (tmp_path / "notes.txt").write_text("not a flow")
    assert main(["check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'a.yaml'}: ok" in out and f"{tmp_path / 'b.yml'}: ok" in out and "notes" not in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["check", str(empty)]) == 1
    assert f"{empty}: no *.yaml or *.yml flow files" in capsys.readouterr().out
