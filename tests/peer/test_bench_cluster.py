"""The benchmark's ``simplesip-ivr x2`` system: two ``ivr serve`` behind Kamailio's dispatcher,
one tiny real step through it, and the report's per-system ratios."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.capacity import StepResult, StepSettings, run_steps
from bench.cluster import IvrClusterUnderTest
from bench.report import markdown


@pytest.mark.timeout(45)
def test_a_step_through_kamailio_spreads_calls_over_both_workers(tmp_path: Path) -> None:
    cluster = IvrClusterUnderTest(tmp_path, workers=2, max_calls=20)
    try:
        cluster.start()
        assert len(cluster.proxy_pids) > 1  # Kamailio's main process and its forked children
        settings = StepSettings(hold=5.0, ramp_rate=20.0, probes=2)
        [step] = run_steps(cluster, "bench", [4], settings, tmp_path / "steps")
        per_worker = cluster.calls_per_worker()
    finally:
        cluster.stop()
    # 4 SIPp calls + 2 probes; BYE and ACK only reach the workers along Kamailio's Record-Route
    assert (step.completed, step.failed) == (6, 0)
    assert sorted(per_worker) == [3, 3]  # round-robin
    assert step.loss_in_pct is not None and step.loss_in_pct < 5.0  # both workers' own stats
    assert step.loss_out_pct is not None and step.loss_out_pct < 5.0
    assert step.server_cpu_pct is not None and step.server_cpu_pct > 0
    assert step.proxy_cpu_pct is not None  # measured (may round to 0 at 4 calls)
    assert step.dropped_ticks is not None and step.dropped_ticks >= 0  # read from both metrics endpoints
    assert step.load_before is not None


def test_report_gives_each_of_our_systems_its_ratio_to_the_baseline() -> None:
    rows = [StepResult("simplesip-ivr", "bench", 200, healthy=True, passed=True),
            StepResult("simplesip-ivr x2", "bench", 400, healthy=True, passed=True, proxy_cpu_pct=12.5,
                       dropped_ticks=0),
            StepResult("pyvoip-1.6.8", "prompt+dtmf", 100, healthy=True, passed=True)]
    systems = [("simplesip-ivr", "bench"), ("simplesip-ivr x2", "bench"), ("pyvoip-1.6.8", "prompt+dtmf")]
    text = markdown(rows, [], systems, StepSettings())
    assert "- simplesip-ivr / bench: 200 (200) concurrent calls; ratio to pyvoip-1.6.8: 2.0x" in text
    assert "- simplesip-ivr x2 / bench: 400 (400) concurrent calls; ratio to pyvoip-1.6.8: 4.0x" in text
    assert "- pyvoip-1.6.8 / prompt+dtmf: 100 (100) concurrent calls\n" in text
    assert "| Kamailio CPU % |" in text and "| 12.5 |" in text
