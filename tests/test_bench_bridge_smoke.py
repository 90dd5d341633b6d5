"""The bridge benchmark's harness (bench/bridge.py) on a tiny real run: ``ivr serve``, the echo
bot and three bridged calls for a few seconds; every figure of the report must have been
measured (the tags survived G.711 both ways, the clear probe ran)."""

from __future__ import annotations

import json

import pytest

from bench.bridge import main
from bench.bridge_tags import KIND_CALLER, make_frame, read_tag
from simplesip.wire.g711 import pcm_to_ulaw, ulaw_to_pcm

pytestmark = pytest.mark.timeout(90)


def test_tags_survive_g711_both_ways():
    frame = make_frame(KIND_CALLER, 1234, 987654)
    assert len(frame) == 160 and pcm_to_ulaw(ulaw_to_pcm(frame)) == frame
    tag = read_tag(frame)
    assert (tag >> 48, (tag >> 32) & 0xFFFF, tag & 0xFFFFFFFF) == (KIND_CALLER, 1234, 987654)
    assert read_tag(b"\xff" * 160) is None


def test_a_tiny_bridged_run_measures_every_figure(tmp_path):
    out = tmp_path / "bridge.json"
    assert main(["--steps", "10", "--hold", "4", "--plain", "0", "--out", str(out)]) == 0
    (step,) = json.loads(out.read_text())["steps"]
    assert step["answered"] == step["bridged"] == 10
    for figure in ("rtp_to_ws_ms", "ws_to_rtp_ms", "echo_ws_to_rtp_ms", "clear_to_last_old_packet_ms"):
        assert step[figure].startswith("p50 "), (figure, step)
    assert step["loss_in"] is not None and step["loss_out"] is not None
    assert step["cpu_percent"] > 0 and step["rss_end_mb"] > 0
