"""`ivr simulate`: scripts, virtual clock, the CLI output and the example flows end to end."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from ivr.caller_script import parse_dtmf_script
from ivr.cli import build_parser
from ivr.flows import run_simulation, simulate
from ivr.flows.cli import cmd_simulate
from ivr.flows.simulate import parse_speech_script
from ivr.testing import make_setup

FLOWS = Path(__file__).parent.parent / "flows"


def test_dtmf_script_syntax() -> None:
    assert parse_dtmf_script("1 2#") == [(0.0, "1"), (0.0, "2"), (0.0, "#")]
    assert parse_dtmf_script("+2s 1 +500ms 2 @10 3 hangup") == [
        (2.0, "1"), (2.5, "2"), (10.0, "3"), (10.0, "hangup")]
    with pytest.raises(ValueError):
        parse_dtmf_script("1 x")


def test_speech_script_syntax() -> None:
    assert parse_speech_script("start@1.0,end@2.5") == [(1.0, "start"), (2.5, "end")]
    with pytest.raises(ValueError):
        parse_speech_script("talk@1")


def test_virtual_clock_runs_minutes_in_milliseconds() -> None:
    began = time.monotonic()
    trace = simulate(FLOWS / "attendant.yaml", at="2026-11-26T10:00", tz="Europe/Paris")
    assert trace[-1].event == "end" and trace[-1].time > 45  # three menu timeouts, then the operator
    assert time.monotonic() - began < 2


def test_attendant_sales_in_office_hours() -> None:
    result = run_simulation(FLOWS / "attendant.yaml", dtmf="+3s 1", at="2026-11-26T10:00", tz="Europe/Paris",
                            config={"sales_uri": "sip:sales@127.0.0.1:5080"})
    assert ("transfer", "sip:sales@127.0.0.1:5080") in result.controller_actions
    assert result.outcome == "transferred"


def test_attendant_dial_by_extension_uses_the_pbx_host() -> None:
    result = run_simulation(FLOWS / "attendant.yaml", dtmf="+3s 9 +1s 204", at="2026-11-27T09:30",
                            tz="Europe/Paris", config={"pbx_host": "127.0.0.1:5090"})
    assert ("transfer", "sip:204@127.0.0.1:5090") in result.controller_actions


def test_attendant_after_hours_goes_to_voicemail() -> None:
    result = run_simulation(FLOWS / "attendant.yaml", speech="start@10,end@15", at="2026-11-28T10:00",
                            tz="Europe/Paris")  # a Saturday
    nodes = [e.node for e in result.trace if e.event == "enter"]
    assert nodes[:5] == ["check_hours", "office_schedule", "closed", "voicemail", "greeting"]
    assert "record" in nodes and nodes[-1] == "end"
    assert result.vars["message"].endswith("voicemail/general/sim-1.wav")
    assert result.vars["message_duration"] > 4


def test_attendant_office_hours_variable_overrides_the_schedule() -> None:
    """What `make serve` relies on: with office_hours: open a first call hears the welcome and
    the menu whatever the time; closed goes to the closed notice."""
    for value, after in (("open", "welcome"), ("closed", "closed")):
        result = run_simulation(FLOWS / "attendant.yaml", at="2026-11-28T03:00", tz="Europe/Paris",
                                config={"office_hours": value}, dtmf="@1 hangup")
        nodes = [e.node for e in result.trace if e.event == "enter"]
        assert nodes[:2] == ["check_hours", after], nodes


def test_attendant_transfer_failure_falls_back_to_voicemail() -> None:
    result = run_simulation(FLOWS / "attendant.yaml", dtmf="+1s 2 @20 #", at="2026-11-26T10:00",
                            tz="Europe/Paris", transfer_result="busy")
    nodes = [e.node for e in result.trace if e.event == "enter"]
    assert nodes[nodes.index("transfer") + 1:][:3] == ["unavailable", "voicemail", "greeting"]


def test_cli_prints_the_trace_line_by_line() -> None:
    out = io.StringIO()
    args = build_parser().parse_args(["simulate", str(FLOWS / "attendant.yaml"), "--dtmf", "+2s 0",
                                      "--at", "2026-12-25T11:00", "--tz", "Europe/Paris"])
    assert cmd_simulate(args, make_setup(), out) == 0
    lines = out.getvalue().splitlines()
    assert lines[3].split() == ["0.000", "office_schedule", "hours", "office", "at", "Fri", "2026-12-25",
                                "11:00", "CET:", "holiday"]
    assert lines[-1].split()[-2:] == ["end", "hangup"]


def test_cli_reports_a_bad_script() -> None:
    out = io.StringIO()
    args = build_parser().parse_args(["simulate", str(FLOWS / "voicemail.yaml"), "--dtmf", "oops"])
    assert cmd_simulate(args, make_setup(), out) == 2
    assert "bad DTMF script token 'oops'" in out.getvalue()
