"""The engine on the real simplesip Endpoint, called by our own scripted caller (``ivr call``'s
``place_call``) over loopback: digits reach the flow, the prompt reaches the caller, a plugin
that raises for one call leaves a concurrent call alone."""

from __future__ import annotations

import asyncio

import numpy as np

from ivr import hookimpl
from ivr.cli import place_call
from ivr.config import parse_config
from ivr.engine import Engine
from ivr.plugins import make_plugin_manager
from tests.helpers.engine_fakes import ScriptedFlows

TONE_HZ = 600


class ToneSource:
    """Plays a steady tone to every call (a stand-in prompt with a known spectrum)."""

    @hookimpl
    def ivr_audio_out(self, batch):
        t = (np.arange(160) + batch.tick * 160) / 8000
        batch.pcm[:] = (8000 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)


class FailsForCaller:
    """Raises on every inbound frame of calls from user ``doomed``."""

    @hookimpl
    def ivr_audio_in(self, batch):
        if any(call.from_user == "doomed" for call in batch.calls):
            raise RuntimeError("plugin bug")


def tone_ratio(samples: np.ndarray, hz: float) -> float:
    """Share of the signal's energy within 50 Hz of ``hz``."""
    spectrum = np.abs(np.fft.rfft(samples.astype(float))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    band = (freqs > hz - 50) & (freqs < hz + 50)
    return float(spectrum[band].sum() / max(spectrum.sum(), 1e-9))


async def start_engine(*plugins) -> tuple[Engine, ScriptedFlows, int]:
    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})
    for plugin in plugins:
        pm.register(plugin, name=type(plugin).__name__)
    flows = ScriptedFlows()
    engine = Engine(parse_config("listen: {port: 0, transports: [udp]}\n"), pm, flows=flows)
    await engine.start()
    return engine, flows, engine.endpoint.local_address[1]


async def test_scripted_call_digits_reach_flow_and_prompt_reaches_caller():
    engine, flows, port = await start_engine(ToneSource())
    try:
        report = await asyncio.wait_for(
            place_call(f"sip:attendant@127.0.0.1:{port}", dtmf="+500ms 4 2#", duration=5), 10)
    finally:
        await engine.stop()
    assert report.answered and report.digits_sent == "42#"
    assert report.end_reason == "remote_hangup"  # the flow hung up after '#'
    context = flows.started[0][1]
    assert context.vars["digits"] == "42" and context.digits == ["4", "2", "#"]
    heard = np.concatenate(report.heard)
    assert len(heard) > 8000  # over a second of audio
    assert tone_ratio(heard, TONE_HZ) > 0.8


async def test_plugin_failing_one_real_call_leaves_the_other_connected():
    engine, flows, port = await start_engine(ToneSource(), FailsForCaller())
    uri = f"sip:attendant@127.0.0.1:{port}"
    try:
        from simplesip.aio.endpoint import Endpoint
        from simplesip.aio.endpoint_config import EndpointConfig

        doomed_endpoint = Endpoint(EndpointConfig(sip_port=0, transports=("udp",), username="doomed"))
        await doomed_endpoint.start()
        doomed = await doomed_endpoint.call(uri)
        doomed.queue_pcm(bytes(320 * 50))  # send audio so the failing plugin sees frames
        healthy = asyncio.create_task(place_call(uri, dtmf="+2s 7#", duration=5))
        await asyncio.wait_for(doomed.ended.wait(), 5)  # BYE from the engine
        report = await asyncio.wait_for(healthy, 10)
        await doomed_endpoint.stop()
    finally:
        await engine.stop()
    by_user = {call.from_user: call for _, call in flows.started}
    assert by_user["doomed"].end_reason == "error" and "FailsForCaller" in by_user["doomed"].failed
    assert report.answered and report.end_reason == "remote_hangup"
    healthy_context = next(call for user, call in by_user.items() if user != "doomed")
    assert healthy_context.vars["digits"] == "7" and healthy_context.failed is None
