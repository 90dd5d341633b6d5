"""SRTP against baresip's ``srtp`` media encryption module (SDES): it calls us and we call it, best
effort (``mediaenc=srtp``, our ``optional``) and mandatory (``srtp-mand``, RTP/SAVP, our
``mandatory``), over UDP and over SIP over TLS (the keys inside TLS, as a secure trunk has them).
Audio is checked by FFT both ways (its microphone is a tone WAV, its recording of what it
decrypted is a WAV), DTMF both ways, hold and resume, a wrong key on one of two calls, and
refusals where one side insists on SRTP; SRTP over IPv6 (baresip on ::1, ``srtp-mand``) with a
dual-stack endpoint on ``::``, both ways."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from simplesip import Call, CallError, CallState, Endpoint, EndpointConfig
from simplesip.core.srtp import SrtpParams, new_master_key
from simplesip.wire.sdp import SessionDescription
from tests.helpers.peers import BaresipRunner, dominant_frequency, tone
from tests.helpers.tone_checks import ToneCallee, after_onset, check_tones
from tests.helpers.waiting import wait_for

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

BARESIP_TONE_HZ = 1000.0
OUR_TONE_HZ = 1500.0
SRTP_MODULE = ["module srtp.so"]


def _microphone() -> np.ndarray:
    """Half a second of silence, then the tone (aufile hangs up at the end of the file)."""
    return np.concatenate([np.zeros(4000, np.int16), tone(BARESIP_TONE_HZ, 15)])


def _account(mediaenc: str | None, user: str = "caller") -> str:
    line = f"<sip:{user}@127.0.0.1>;regint=0;audio_codecs=pcmu,pcma;answermode=auto"
    return line + (f";mediaenc={mediaenc}" if mediaenc else "")




def _endpoint(policy: str) -> Endpoint:
    return Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000), srtp=policy))



def _check_srtp(call: Call, profile: str) -> None:
    assert SessionDescription.parse(call.local_sdp).media[0].proto == profile
    assert call.srtp_suite == "AES_CM_128_HMAC_SHA1_80"
    stats = call.stats()
    assert stats["srtp"] == 1
    # nothing baresip sent failed authentication or the replay check (its one clear RTCP "PING",
    # sent before its SRTP starts, is counted as srtp_malformed)
    assert stats["srtp_auth_failures"] == 0 and stats["srtp_replay_failures"] == 0, stats
    assert stats["packets_in"] > 50


@pytest.mark.parametrize("mediaenc, policy, profile", [
    ("srtp", "optional", "RTP/AVP"),
    ("srtp-mand", "mandatory", "RTP/SAVP"),
    ("srtp", "mandatory", "RTP/AVP"),  # best-effort offer with crypto lines meets our mandatory
])
async def test_baresip_calls_us_over_srtp(tmp_path: Path, mediaenc: str, policy: str, profile: str):
    endpoint = _endpoint(policy)
    answered: list[Call] = []
    heard: list[bytes] = []
    digits: list[tuple[str, str]] = []

    async def on_call(call: Call) -> None:
        answered.append(call)
        call.on_audio = heard.append
        call.on_dtmf = lambda digit, source, _ms: digits.append((digit, source))
        call.queue_pcm(tone(OUR_TONE_HZ, 3).tobytes())
        await call.answer()

    endpoint.on_incoming_call = on_call
    async with endpoint:
        host, port = endpoint.local_address
        baresip = BaresipRunner(tmp_path, microphone=_microphone(), account=_account(mediaenc),
                                commands=[f"/dial sip:ivr@{host}:{port}"], extra_config=SRTP_MODULE)
        with baresip:
            await wait_for(lambda: answered and answered[0].state is CallState.STREAMING, timeout=8)
            await asyncio.sleep(1.5)
            for digit in "42":
                await asyncio.to_thread(baresip.command, "sndcode", digit)
                await asyncio.sleep(0.4)
            await wait_for(lambda: len(digits) == 2, timeout=3)
            assert digits == [("4", "rfc4733"), ("2", "rfc4733")]
            await asyncio.sleep(1.0)
            (call,) = answered
            _check_srtp(call, profile)
            await call.hangup()
            assert call.end_reason == "local_bye"
            await asyncio.sleep(0.5)  # let baresip close its recording
            log = baresip.log()
        assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in log, log
        assert "Call established" in log, log
        check_tones(heard, baresip, BARESIP_TONE_HZ, OUR_TONE_HZ)


@pytest.mark.parametrize("mediaenc, policy, profile", [
    ("srtp", "optional", "RTP/AVP"),
    ("srtp-mand", "mandatory", "RTP/SAVP"),
    ("srtp", "mandatory", "RTP/SAVP"),
])
async def test_we_call_baresip_over_srtp(tmp_path: Path, mediaenc: str, policy: str, profile: str):
    baresip = BaresipRunner(tmp_path, microphone=_microphone(), account=_account(mediaenc),
                            extra_config=SRTP_MODULE)
    events = None
    endpoint = _endpoint("off")  # the per-call policy below is what counts
    try:
        await asyncio.to_thread(baresip.wait_ready)
        events = baresip.listen_events()
        async with endpoint:
            heard: list[bytes] = []
            call = await endpoint.call(f"sip:caller@127.0.0.1:{baresip.sip_port}", srtp=policy)
            call.on_audio = heard.append
            call.queue_pcm(tone(OUR_TONE_HZ, 3).tobytes())
            await wait_for(lambda: call.state is CallState.STREAMING, timeout=5)
            await asyncio.sleep(2.0)
            call.send_dtmf("73")
            await wait_for(lambda: len(events.of_type("CALL_DTMF_START")) == 2, timeout=3)
            assert [e.get("param") for e in events.of_type("CALL_DTMF_START")] == ["7", "3"]
            await asyncio.sleep(1.0)
            _check_srtp(call, profile)
            events.command("hangup")
            await wait_for(lambda: call.state is CallState.IDLE, timeout=5)
            assert call.end_reason == "remote_bye"
            await asyncio.sleep(0.5)
        assert len(events.of_type("CALL_ESTABLISHED")) == 1, events.events
        check_tones(heard, baresip, BARESIP_TONE_HZ, OUR_TONE_HZ)
    finally:
        if events is not None:
            events.close()
        baresip.stop()
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in baresip.log()


async def test_plain_baresip_is_refused_by_mandatory(tmp_path: Path):
    endpoint = _endpoint("mandatory")
    offered: list[Call] = []
    endpoint.on_incoming_call = offered.append
    async with endpoint:
        host, port = endpoint.local_address
        baresip = BaresipRunner(tmp_path, account=_account(None),
                                commands=[f"/dial sip:ivr@{host}:{port}"], extra_config=SRTP_MODULE)
        with baresip:
            await wait_for(lambda: "488" in baresip.log(), timeout=8)
        assert offered == []  # refused before the application is asked
        assert "488 Not Acceptable Here" in baresip.log()


@pytest.mark.parametrize("policy", ["off", "optional"])
async def test_mandatory_baresip_refuses_an_rtp_avp_offer(tmp_path: Path, policy: str):
    """baresip's ``srtp-mand`` wants the RTP/SAVP profile: our best-effort offer (RTP/AVP with
    crypto lines) is refused like a plain one. Towards such a peer the policy must be mandatory."""
    baresip = BaresipRunner(tmp_path, account=_account("srtp-mand"), extra_config=SRTP_MODULE)
    try:
        await asyncio.to_thread(baresip.wait_ready)
        async with _endpoint("optional") as endpoint:
            with pytest.raises(CallError) as info:
                await endpoint.call(f"sip:caller@127.0.0.1:{baresip.sip_port}", srtp=policy, timeout=8)
            assert info.value.status == 488
            assert not endpoint.calls
    finally:
        baresip.stop()


def _tone_in(frames: list[bytes]) -> float:
    pcm = after_onset(np.frombuffer(b"".join(frames), dtype="<i2"), 8000)
    assert len(pcm) >= 4000, "less than half a second of tone"
    return dominant_frequency(pcm[:4000])


async def test_baresip_holds_and_resumes_an_srtp_call(tmp_path: Path):
    """A hold re-INVITE and a resume re-INVITE, each with its crypto line: the SRTP session follows
    both and audio flows again after the resume, nothing failing authentication."""
    endpoint = _endpoint("optional")
    answered: list[Call] = []
    heard: list[bytes] = []

    async def on_call(call: Call) -> None:
        answered.append(call)
        call.on_audio = heard.append
        await call.answer()

    endpoint.on_incoming_call = on_call
    async with endpoint:
        host, port = endpoint.local_address
        baresip = BaresipRunner(tmp_path, microphone=_microphone(), account=_account("srtp"),
                                commands=[f"/dial sip:ivr@{host}:{port}"], extra_config=SRTP_MODULE)
        with baresip:
            await wait_for(lambda: answered and answered[0].state is CallState.STREAMING, timeout=8)
            (call,) = answered
            await asyncio.sleep(1.0)
            await asyncio.to_thread(baresip.command, "hold")
            await wait_for(lambda: call.on_hold, timeout=5)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(baresip.command, "resume")
            await wait_for(lambda: not call.on_hold, timeout=5)
            heard.clear()
            await asyncio.sleep(1.5)
            assert abs(_tone_in(heard) - BARESIP_TONE_HZ) < 10  # decrypted after the resume
            stats = call.stats()
            assert stats["srtp"] == 1 and call.srtp_suite == "AES_CM_128_HMAC_SHA1_80"
            assert stats["srtp_auth_failures"] == 0 and stats["srtp_replay_failures"] == 0, stats
            await call.hangup()
        assert baresip.log().count("SRTP is Enabled") >= 3, baresip.log()  # call, hold, resume


async def test_wrong_key_on_one_baresip_call_is_counted_and_the_other_call_goes_on(tmp_path: Path):
    """Two baresips call us over SRTP; then one call's receiving key is replaced by a wrong one
    (what a peer keyed differently from its SDP looks like): its packets are counted as
    authentication failures and dropped, nothing of them is heard, and both calls go on."""
    endpoint = _endpoint("mandatory")
    answered: list[Call] = []
    heard: dict[str, list[bytes]] = {}

    async def on_call(call: Call) -> None:
        answered.append(call)
        heard[call.id] = []
        call.on_audio = heard[call.id].append
        await call.answer()

    endpoint.on_incoming_call = on_call
    async with endpoint:
        host, port = endpoint.local_address
        peers = [BaresipRunner(tmp_path / name, microphone=_microphone(), account=_account("srtp-mand"),
                               commands=[f"/dial sip:ivr@{host}:{port}"], extra_config=SRTP_MODULE)
                 for name in ("broken", "healthy")]
        try:
            await wait_for(lambda: len(answered) == 2 and all(c.state is CallState.STREAMING for c in answered), timeout=10)
            await asyncio.sleep(1.0)
            broken, healthy = answered
            assert broken.rtp is not None and broken.rtp.srtp is not None
            params = broken.rtp.srtp.params
            broken.rtp.srtp.update(SrtpParams(params.suite, params.local_key, new_master_key()))
            heard[broken.id].clear()
            heard[healthy.id].clear()
            await asyncio.sleep(2.0)
            broken_stats, healthy_stats = broken.stats(), healthy.stats()
            assert broken_stats["srtp_auth_failures"] >= 50, broken_stats  # 50 packets a second
            # nothing of it played: past what the jitter buffer held and its loss concealment
            pcm = np.frombuffer(b"".join(heard[broken.id]), dtype="<i2")[4000:]
            assert len(pcm) > 4000 and np.abs(pcm.astype(np.int32)).max() < 1000
            assert healthy_stats["srtp_auth_failures"] == 0, healthy_stats
            assert abs(_tone_in(heard[healthy.id]) - BARESIP_TONE_HZ) < 10
            assert broken.is_live and healthy.is_live
            for call in answered:
                await call.hangup()
                assert call.end_reason == "local_bye"
        finally:
            for peer in peers:
                peer.stop()


# --- SRTP over SIP over TLS: what a secure trunk asks for (the keys travel inside TLS) ---------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tests.helpers.certs import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _tls_endpoint(pki, policy: str) -> Endpoint:
    return Endpoint(EndpointConfig(
        sip_port=0, tls_port=0, transports=("udp", "tls"), username="ivr", srtp=policy,
        tls_cert_file=pki.cert("server"), tls_key_file=pki.key("server"), tls_ca_file=pki.ca,
        rtp_port_range=(40000, 49000)))


def _tls_baresip(tmp_path: Path, pki, mediaenc: str, commands=()) -> BaresipRunner:
    pem = tmp_path / "baresip.pem"  # baresip wants its certificate and key in one file
    pem.write_text(Path(pki.cert("server")).read_text() + Path(pki.key("server")).read_text())
    return BaresipRunner(tmp_path / "baresip", microphone=_microphone(), account=_account(mediaenc),
                         commands=commands,
                         extra_config=[*SRTP_MODULE, f"sip_certificate\t{pem}", f"sip_cafile\t{pki.ca}"])


@pytest.mark.parametrize("mediaenc, policy, profile", [
    ("srtp-mand", "mandatory", "RTP/SAVP"), ("srtp", "optional", "RTP/AVP")])
async def test_baresip_calls_us_over_tls_with_srtp(tmp_path: Path, pki, mediaenc: str, policy: str,
                                                   profile: str):
    endpoint = _tls_endpoint(pki, policy)
    callee = ToneCallee(OUR_TONE_HZ)
    answered, heard, digits = callee.answered, callee.heard, callee.digits
    endpoint.on_incoming_call = callee
    async with endpoint:
        baresip = _tls_baresip(tmp_path, pki, mediaenc,
                               [f"/dial sip:ivr@127.0.0.1:{endpoint.tls_port};transport=tls"])
        with baresip:
            await wait_for(lambda: answered and answered[0].state is CallState.STREAMING, timeout=10)
            (call,) = answered
            assert call.headers.get("Via").startswith("SIP/2.0/TLS ")
            await asyncio.sleep(1.5)
            await asyncio.to_thread(baresip.command, "sndcode", "7")
            await wait_for(lambda: digits, timeout=3)
            assert digits == ["7"]
            await asyncio.sleep(0.5)
            _check_srtp(call, profile)
            await call.hangup()
            await asyncio.sleep(0.5)
            log = baresip.log()
        assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in log, log
        check_tones(heard, baresip, BARESIP_TONE_HZ, OUR_TONE_HZ)


@pytest.mark.parametrize("mediaenc, policy, profile", [
    ("srtp-mand", "mandatory", "RTP/SAVP"), ("srtp", "optional", "RTP/AVP")])
async def test_we_call_baresip_over_tls_with_srtp(tmp_path: Path, pki, mediaenc: str, policy: str,
                                                  profile: str):
    endpoint = _tls_endpoint(pki, "off")  # the call's own policy below
    heard: list[bytes] = []
    async with endpoint:
        baresip = _tls_baresip(tmp_path, pki, mediaenc)
        with baresip:
            await asyncio.to_thread(baresip.wait_ready)
            host, port = baresip.tls_address
            call = await endpoint.call(f"sip:caller@{host}:{port};transport=tls", timeout=10, srtp=policy)
            call.on_audio = heard.append
            call.queue_pcm(tone(OUR_TONE_HZ, 3).tobytes())
            await wait_for(lambda: call.state is CallState.STREAMING, timeout=5)
            await asyncio.sleep(3.0)
            _check_srtp(call, profile)
            await asyncio.to_thread(baresip.command, "hangup")
            await asyncio.wait_for(call.ended.wait(), 5)
            assert call.end_reason == "remote_bye"
            await asyncio.sleep(0.5)
        assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in baresip.log()
        check_tones(heard, baresip, BARESIP_TONE_HZ, OUR_TONE_HZ)


# --- SRTP over IPv6 (baresip on ::1), to and from a dual-stack endpoint on "::" -----------------

def _v6_baresip(tmp_path: Path, commands=()) -> BaresipRunner:
    return BaresipRunner(tmp_path, microphone=_microphone(), host="::1", commands=commands,
                         account="<sip:caller@[::1]>;regint=0;audio_codecs=pcmu,pcma;answermode=auto"
                                 ";mediaenc=srtp-mand",
                         extra_config=SRTP_MODULE)


async def _wait_for_tones(heard: list[bytes], baresip: BaresipRunner, timeout: float = 5.0) -> None:
    """:func:`_check_tones` once baresip has closed its recording (retried until ``timeout``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            check_tones(heard, baresip, BARESIP_TONE_HZ, OUR_TONE_HZ)
            return
        except (AssertionError, ValueError, EOFError, OSError, wave.Error):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


def _check_ipv6_media(call: Call) -> None:
    assert call.remote_rtp is not None and call.remote_rtp[0] == "::1", call.remote_rtp
    media = SessionDescription.parse(call.local_sdp)
    assert media.connection_for(media.media[0]).addr_type == "IP6"
    assert media.connection_for(media.media[0]).address == "::1"  # the route to ::1, never "::"


async def test_baresip_over_ipv6_calls_a_dual_stack_endpoint_with_mandatory_srtp(tmp_path: Path):
    endpoint = Endpoint(EndpointConfig(local_host="::", sip_port=0, rtp_port_range=(40000, 49000),
                                       srtp="mandatory"))
    callee = ToneCallee(OUR_TONE_HZ)
    answered, heard, digits = callee.answered, callee.heard, callee.digits
    endpoint.on_incoming_call = callee
    async with endpoint:
        port = endpoint.local_address[1]
        with _v6_baresip(tmp_path, [f"/dial sip:ivr@[::1]:{port}"]) as baresip:
            await wait_for(lambda: answered and answered[0].state is CallState.STREAMING, timeout=10)
            (call,) = answered
            assert call.source is not None and call.source[0] == "::1"
            await wait_for(lambda: len(b"".join(heard)) >= 2 * 16000, timeout=8)  # into baresip's tone
            await asyncio.to_thread(baresip.command, "sndcode", "4")
            await wait_for(lambda: digits == ["4"], timeout=3)
            await wait_for(lambda: call.stats()["packets_in"] > 100, timeout=5)
            _check_srtp(call, "RTP/SAVP")
            _check_ipv6_media(call)
            await call.hangup()
            await _wait_for_tones(heard, baresip)
            log = baresip.log()
        assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in log, log


async def test_a_dual_stack_endpoint_calls_baresip_over_ipv6_with_mandatory_srtp(tmp_path: Path):
    baresip = _v6_baresip(tmp_path)
    events = None
    endpoint = Endpoint(EndpointConfig(local_host="::", sip_port=0, rtp_port_range=(40000, 49000)))
    try:
        await asyncio.to_thread(baresip.wait_ready)
        events = baresip.listen_events()
        async with endpoint:
            heard: list[bytes] = []
            call = await endpoint.call(f"sip:caller@[::1]:{baresip.sip_port}", srtp="mandatory")
            call.on_audio = heard.append
            call.queue_pcm(tone(OUR_TONE_HZ, 3).tobytes())
            await wait_for(lambda: call.state is CallState.STREAMING, timeout=5)
            await wait_for(lambda: call.stats()["packets_in"] > 100, timeout=5)
            call.send_dtmf("9")
            await wait_for(lambda: len(events.of_type("CALL_DTMF_START")) == 1, timeout=3)
            assert events.of_type("CALL_DTMF_START")[0].get("param") == "9"
            await wait_for(lambda: call.queued_audio_bytes == 0, timeout=5)  # our tone is out
            _check_srtp(call, "RTP/SAVP")
            _check_ipv6_media(call)
            events.command("hangup")
            await wait_for(lambda: call.state is CallState.IDLE, timeout=5)
            assert call.end_reason == "remote_bye"
            await _wait_for_tones(heard, baresip)
    finally:
        if events is not None:
            events.close()
        baresip.stop()
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in baresip.log()
