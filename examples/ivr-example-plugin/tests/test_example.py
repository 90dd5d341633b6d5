"""The example plugin's own tests: only `ivr.testing` (the kit shipped with simplesip-ivr)."""

from __future__ import annotations

from pathlib import Path

import ivr_example_plugin as example
import numpy as np
import pytest

from ivr.loading import SetupError
from ivr.testing import AudioRig, simulate_call

HERE = Path(__file__).resolve().parent.parent
FLOW = HERE / "flows" / "account.yaml"
CONFIG = {"plugins": {"example": {"accounts": str(HERE / "flows" / "accounts.csv"), "greeting": "Hi"}}}


def test_a_known_account_hears_its_balance() -> None:
    result = simulate_call(FLOW, example, config=CONFIG, dtmf="+1s 1001#", caller="sip:alice@example.com")
    assert result.nodes == ["ask", "lookup", "balance", "goodbye", "bye"]
    assert result.vars["account"] == {"number": "1001", "name": "Alice", "balance": "12.50"}
    assert result.said[0].startswith("Hi, alice. Please type your account number")
    assert "Alice, your balance is 12.50 dollars." in result.said
    assert result.outcome == "hangup"


def test_an_unknown_account_is_told_so() -> None:
    result = simulate_call(FLOW, example, config=CONFIG, dtmf="+1s 999#")
    assert result.nodes[:3] == ["ask", "lookup", "unknown"]
    assert result.vars["account"] is None


def test_the_lookup_takes_no_virtual_time_and_the_trace_is_the_same_every_run() -> None:
    runs = [simulate_call(FLOW, example, config=CONFIG, dtmf="+1s 2002#") for _ in range(3)]
    assert [str(run) for run in runs] == [str(runs[0])] * 3
    lookup = [entry for entry in runs[0].trace if entry.node == "lookup"]
    assert lookup[0].time == lookup[-1].time  # entered and left at the same virtual instant


def test_a_missing_accounts_file_is_refused_at_load_time(tmp_path: Path) -> None:
    config = {"plugins": {"example": {"accounts": str(tmp_path / "nope.csv")}}}
    with pytest.raises(SetupError, match=r"plugin example: refuses its configuration: accounts: .* is not a file"):
        simulate_call(FLOW, example, config=config)


def test_the_caller_level_follows_the_callers_audio() -> None:
    rig = AudioRig(example, config=CONFIG)
    quiet, loud = rig.call("quiet"), rig.call("loud")
    t = np.arange(160) / 8000
    tone = (0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # -9 dBFS mean power
    for _ in range(10):
        rig.step([quiet, loud], np.stack([np.zeros(160, np.int16), tone]))
    assert quiet.vars["caller_level_dbfs"] == example.SILENCE_DBFS
    assert loud.vars["caller_level_dbfs"] == pytest.approx(-9.0, abs=0.1)
    rig.end(loud)
    assert "example" not in loud.data


def test_the_fixtures_are_the_same_rigs(ivr_simulate, ivr_audio_rig) -> None:
    assert ivr_simulate(FLOW, example, config=CONFIG, dtmf="+1s 1001#").vars["account"]["name"] == "Alice"
    assert isinstance(ivr_audio_rig(example, config=CONFIG), AudioRig)
