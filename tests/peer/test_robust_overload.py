"""Overload: three times the configured maximum of concurrent calls. The extra calls get 503
with Retry-After, memory stays bounded, the calls that are served keep their audio."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np

from tests.helpers.peers import SippRunner
from tests.helpers.robust_server import RECORD_FLOW, IvrServeProcess

MAX_CALLS = 5


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def test_three_times_max_calls(tmp_path: Path) -> None:
    extra = f"limits: {{max_calls: {MAX_CALLS}, retry_after: 7, rate: {{per_source: 1000, burst: 1000}}}}\n"
    with IvrServeProcess(tmp_path / "ivr", RECORD_FLOW, extra) as server:
        rss_before = _rss_kib(server.proc.pid)
        with SippRunner(tmp_path / "sipp", "uac_pcap", remote=server.address, service="ivr",
                        calls=3 * MAX_CALLS, extra=["-r", "100", "-l", str(3 * MAX_CALLS),
                                                    "-timeout", "30s", "-timeout_error"]) as sipp:
            sipp.wait(35)
            messages = sipp.messages()
        rss_after = _rss_kib(server.proc.pid)
        assert server.alive(), server.log()[-3000:]
        server.wait_ready(3)
    # Each 503 as SIPp logged it: from its status line to the blank line ending its headers.
    refusals = [chunk.split("\n\n", 1)[0].split("\r\n\r\n", 1)[0]
                for chunk in messages.split("SIP/2.0 503")[1:]]
    finals_503 = {m for m in re.findall(r"SIP/2\.0 503[\s\S]*?Call-ID: (\S+)", messages)}
    assert len(finals_503) == 2 * MAX_CALLS, messages[-3000:]
    assert refusals and all("Retry-After: 7" in block for block in refusals), refusals[:2]
    # Bounded memory: 15 call attempts must not grow the process by more than a few MB.
    assert rss_after - rss_before < 40_000, (rss_before, rss_after)
    recordings = sorted((tmp_path / "ivr" / "rec").glob("*.wav"))
    assert len(recordings) == MAX_CALLS
    for path in recordings:
        with wave.open(str(path)) as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        assert len(pcm) >= 8000 * 6, f"{path.name}: {len(pcm) / 8000:.1f} s recorded"
        frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
        silent = np.mean(np.abs(frames).max(axis=1) < 8)
        # The pcap is speech from its first to its last packet: concealed or lost frames show
        # up as silent ones. Allow the leading jitter-buffer fill and the trailing DTMF/pause.
        assert silent < 0.2, f"{path.name}: {silent:.0%} silent frames"
