"""Writing the results: CSV, a markdown table with the ratios, and a PNG of loss and CPU."""

from __future__ import annotations

import csv
import logging
import os
import platform
from pathlib import Path
from typing import Any, Sequence

from bench.capacity import SetupRateResult, StepResult

log = logging.getLogger(__name__)

COLUMNS = [
    ("system", "system"), ("flow", "flow"), ("calls", "calls"), ("completed", "ok"),
    ("failed", "failed"), ("loss_in_pct", "loss in %"), ("kernel_drops_in", "kernel drops in"),
    ("loss_out_pct", "loss out %"), ("late_out_pct", "frames late out %"), ("send_p50_ms", "send err p50 ms"),
    ("send_p99_ms", "send err p99 ms"), ("reaction_p50_ms", "DTMF reaction p50 ms"),
    ("reaction_p99_ms", "DTMF reaction p99 ms"), ("dropped_ticks", "ticks dropped"),
    ("late_firings_pct", "clock late >10 ms %"), ("keys_sent", "keys sent"), ("keys_heard_pct", "keys heard %"),
    ("server_cpu_pct", "server CPU %"), ("proxy_cpu_pct", "Kamailio CPU %"),
    ("proxy_ms_per_call", "Kamailio ms/call"),
    ("sipp_cpu_pct", "SIPp CPU %"), ("machine_cpu_pct", "box CPU %"), ("load_before", "load before"), ("rss_mb", "RSS MB"), ("kb_per_call", "KiB/call"),
    ("healthy", "healthy"), ("passed", "pass"), ("notes", "notes"),
]


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": str(os.cpu_count()), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version()}


def capacity(results: Sequence[StepResult], system: str, flow: str, timing: bool = True) -> int:
    """The largest step that passed (``timing=False``: that was healthy); 0 when none did."""
    return max((r.calls for r in results if r.system == system and r.flow == flow
                and (r.passed if timing else r.healthy)), default=0)


def write_csv(path: Path, results: Sequence[StepResult]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[key for key, _ in COLUMNS])
        writer.writeheader()
        for result in results:
            row = result.as_row()
            writer.writerow({key: row[key] for key, _ in COLUMNS})


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(results: Sequence[StepResult], rates: Sequence[SetupRateResult],
             systems: Sequence[tuple[str, str]], settings: Any, baseline_notes: Sequence[str] = ()) -> str:
    """The results as markdown: machine, criteria, one table, capacities and ratios."""
    info = machine()
    lines = [
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), Linux {info['kernel']}, Python "
        f"{info['python']}; SIPp on the same machine.",
        "",
        f"Pass: no failed call, RTP loss < {settings.max_loss * 100:g} % both ways, p99 send-interval "
        f"error < {settings.max_p99_ms:g} ms. Calls hold {settings.hold:g} s; "
        "'frames late out' = 20 ms frames not sent in real time (skipped media-clock ticks), not "
        "part of the criteria; "
        f"{settings.probes} probe calls per step measure our outbound stream.",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for result in results:
        row = result.as_row()
        lines.append("| " + " | ".join(_cell(row[key]) for key, _ in COLUMNS) + " |")
    lines += ["", "Capacity (largest step that passed; in brackets, largest healthy step: no failed "
              "call and loss under the limit, send timing aside):", ""]
    # ratios: each of our systems (one process, or several behind Kamailio) against each baseline
    baselines = [(s, f) for s, f in systems if not s.startswith("simplesip")]
    for system, flow in systems:
        value, healthy = capacity(results, system, flow), capacity(results, system, flow, timing=False)
        ratio = "".join(
            f"; ratio to {other}: {_ratio(value, capacity(results, other, other_flow))} at the full "
            f"criteria, {_ratio(healthy, capacity(results, other, other_flow, timing=False))} healthy"
            for other, other_flow in baselines if (system, flow) not in baselines)
        lines.append(f"- {system} / {flow}: {value} ({healthy}) concurrent calls{ratio}")
    lines += [f"- {note}" for note in baseline_notes]
    if rates:
        lines += ["", "Call set-up rate (short calls: INVITE, 0.5 s, BYE):", "",
                  "| system | offered cps | ok | failed | achieved cps | answer ms | server CPU % | Kamailio CPU % | pass |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for rate in rates:
            lines.append(f"| {rate.system} | {rate.offered_cps:g} | {rate.completed} | {rate.failed} | "
                         f"{rate.achieved_cps:.1f} | {rate.answer_ms:.0f} | {_cell(rate.server_cpu_pct)} | "
                         f"{_cell(rate.proxy_cpu_pct)} | "
                         f"{_cell(rate.passed)} |")
        best: dict[str, float] = {}
        for rate in rates:
            if rate.passed:
                best[rate.system] = max(best.get(rate.system, 0.0), rate.offered_cps)
        lines += [""] + [f"- sustainable set-up rate of {name}: {value:g} calls/s" for name, value in best.items()]
    return "\n".join(lines) + "\n"


def _ratio(ours: int, theirs: int) -> str:
    if theirs:
        return f"{ours / theirs:.1f}x"
    return "unbounded (baseline passed no step)" if ours else "n/a (neither passed)"


def plot(path: Path, results: Sequence[StepResult]) -> bool:
    """Loss (both ways) and server CPU against concurrent calls; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot")
        return False
    figure, (loss_axes, cpu_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[tuple[str, str], list[StepResult]] = {}
    for result in results:
        series.setdefault((result.system, result.flow), []).append(result)
    for (system, flow), rows in series.items():
        calls = [r.calls for r in rows]
        label = f"{system} {flow}"
        loss_axes.plot(calls, [r.loss_in_pct or 0 for r in rows], "o-", label=f"{label}: in")
        loss_axes.plot(calls, [r.loss_out_pct or 0 for r in rows], "s--", label=f"{label}: out")
        cpu_axes.plot(calls, [r.server_cpu_pct or 0 for r in rows], "o-", label=label)
    loss_axes.axhline(0.1, color="grey", linewidth=0.8, linestyle=":")
    loss_axes.set(xlabel="concurrent calls", ylabel="RTP loss (%)", title="RTP loss")
    cpu_axes.set(xlabel="concurrent calls", ylabel="CPU (% of one core)", title="Server CPU")
    for axes in (loss_axes, cpu_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
