"""SIP over TLS against baresip, a real softphone: it calls us over TLS and we call it over TLS,
certificates from a test CA (tests/helpers/certs.py) verified both ways; audio checked by FFT,
DTMF, BYE. And baresip refusing our certificate when it does not trust our CA."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from simplesip import CallError, CallState, Endpoint, EndpointConfig
from tests.helpers.certs import CertSet, make_test_pki
from tests.helpers.peers import BaresipRunner, tone
from tests.helpers.tone_checks import ToneCallee, check_tones
from tests.helpers.waiting import wait_for

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

BARESIP_TONE_HZ = 1000.0
OUR_TONE_HZ = 1500.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertSet:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _endpoint(pki: CertSet, cert: str = "server") -> Endpoint:
    return Endpoint(EndpointConfig(
        sip_port=0, tls_port=0, transports=("udp", "tls"), username="ivr",
        tls_cert_file=pki.cert(cert), tls_key_file=pki.key(cert), tls_ca_file=pki.ca,
        rtp_port_range=(40000, 49000)))


def _baresip(tmp_path: Path, pki: CertSet, commands=(), ca: str | None = None) -> BaresipRunner:
    pem = tmp_path / "baresip.pem"  # baresip wants its certificate and key in one file
    pem.write_text(Path(pki.cert("server")).read_text() + Path(pki.key("server")).read_text())
    microphone = np.concatenate([np.zeros(4000, np.int16), tone(BARESIP_TONE_HZ, 15)])
    return BaresipRunner(tmp_path / "baresip", microphone=microphone, commands=commands,
                         extra_config=[f"sip_certificate\t{pem}", f"sip_cafile\t{ca or pki.ca}"])





async def test_baresip_calls_us_over_tls(tmp_path: Path, pki: CertSet):
    endpoint = _endpoint(pki)
    callee = ToneCallee(OUR_TONE_HZ)
    answered, heard, digits = callee.answered, callee.heard, callee.digits
    endpoint.on_incoming_call = callee
    async with endpoint:
        baresip = _baresip(tmp_path, pki, [f"/dial sip:ivr@127.0.0.1:{endpoint.tls_port};transport=tls"])
        with baresip:
            await wait_for(lambda: answered and answered[0].state is CallState.STREAMING, timeout=10)
            assert answered[0].headers.get("Via").startswith("SIP/2.0/TLS ")
            await asyncio.sleep(1.5)
            await asyncio.to_thread(baresip.command, "sndcode", "7")
            await wait_for(lambda: digits, timeout=3)
            assert digits == ["7"]
            await asyncio.sleep(0.5)
            await answered[0].hangup()  # our BYE, over TLS
            assert answered[0].end_reason == "local_bye"
            await asyncio.sleep(0.5)
            log = baresip.log()
        assert "Call established" in log, log
        assert "terminated" in log, log
        check_tones(heard, baresip, BARESIP_TONE_HZ, OUR_TONE_HZ)
        assert endpoint.tls_handshake_failures == {"inbound": 0, "outbound": 0}


async def test_we_call_baresip_over_tls_and_it_hangs_up(tmp_path: Path, pki: CertSet):
    endpoint = _endpoint(pki)
    heard: list[bytes] = []
    async with endpoint:
        baresip = _baresip(tmp_path, pki)
        with baresip:
            await asyncio.to_thread(baresip.wait_ready)
            host, port = baresip.tls_address
            call = await endpoint.call(f"sip:caller@{host}:{port};transport=tls", timeout=10)
            call.on_audio = heard.append
            call.queue_pcm(tone(OUR_TONE_HZ, 3).tobytes())
            await wait_for(lambda: call.state is CallState.STREAMING, timeout=5)
            await asyncio.sleep(3.0)
            await asyncio.to_thread(baresip.command, "hangup")  # baresip's BYE, over TLS
            await asyncio.wait_for(call.ended.wait(), 5)
            assert call.end_reason == "remote_bye"
            await asyncio.sleep(0.5)
        check_tones(heard, baresip, BARESIP_TONE_HZ, OUR_TONE_HZ)


async def test_we_refuse_baresip_with_an_untrusted_certificate(tmp_path: Path, pki: CertSet):
    other = make_test_pki(tmp_path / "other-ca")  # baresip's certificate comes from another CA
    endpoint = _endpoint(pki)
    async with endpoint:
        baresip = _baresip(tmp_path, other)
        with baresip:
            await asyncio.to_thread(baresip.wait_ready)
            host, port = baresip.tls_address
            started = time.monotonic()
            with pytest.raises(CallError, match="TLS: certificate verification failed"):
                await endpoint.call(f"sip:caller@{host}:{port};transport=tls", timeout=10)
            assert time.monotonic() - started < 3
            assert endpoint.tls_handshake_failures["outbound"] == 1
