"""SRTP in the ivr server: the ``media`` configuration section, the engine's endpoint under a
mandatory policy called by ``ivr call --srtp`` (digits and prompt over SRTP, a plain caller
refused 488), and the Prometheus counters of SRTP calls and dropped packets."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ivr.call import CallContext
from ivr.cli import main, place_call
from ivr.config import ConfigError, parse_config
from ivr.engine import Engine
from ivr.metrics import CallMetrics
from ivr.plugins import make_plugin_manager
from ivr.sip_adapter import make_endpoint
from tests.helpers.engine_fakes import ScriptedFlows
from tests.test_engine_endpoint import TONE_HZ, ToneSource, tone_ratio


@pytest.mark.parametrize("text, policy", [
    ("", "off"), ("media: {srtp: off}\n", "off"), ('media: {srtp: "off"}\n', "off"),
    ("media: {srtp: optional}\n", "optional"), ("media: {srtp: mandatory}\n", "mandatory"),
])
def test_media_srtp_policy(text, policy):
    config = parse_config(text)
    assert config.srtp == policy
    endpoint = make_endpoint(config)
    assert endpoint.config.srtp == policy
    assert endpoint.config.srtp_suites == ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")


def test_media_srtp_suites():
    config = parse_config("media:\n  srtp: optional\n  srtp_suites: [AES_CM_128_HMAC_SHA1_32]\n")
    assert make_endpoint(config).config.srtp_suites == ("AES_CM_128_HMAC_SHA1_32",)


@pytest.mark.parametrize("text, message", [
    ("media:\n  srtp: on\n", "ivr.yaml:2: srtp: True is not one of off, optional, mandatory"),
    ("media:\n  srtp: mandatroy\n", "(did you mean 'mandatory'?)"),
    ("media:\n  srtp_suites: [AES_256_CM_HMAC_SHA1_80]\n", "ivr.yaml:2: srtp_suites: 'AES_256_CM_HMAC_SHA1_80'"),
    ("media:\n  srtp_suites: []\n", "name at least one suite"),
    ("media:\n  srtpp: optional\n", "unknown key 'srtpp' in media"),
])
def test_bad_media_settings_point_at_the_line(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "ivr.yaml")
    assert message in str(info.value)


async def test_mandatory_server_takes_srtp_callers_and_refuses_plain_ones():
    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})
    pm.register(ToneSource(), name="ToneSource")
    flows = ScriptedFlows()
    config = parse_config("listen: {port: 0, transports: [udp]}\nmedia: {srtp: mandatory}\n")
    engine = Engine(config, pm, flows=flows)
    await engine.start()
    try:
        uri = f"sip:attendant@127.0.0.1:{engine.endpoint.local_address[1]}"
        report = await asyncio.wait_for(place_call(uri, dtmf="+500ms 4 2#", duration=5, srtp="mandatory"), 10)
        refused = await asyncio.wait_for(place_call(uri, duration=1, srtp="off"), 10)
        best_effort = await asyncio.wait_for(place_call(uri, dtmf="+300ms #", duration=3, srtp="optional"), 10)
    finally:
        await engine.stop()
    assert report.answered and report.srtp_suite == "AES_CM_128_HMAC_SHA1_80"
    assert report.digits_sent == "42#" and report.end_reason == "remote_hangup"
    assert flows.started[0][1].digits == ["4", "2", "#"]  # RFC 4733 over SRTP reached the flow
    heard = np.concatenate(report.heard)
    assert len(heard) > 8000 and tone_ratio(heard, TONE_HZ) > 0.8  # the prompt, decrypted
    assert not refused.answered and refused.status == 488
    assert best_effort.answered and best_effort.srtp_suite == "AES_CM_128_HMAC_SHA1_80"


def test_metrics_count_srtp_calls_and_dropped_packets():
    registry = CollectorRegistry()
    metrics = CallMetrics(registry)
    call = CallContext("c1", None)
    metrics("incoming", call, {})
    metrics("ended", call, {"reason": "remote_hangup", "stats": {
        "srtp": 1, "srtp_auth_failures": 25, "srtp_replay_failures": 2, "srtp_malformed": 1}})
    plain = CallContext("c2", None)
    metrics("incoming", plain, {})
    metrics("ended", plain, {"reason": "remote_hangup", "stats": {"srtp": 0, "srtp_auth_failures": 0}})
    text = generate_latest(registry).decode()
    assert "ivr_srtp_calls_total 1.0" in text
    assert 'ivr_srtp_dropped_packets_total{reason="auth"} 25.0' in text
    assert 'ivr_srtp_dropped_packets_total{reason="replay"} 2.0' in text
    assert 'ivr_srtp_dropped_packets_total{reason="malformed"} 1.0' in text


async def test_ivr_call_srtp_option(capsys):
    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})
    config = parse_config("listen: {port: 0, transports: [udp]}\nmedia: {srtp: mandatory}\n")
    engine = Engine(config, pm, flows=ScriptedFlows())
    await engine.start()
    try:
        uri = f"sip:attendant@127.0.0.1:{engine.endpoint.local_address[1]}"
        assert await asyncio.to_thread(main, ["call", uri, "--srtp", "mandatory", "--duration", "1"]) == 0
        assert "; SRTP AES_CM_128_HMAC_SHA1_80" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["call", uri, "--duration", "1"]) == 1  # --srtp off
        assert "not answered: 488" in capsys.readouterr().err
    finally:
        await engine.stop()
