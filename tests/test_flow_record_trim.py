"""``record`` with ``trim`` in a simulated call: the message's length is the speech plus the
margins the recorder keeps, not the silence that ended it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.flows import run_simulation

RECORD_FLOW = """\
flow: vm
start: rec
nodes:
  rec:
    record: {{to: "m.wav", beep: false, silence_timeout: 3s, trim: {trim}, save_as: message}}
    on: {{complete: saved, no_audio: empty}}
  saved: {{set: {{result: saved}}}}
  empty: {{set: {{result: empty}}}}
"""


@pytest.mark.parametrize("trim, expected", [("true", 2.5 + 0.4), ("false", 1.0 + 2.5 + 3.0)])
def test_message_duration_with_and_without_trim(tmp_path: Path, trim: str, expected: float) -> None:
    flow = tmp_path / "vm.yaml"
    flow.write_text(RECORD_FLOW.format(trim=trim))
    result = run_simulation(flow, speech="start@1.0,end@3.5")
    assert result.vars["result"] == "saved"
    assert result.vars["message_duration"] == pytest.approx(expected, abs=0.05)


def test_silence_throughout_is_no_audio_with_trim(tmp_path: Path) -> None:
    flow = tmp_path / "vm.yaml"
    flow.write_text(RECORD_FLOW.format(trim="true"))
    result = run_simulation(flow)
    assert result.vars["result"] == "empty" and result.vars["message_duration"] == 0
