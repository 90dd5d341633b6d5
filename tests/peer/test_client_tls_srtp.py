"""``SimpleSIPClient`` over SIP over TLS with SRTP, against real peers: it registers to Kamailio's
tls module (digest auth, certificate checked against the test CA) and calls user ``ivr``, which
Kamailio dispatches to a baresip requiring SRTP (``srtp-mand``): encrypted audio both ways
(checked by FFT) and DTMF through Kamailio. It also calls baresip's own TLS listener directly,
and refuses a Kamailio whose certificate its CA did not sign, at once, naming the reason."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from simplesip import ConnectionError, SimpleSIPClient
from tests.helpers.certs import CertSet, make_test_pki
from tests.helpers.net import free_port
from tests.helpers.peers import (
    BaresipRunner,
    KamailioRunner,
    dominant_frequency,
    read_wav,
    tone,
)
from tests.helpers.tone_checks import after_onset
from tests.helpers.waiting import wait_for_sync

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

BARESIP_TONE_HZ = 1000.0
OUR_TONE_HZ = 1500.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertSet:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _baresip(workdir: Path, pki: CertSet, *, port: int | None = None) -> BaresipRunner:
    """baresip answering as user ``ivr`` and requiring SRTP (RTP/SAVP), its microphone a tone;
    it listens for SIP over TLS too, with the test CA's server certificate."""
    pem = workdir.parent / f"{workdir.name}.pem"  # baresip wants certificate and key in one file
    pem.write_text(Path(pki.cert("server")).read_text() + Path(pki.key("server")).read_text())
    microphone = np.concatenate([np.zeros(4000, np.int16), tone(BARESIP_TONE_HZ, 15)])
    runner = BaresipRunner(
        workdir, microphone=microphone,
        account="<sip:ivr@127.0.0.1>;regint=0;audio_codecs=pcmu;answermode=auto;mediaenc=srtp-mand",
        extra_config=["module srtp.so", f"sip_certificate\t{pem}", f"sip_cafile\t{pki.ca}"])
    runner.wait_ready()
    return runner



def _talk(phone: SimpleSIPClient, destination: str, baresip: BaresipRunner) -> dict:
    """Call ``destination``, send our tone and a digit, hear baresip's tone; the call's status."""
    heard = bytearray()
    lock = threading.Lock()

    def on_audio(audio: bytes, _format: str) -> None:
        with lock:
            heard.extend(audio)

    phone.set_audio_callback(on_audio, format="pcm")
    events = baresip.listen_events()
    try:
        assert phone.make_call(destination)
        phone.send_pcm(tone(OUR_TONE_HZ, 3).tobytes())

        def tone_heard() -> bool:
            with lock:
                pcm = np.frombuffer(bytes(heard), dtype="<i2")
            return len(after_onset(pcm, 8000)) >= 8000
        wait_for_sync(tone_heard, timeout=10, message=lambda: f"baresip's tone did not reach us: {baresip.log()}")
        phone.send_dtmf("5")
        wait_for_sync(lambda: any(e.get("type") == "CALL_DTMF_START" and e.get("param") == "5"
                                  for e in events.events), timeout=5,
                      message=lambda: f"baresip did not see our 5: {events.events}")
        wait_for_sync(lambda: phone.get_call_status()["packets_in"] > 100, timeout=5)
        status = phone.get_call_status()
        phone.end_call()
    finally:
        events.close()
    wait_for_sync(lambda: phone.call_state.value == "idle", timeout=5)
    pcm = np.frombuffer(bytes(heard), dtype="<i2")
    assert abs(dominant_frequency(after_onset(pcm, 8000)[:8000]) - BARESIP_TONE_HZ) < 10
    wait_for_sync(lambda: baresip.recordings("dec"), timeout=5, message=baresip.log)
    samples, rate = read_wav(baresip.recordings("dec")[0])
    tone_out = after_onset(samples, rate)
    assert len(tone_out) >= rate, "baresip heard less than a second of our tone"
    assert abs(dominant_frequency(tone_out[:rate], rate) - OUR_TONE_HZ) < 10
    return status


def _check_srtp(status: dict, baresip: BaresipRunner) -> None:
    assert status["srtp_suite"] == "AES_CM_128_HMAC_SHA1_80" and status["srtp"] == 1, status
    assert status["srtp_auth_failures"] == 0 and status["srtp_replay_failures"] == 0, status
    log = baresip.log()
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in log, log


def test_client_registers_over_tls_and_calls_through_kamailio_with_srtp(tmp_path: Path, pki: CertSet) -> None:
    baresip = _baresip(tmp_path / "baresip", pki)
    kamailio = KamailioRunner(tmp_path / "kamailio", dispatch_to=[baresip.address],
                              tls=(pki.cert("server"), pki.key("server")))
    phone = SimpleSIPClient("alice", "secret", "127.0.0.1", kamailio.tls_port, transport="tls",
                            ca_file=pki.ca, srtp="mandatory", rtp_port_range=(40000, 49000),
                            dns_srv=False)
    try:
        with baresip:
            assert phone.connect()  # REGISTER with digest auth, over TLS
            bindings = kamailio.registrations()
            assert "alice" in bindings and "transport=tls" in bindings, bindings
            # over TLS to Kamailio, which dispatches user ivr to baresip (UDP)
            status = _talk(phone, f"ivr@127.0.0.1:{kamailio.tls_port}", baresip)
            _check_srtp(status, baresip)
            phone.disconnect()
            assert "alice" not in kamailio.registrations()
    finally:
        phone.disconnect()
        kamailio.stop()


def test_client_calls_baresip_over_tls_with_srtp(tmp_path: Path, pki: CertSet) -> None:
    baresip = _baresip(tmp_path / "baresip", pki)
    host, port = baresip.tls_address
    phone = SimpleSIPClient("alice", "secret", "127.0.0.1", free_port(), transport="tls", ca_file=pki.ca,
                            srtp="mandatory", rtp_port_range=(40000, 49000), dns_srv=False)
    try:
        with baresip:
            assert phone.connect(register=False)
            status = _talk(phone, f"sip:ivr@{host}:{port};transport=tls", baresip)
            _check_srtp(status, baresip)
    finally:
        phone.disconnect()


def test_client_refuses_an_untrusted_server_at_once(tmp_path: Path, pki: CertSet) -> None:
    kamailio = KamailioRunner(tmp_path / "kamailio", tls=(pki.cert("server"), pki.key("server")))
    stranger = make_test_pki(tmp_path / "stranger-ca")
    phone = SimpleSIPClient("alice", "secret", "127.0.0.1", kamailio.tls_port, transport="tls",
                            ca_file=stranger.ca, srtp="mandatory", dns_srv=False)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="TLS: certificate verification failed"):
            phone.connect()
        assert time.monotonic() - started < 5
        assert not phone.running
    finally:
        phone.disconnect()
        kamailio.stop()


def test_client_options_are_checked() -> None:
    with pytest.raises(ValueError, match="transport"):
        SimpleSIPClient("a", "b", "127.0.0.1", transport="sctp")
    with pytest.raises(ValueError, match="transport='tls'"):
        SimpleSIPClient("a", "b", "127.0.0.1", ca_file="/etc/ssl/certs/ca-certificates.crt")
    with pytest.raises(ValueError, match="SRTP policy"):
        SimpleSIPClient("a", "b", "127.0.0.1", transport="tls", srtp="always")
    phone = SimpleSIPClient("a", "b", "127.0.0.1", transport="tls", verify=False, srtp="optional")
    assert phone.config.transport == "tls" and "tls" in phone.config.transports
    assert phone.config.tls_verify is False and phone.config.srtp == "optional"
