"""5 % packet loss each way (SIP and RTP) between 50 concurrent SIPp callers and ``ivr serve``:
every call completes through retransmissions and every DTMF digit still arrives.

Loss comes from tests/netem.py's seeded user-space relay: this kernel has no sch_netem, so
``tc ... netem`` cannot be used even inside a private network namespace.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.netem import LossySipRelay
from tests.helpers.peers import SippRunner
from tests.helpers.robust_server import WAIT_FLOW, IvrServeProcess

CALLS = 50


def test_fifty_calls_through_five_percent_loss(tmp_path: Path) -> None:
    extra = "limits: {max_calls: 200, rate: {per_source: 1000, burst: 1000}}\n"
    with IvrServeProcess(tmp_path / "ivr", WAIT_FLOW, extra) as server, \
            LossySipRelay(server.address, loss=0.05, seed=4733) as relay:
        with SippRunner(tmp_path / "sipp", "uac_pcap", remote=relay.address, service="ivr", calls=CALLS,
                        extra=["-r", str(CALLS), "-l", str(CALLS), "-timeout", "45s", "-timeout_error",
                               "-trace_stat", "-max_recv_loops", "10000"]) as sipp:
            status = sipp.wait(50)
        assert status == 0, sipp.log()[-4000:]
        assert relay.stats.dropped_up > 0 and relay.stats.dropped_down > 0, relay.stats
        assert relay.stats.by_kind.get("sip", 0) > 0, "some SIP was lost and had to be retransmitted"
        assert relay.stats.media_relays >= 2
    records = [json.loads(line) for line in (tmp_path / "ivr" / "cdr.jsonl").read_text().splitlines()]
    answered = [r for r in records if r["answer"]]
    assert len(answered) == CALLS, [r["outcome"] for r in records]
    # uac_pcap plays RFC 4733 '1' (start, updates, end x3): 5 % loss never loses the key press.
    missed = [r["call_id"] for r in answered if r["digits"] != "1"]
    relatched = [line for line in server.log().splitlines() if "re-latching" in line]
    assert not missed, (missed, relatched)
