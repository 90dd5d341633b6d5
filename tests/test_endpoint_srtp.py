"""Two Endpoints on loopback with SRTP: each policy pair, G.711 audio bit-exact both ways and DTMF
over SRTP, 488 where a policy cannot be met, and a wrong-key peer (its packets counted and dropped,
its call and every other call carrying on)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from simplesip import Call, CallError, CallState, Endpoint, EndpointConfig
from simplesip.core.srtp import SrtpParams, new_master_key
from simplesip.wire import g711
from simplesip.wire.sdp import SessionDescription

pytestmark = pytest.mark.timeout(60)


async def _endpoint(srtp: str = "off", **kw) -> Endpoint:
    endpoint = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000), srtp=srtp, **kw))
    await endpoint.start()
    return endpoint


def _uri(endpoint: Endpoint) -> str:
    host, port = endpoint.local_address
    return f"sip:bob@{host}:{port}"


async def _until(predicate, timeout: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _answer_all(callee: Endpoint) -> list[Call]:
    calls: list[Call] = []

    async def on_call(call: Call) -> None:
        calls.append(call)
        await call.answer()
    callee.on_incoming_call = on_call
    return calls


def _codes(seed: int, frames: int) -> bytes:
    """Random G.711 codes, minus the few whose decode/encode does not round-trip (μ-law's two
    zeros), so that what arrives can be compared code for code."""
    codes = np.random.default_rng(seed).integers(0, 256, frames * 160, dtype=np.uint8)
    codes[codes == 0x7F] = 0x7E
    return codes.tobytes()


def _received_codes(frames: list[bytes]) -> bytes:
    pcm = np.frombuffer(b"".join(frames), dtype="<i2")
    return g711.encode(pcm, "PCMU").tobytes()


async def _check_audio(sender: Call, receiver: Call) -> None:
    """What ``sender`` queues reaches ``receiver`` code for code: every 20 ms frame arrives
    verbatim, in order. (On a loaded machine a stall may make the receiver's jitter buffer drop
    a frame to catch up; one such frame is allowed, a corrupted one never: a frame either
    matches byte for byte or is missing.)"""
    heard: list[bytes] = []
    receiver.on_audio = heard.append
    sent = _codes(7, 25)
    frames = [sent[i:i + 160] for i in range(0, len(sent), 160)]
    await _until(lambda: receiver.state is CallState.STREAMING)
    sender.queue_audio(sent, "PCMU")

    def arrived() -> list[int]:
        received = _received_codes(heard)
        return [received.find(frame) for frame in frames]

    try:
        await _until(lambda: sent in _received_codes(heard), 8)
    except AssertionError:
        positions = [p for p in arrived() if p >= 0]
        assert len(positions) >= len(frames) - 1, f"only {len(positions)} of {len(frames)} frames arrived"
        assert positions == sorted(positions)
    receiver.on_audio = None


async def _check_dtmf(sender: Call, receiver: Call) -> None:
    """Key presses ``sender`` sends (RFC 4733) reach ``receiver``."""
    digits: list[tuple[str, str]] = []
    receiver.on_dtmf = lambda digit, source, _ms: digits.append((digit, source))
    sender.send_dtmf("19#")
    await _until(lambda: len(digits) == 3)
    assert digits == [("1", "rfc4733"), ("9", "rfc4733"), ("#", "rfc4733")]
    # DTMF replaces audio until its end packets and gap are out: audio queued earlier would lose frames
    await _until(lambda: sender.rtp is not None and not sender.rtp.dtmf_pending)


async def _check_audio_and_dtmf(first: Call, second: Call) -> None:
    """Audio and DTMF both ways between the two ends of a call."""
    for sender, receiver in ((first, second), (second, first)):
        await _check_audio(sender, receiver)
        await _check_dtmf(sender, receiver)


@pytest.mark.parametrize("caller_policy, callee_policy, profile", [
    ("optional", "optional", "RTP/AVP"),
    ("optional", "mandatory", "RTP/AVP"),
    ("mandatory", "optional", "RTP/SAVP"),
    ("mandatory", "mandatory", "RTP/SAVP"),
])
async def test_srtp_call_audio_bit_exact_and_dtmf(caller_policy, callee_policy, profile):
    caller, callee = await _endpoint(), await _endpoint(callee_policy)
    try:
        incoming = _answer_all(callee)
        call = await caller.call(_uri(callee), srtp=caller_policy)
        (remote,) = incoming
        assert SessionDescription.parse(call.local_sdp).media[0].proto == profile
        assert call.srtp_suite == remote.srtp_suite == "AES_CM_128_HMAC_SHA1_80"
        await _check_audio_and_dtmf(call, remote)
        for side in (call, remote):
            stats = side.stats()
            assert stats["srtp"] == 1 and stats["srtp_auth_failures"] == stats["srtp_replay_failures"] == 0
        await call.hangup()
        assert remote.end_reason == "remote_bye"
    finally:
        await caller.stop()
        await callee.stop()


async def test_optional_meets_off_with_plain_rtp():
    caller, callee = await _endpoint(), await _endpoint("off")
    try:
        incoming = _answer_all(callee)
        call = await caller.call(_uri(callee), srtp="optional")
        (remote,) = incoming
        assert call.srtp_suite is None and remote.srtp_suite is None
        await _check_audio_and_dtmf(call, remote)
        await call.hangup()
    finally:
        await caller.stop()
        await callee.stop()


@pytest.mark.parametrize("caller_policy, callee_policy", [("off", "mandatory"), ("mandatory", "off")])
async def test_unmet_policy_is_refused_with_488(caller_policy, callee_policy):
    caller, callee = await _endpoint(), await _endpoint(callee_policy)
    try:
        incoming = _answer_all(callee)
        with pytest.raises(CallError) as info:
            await caller.call(_uri(callee), srtp=caller_policy)
        assert info.value.status == 488
        assert incoming == []  # refused before the application saw it
    finally:
        await caller.stop()
        await callee.stop()


async def test_wrong_key_is_counted_and_no_call_fails():
    caller, callee = await _endpoint(), await _endpoint("mandatory")
    try:
        incoming = _answer_all(callee)
        bad = await caller.call(_uri(callee), srtp="mandatory")
        good = await caller.call(_uri(callee), srtp="mandatory")
        bad_remote, good_remote = incoming
        await _until(lambda: bad_remote.state is CallState.STREAMING)
        # the caller's side of one call now encrypts with a key the callee never saw
        assert bad.rtp is not None and bad.rtp.srtp is not None
        params = bad.rtp.srtp.params
        bad.rtp.srtp.update(SrtpParams(params.suite, new_master_key(), params.remote_key))
        await _until(lambda: bad_remote.stats()["srtp_auth_failures"] >= 25)
        forged_digits: list[str] = []
        bad_remote.on_dtmf = lambda digit, _source, _ms: forged_digits.append(digit)
        bad.send_dtmf("5")
        await asyncio.sleep(0.5)
        assert forged_digits == []  # nothing that fails authentication is played or reported
        assert bad_remote.is_live and good_remote.is_live
        # the other call is untouched: its audio and DTMF flow, nothing dropped
        await _check_audio_and_dtmf(good, good_remote)
        assert good_remote.stats()["srtp_auth_failures"] == good.stats()["srtp_auth_failures"] == 0
        # the broken call still carries its intact direction
        await _check_audio(bad_remote, bad)
        await _check_dtmf(bad_remote, bad)
        assert bad.stats()["srtp_auth_failures"] == 0
        await bad.hangup()
        assert bad_remote.end_reason == "remote_bye"
        await good.hangup()
    finally:
        await caller.stop()
        await callee.stop()


async def test_hold_and_resume_keep_srtp_and_the_profile():
    """Our own hold re-INVITE on an SRTP call: same keys, the profile the call runs in (the
    callee under ``mandatory`` answered RTP/AVP with crypto and re-offers RTP/AVP), media and DTMF
    flowing after the resume with nothing failing authentication."""
    caller, callee = await _endpoint(), await _endpoint("mandatory")
    try:
        incoming = _answer_all(callee)
        call = await caller.call(_uri(callee), srtp="optional")
        (remote,) = incoming
        await _until(lambda: remote.state is CallState.STREAMING)
        for holder, other in ((remote, call), (call, remote)):
            assert await holder.hold() == 200
            await _until(lambda: other.on_hold)
            reoffer = SessionDescription.parse(holder.sdp_session.offer().serialize())
            assert reoffer.media[0].proto == "RTP/AVP" and reoffer.media[0].crypto
            assert await holder.resume() == 200
            await _until(lambda: not other.on_hold and not holder.on_hold)
            await _check_audio_and_dtmf(holder, other)
        for side in (call, remote):
            assert side.srtp_suite == "AES_CM_128_HMAC_SHA1_80"
            stats = side.stats()
            assert stats["srtp_auth_failures"] == stats["srtp_replay_failures"] == 0, stats
        await call.hangup()
    finally:
        await caller.stop()
        await callee.stop()
