"""Against baresip, a real softphone: it calls us and we call it; audio checked by FFT both ways
(its microphone is a tone WAV, its recording of what it heard is a WAV), DTMF seen in its log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from simplesip import Call, CallState, Endpoint, EndpointConfig, SimpleSIPClient
from tests.helpers.peers import BaresipRunner, dominant_frequency, read_wav, tone
from tests.helpers.tone_checks import after_onset
from tests.helpers.waiting import wait_for

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]

BARESIP_TONE_HZ = 1000.0
OUR_TONE_HZ = 1500.0


def _microphone() -> np.ndarray:
    """Half a second of silence, then the tone (aufile hangs up at the end of the file)."""
    return np.concatenate([np.zeros(4000, np.int16), tone(BARESIP_TONE_HZ, 15)])



async def test_baresip_calls_us_tones_both_ways_and_its_dtmf(tmp_path: Path):
    endpoint = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000)))
    answered: list[Call] = []
    heard: list[bytes] = []
    digits: list[tuple[str, str, int]] = []

    async def on_call(call: Call) -> None:
        answered.append(call)
        call.on_audio = heard.append
        call.on_dtmf = lambda digit, source, ms: digits.append((digit, source, ms))
        call.queue_pcm(tone(OUR_TONE_HZ, 3).tobytes())
        await call.answer()

    endpoint.on_incoming_call = on_call
    async with endpoint:
        host, port = endpoint.local_address
        baresip = BaresipRunner(tmp_path, microphone=_microphone(),
                                commands=[f"/dial sip:ivr@{host}:{port}"])
        with baresip:
            await wait_for(lambda: answered and answered[0].state is CallState.STREAMING, 15, "the call streaming")
            await asyncio.sleep(1.5)
            await asyncio.to_thread(baresip.command, "sndcode", "8")
            await wait_for(lambda: digits, 10, "baresip's key press")
            assert [(d, src) for d, src, _ in digits] == [("8", "rfc4733")]
            await asyncio.sleep(1.0)
            await answered[0].hangup()
            assert answered[0].end_reason == "local_bye"
            await asyncio.sleep(0.5)  # let baresip close its recording
            log = baresip.log()
        assert "Call established" in log, log
        assert "terminated" in log, log  # baresip saw our BYE end the call

        pcm = np.frombuffer(b"".join(heard), dtype="<i2")
        tone_in = after_onset(pcm, 8000)
        assert len(tone_in) >= 8000  # more than a second of the tone reached us
        assert abs(dominant_frequency(tone_in[:8000]) - BARESIP_TONE_HZ) < 10

        (recording,) = baresip.recordings("dec")
        samples, rate = read_wav(recording)
        tone_out = after_onset(samples, rate)
        assert len(tone_out) >= rate  # baresip heard more than a second of our tone
        assert abs(dominant_frequency(tone_out[:rate], rate) - OUR_TONE_HZ) < 10


def test_client_calls_baresip_dtmf_and_remote_hangup(tmp_path: Path):
    baresip = BaresipRunner(tmp_path, microphone=_microphone())
    client = SimpleSIPClient("alice", "secret", "127.0.0.1", baresip.sip_port,
                             local_host="127.0.0.1", rtp_port_range=(40000, 49000))
    events = None
    try:
        baresip.wait_ready()
        events = baresip.listen_events()
        client.connect(register=False)
        assert client.make_call(f"sip:caller@127.0.0.1:{baresip.sip_port}")
        deadline = time.monotonic() + 5
        while client.call_state is not CallState.STREAMING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.call_state is CallState.STREAMING
        client.send_dtmf("73")
        deadline = time.monotonic() + 3
        while len(events.of_type("CALL_DTMF_START")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [e.get("param") for e in events.of_type("CALL_DTMF_START")] == ["7", "3"]
        time.sleep(0.3)
        assert len(events.of_type("CALL_DTMF_END")) == 2  # each key also released (end packets)
        events.command("hangup")
        deadline = time.monotonic() + 5
        while client.call_state is not CallState.IDLE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.call_state is CallState.IDLE
        # baresip saw the call established and closed (its log is buffered: use its events)
        assert len(events.of_type("CALL_ESTABLISHED")) == 1, events.events
        deadline = time.monotonic() + 3
        while not events.of_type("CALL_CLOSED") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(events.of_type("CALL_CLOSED")) == 1, [e.get("type") for e in events.events]
    finally:
        if events is not None:
            events.close()
        client.disconnect()
        baresip.stop()
