"""Plugin and flow authoring (issue 21): blocking work in actions under the simulator, the
configuration in every command, mistakes refused at load time in one line, actions that raise."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from ivr import hookimpl
from ivr.call import CallContext
from ivr.cdr import CdrWriter
from ivr.cli import main as ivr_main
from ivr.flows.executor import ERROR_PROMPT
from ivr.loading import SetupError
from ivr.testing import make_setup, simulate_call

ROOT = Path(__file__).resolve().parent.parent


def flow_file(tmp_path: Path, nodes: str, name: str = "t") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"flow: {name}\nstart: a\nnodes:\n" + textwrap.indent(textwrap.dedent(nodes), "  "))
    return path


def plugin(name: str, **functions: object) -> types.ModuleType:
    """A plugin module made of ``functions``."""
    module = types.ModuleType(name)
    for attr, function in functions.items():
        setattr(module, attr, function)
    return module


def action_plugin(name: str, handler: object, outcomes: tuple[str, ...] = ("ok",)) -> types.ModuleType:
    @hookimpl
    def ivr_register_actions(register):
        register(name, handler, outcomes=outcomes)

    return plugin(f"acme_{name}", ivr_register_actions=ivr_register_actions)


# -- blocking work --------------------------------------------------------------------------


def slow_lookup(seconds: float) -> str:
    time.sleep(seconds)
    return "found"


async def to_thread_action(session, params):
    return await asyncio.to_thread(slow_lookup, float(params["seconds"]))


async def run_blocking_action(session, params):
    return await session.run_blocking(slow_lookup, float(params["seconds"]))


@pytest.mark.parametrize("handler", [to_thread_action, run_blocking_action])
def test_blocking_work_in_an_action_takes_no_virtual_time_and_the_trace_repeats(tmp_path, handler) -> None:
    path = flow_file(tmp_path, """
        a: {pause: 1s, next: b}
        b: {slow: {seconds: "0.2"}, on: {found: c}}
        c: {play: {say: "ok"}, next: d}
        d: {hangup: }
    """)
    runs = [simulate_call(path, action_plugin("slow", handler, ("found",))) for _ in range(2)]
    assert runs[0].outcome == "hangup" and runs[0].nodes == ["a", "b", "c", "d"]
    assert [str(run) for run in runs] == [str(runs[0])] * 2
    assert {e.time for e in runs[0].trace if e.node == "b"} == {1.0}  # entered and left at 1 s: no virtual time


async def slow_with_timeout(session, params):
    try:
        return await asyncio.wait_for(session.run_blocking(slow_lookup, 1.0), 0.3)
    except asyncio.TimeoutError:
        return "timeout"


def test_a_timeout_around_blocking_work_fires_at_its_virtual_time(tmp_path) -> None:
    path = flow_file(tmp_path, "a: {slow: {}, on: {timeout: b}}\nb: {hangup: }\n")
    result = simulate_call(path, action_plugin("slow", slow_with_timeout, ("found", "timeout")))
    assert [(e.time, e.event, e.detail) for e in result.trace if e.node == "a"][-1] == (0.3, "outcome", "timeout")


def test_simulate_exits_non_zero_when_it_stops_at_the_time_limit(tmp_path, capsys) -> None:
    path = flow_file(tmp_path, "a: {pause: 2h, next: b}\nb: {hangup: }\n")
    assert ivr_main(["simulate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "stopped   time limit 3600s" in out and "still running at the time limit" in out


# -- configuration --------------------------------------------------------------------------


def test_check_and_simulate_take_config_and_set(tmp_path, capsys) -> None:
    config = tmp_path / "ivr.yaml"
    config.write_text("variables: {pbx: 10.0.0.5}\n")
    path = flow_file(tmp_path, 'a: {play: {say: "{{ config.pbx }} {{ config.greeting }}"}, next: b}\nb: {hangup: }\n')
    assert ivr_main(["simulate", str(path), "--config", str(config), "--set", "variables.greeting=hi"]) == 0
    assert "say '10.0.0.5 hi'" in capsys.readouterr().out
    assert ivr_main(["check", str(path), "--config", str(config), "--set", "limits.max_calls=5"]) == 0
    assert ivr_main(["check", str(path), "--set", "limts.max_calls=5"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "ivr check: --set limts.max_calls=5: unknown configuration key 'limts' (did you mean 'limits'?)")
    assert ivr_main(["simulate", str(path), "--set", "limits.max_cals=5"]) == 2
    assert "unknown key 'max_cals' in limits (did you mean 'max_calls'?)" in capsys.readouterr().err


def test_a_plugin_section_reaches_ivr_configure_in_simulate() -> None:
    seen = []
    configured = plugin("acme", ivr_configure=hookimpl(lambda config: seen.append(config["plugins"]["acme"])))
    setup = make_setup(configured, config={"plugins": {"acme": {"table": "a.csv"}}}, overrides=["plugins.acme.x=3"])
    assert seen == [{"table": "a.csv", "x": 3}] and setup.problems == []


def test_a_section_for_no_plugin_is_a_problem() -> None:
    with pytest.raises(SetupError, match=r"<test config>: plugins.acmee: no plugin of that name is loaded "
                                         r"\(did you mean 'acme'\?\)"):
        make_setup(plugin("acme"), config={"plugins": {"acmee": {}}})


# -- mistakes at load time ------------------------------------------------------------------


def problems_of(*plugins: object) -> list[str]:
    return make_setup(*plugins, strict=False).problems


def test_a_hook_name_that_is_no_hook_is_refused_with_did_you_mean() -> None:
    assert problems_of(plugin("acme", ivr_audio_inn=hookimpl(lambda batch: None))) == [
        "plugin acme: ivr_audio_inn is no hook (did you mean ivr_audio_in?); not loaded"]


def test_a_hook_argument_the_hook_does_not_pass_is_refused_in_one_line() -> None:
    assert problems_of(plugin("acme", ivr_dtmf=hookimpl(lambda call, digt: None))) == [
        "plugin acme: ivr_dtmf() takes 'digt', which the hook does not pass (it passes: call, digit, source); "
        "not loaded"]


def test_a_hook_function_without_hookimpl_is_reported() -> None:
    def ivr_call_started(call):  # no @hookimpl: never called
        pass

    (line,) = problems_of(plugin("acme", ivr_call_started=ivr_call_started))
    assert line.startswith("plugin acme: ivr_call_started is not marked @hookimpl, so it is never called")


def sync_handler(session, params):
    return "ok"


async def one_argument_handler(session):
    return "ok"


@pytest.mark.parametrize("handler, why", [
    (sync_handler, "sync_handler is not async"),
    (one_argument_handler, "one_argument_handler(session) cannot be called so"),
])
def test_an_action_handler_with_the_wrong_signature_is_refused_at_registration(handler, why) -> None:
    setup = make_setup(action_plugin("lookup", handler), strict=False)
    assert "lookup" not in setup.actions
    assert setup.problems == [f"plugin acme_lookup: action 'lookup': the handler must be "
                              f"`async def handler(session, params) -> outcome`; {why}"]


BROKEN_PLUGIN = """\
from ivr import hookimpl

@hookimpl
def ivr_audio_in(batchh):
    pass
"""


def test_serve_and_check_stop_on_a_broken_plugin_in_one_line_schema_goes_on(tmp_path) -> None:
    (tmp_path / "broken_acme.py").write_text(BROKEN_PLUGIN)
    (tmp_path / "ivr.yaml").write_text(f"plugins: {{load: [broken_acme]}}\nflows: [{ROOT / 'flows' / 'voicemail.yaml'}]\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    expected = ("plugin broken_acme: ivr_audio_in() takes 'batchh', which the hook does not pass "
                "(it passes: batch); not loaded")

    def ivr(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ivr", *args, "--config", str(tmp_path / "ivr.yaml")],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    serve = ivr("serve", "--listen", "127.0.0.1:0")
    assert serve.returncode == 2 and serve.stderr.splitlines() == [f"ivr serve: {expected}", "ivr serve: not starting"]
    check = ivr("check", str(ROOT / "flows" / "voicemail.yaml"))
    assert check.returncode == 1 and check.stderr.splitlines() == [f"ivr check: {expected}"]
    assert "voicemail.yaml: ok" in check.stdout
    schema = ivr("schema")
    assert schema.returncode == 0 and schema.stderr.splitlines() == [f"ivr schema: {expected}"]
    assert json.loads(schema.stdout)["$defs"]["node"]


# -- an action that raises ------------------------------------------------------------------


async def crashing_action(session, params):
    raise KeyError("account")


def test_an_action_that_raises_is_traced_with_its_type_and_the_caller_hears_an_apology(tmp_path) -> None:
    path = flow_file(tmp_path, "a: {play: {say: hi}, next: b}\nb: {crash: {}, next: c}\nc: {hangup: }\n")
    result = simulate_call(path, action_plugin("crash", crashing_action))
    assert result.outcome == "error"
    assert [e.detail for e in result.events("error")] == ["KeyError: 'account'"]
    assert result.said == ["hi", ERROR_PROMPT]
    assert result.call.errors == ["t/b: KeyError: 'account'"]


def test_a_flow_with_its_own_on_error_gets_no_apology_but_the_cdr_keeps_the_error(tmp_path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("flow: t\nstart: a\non_error: sorry\nnodes:\n  a: {crash: {}, next: c}\n"
                    "  sorry: {play: {say: oops}, next: c}\n  c: {hangup: }\n")
    result = simulate_call(path, action_plugin("crash", crashing_action))
    assert result.said == ["oops"] and result.outcome == "hangup"
    cdr = tmp_path / "cdr.jsonl"
    writer = CdrWriter(cdr)
    writer("finished", result.call, {})
    writer.close()
    assert json.loads(cdr.read_text())["error"] == "t/a: KeyError: 'account'"


def test_the_call_context_starts_without_errors() -> None:
    assert CallContext("c", None).errors == []


# -- templates ------------------------------------------------------------------------------


def test_check_strict_refuses_a_template_name_outside_call_vars_config(tmp_path, capsys) -> None:
    path = flow_file(tmp_path, 'a: {play: {say: "{{ name }} {{ call.fromm }}"}, next: b}\nb: {hangup: }\n')
    assert ivr_main(["check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("'name' is undefined: a template reads call, vars and config (did you mean 'vars.name'?)")
    assert "call has no 'fromm' (did you mean 'from'?)" in lines[1]


def test_simulate_outcome_names_an_action(capsys) -> None:
    assert ivr_main(["simulate", str(ROOT / "flows" / "bot.yaml"), "--outcome", "bto=failed"]) == 2
    assert "no action named 'bto' (did you mean 'bot'?)" in capsys.readouterr().out
