"""SRTP with SDES, in memory: a=crypto parse/format (RFC 4568), offer/answer under each policy,
and RtpSession pairs exchanging SRTP/SRTCP (audio bit-exact, DTMF, wrong keys and replays
counted and dropped)."""

from __future__ import annotations

import base64
import random

import pytest

from simplesip.core.offeranswer import (
    SdpSession,
    make_answer,
    make_offer,
    media_params_from_answer,
)
from simplesip.core.rtpsession import RtpSession
from simplesip.core.srtp import (
    SRTP_SUITES,
    SrtpContext,
    SrtpParams,
    acceptable_crypto,
    new_master_key,
)
from simplesip.errors import SIPParseError
from simplesip.wire.rtp import is_rtcp
from simplesip.wire.sdp import (
    CryptoAttribute,
    SdesKey,
    SDPNegotiationError,
    SessionDescription,
)

KEY = bytes(range(30))
KEY_B64 = base64.b64encode(KEY).decode()  # 40 characters, no padding


# --- a=crypto lines -----------------------------------------------------------------------------

def test_crypto_parses_rfc4568_example():
    # RFC 4568 section 4's example, with its lifetime and MKI.
    line = CryptoAttribute.parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4")
    assert line.tag == 1 and line.suite == "AES_CM_128_HMAC_SHA1_80"
    assert line.keys[0].lifetime == 2**20 and line.keys[0].mki == (1, 4)
    assert len(line.key_salt) == 30
    assert str(line) == "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"


@pytest.mark.parametrize("line", [
    CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", (SdesKey(KEY),)),
    CryptoAttribute(2, "AES_CM_128_HMAC_SHA1_32", (SdesKey(KEY, lifetime=2**31),)),
    CryptoAttribute(9, "AES_CM_128_HMAC_SHA1_32", (SdesKey(KEY, 1000, (7, 2)), SdesKey(KEY[::-1], None, (8, 2))),
                    ("KDR=1", "UNENCRYPTED_SRTCP")),
    CryptoAttribute(123456789, "F8_128_HMAC_SHA1_80", (SdesKey(b"\x01\x02\x03"),)),
])
def test_crypto_round_trips(line):
    assert CryptoAttribute.parse(str(line)) == line


def test_crypto_key_without_base64_padding_is_read():
    assert CryptoAttribute.parse("1 X inline:AAE").key_salt == b"\x00\x01"


@pytest.mark.parametrize("value", [
    "", "1 AES_CM_128_HMAC_SHA1_80", "x AES_CM_128_HMAC_SHA1_80 inline:" + KEY_B64,
    "1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_B64,  # tag over 9 digits
    "1 AES_CM_128_HMAC_SHA1_80 uri:http://example.com/key",  # only inline keys
    "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64",
    "1 AES_CM_128_HMAC_SHA1_80 inline:",
    "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_B64 + "|1:4|2^20",  # lifetime after the MKI
    "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_B64 + "|junk",
])
def test_bad_crypto_lines_are_refused(value):
    with pytest.raises(SIPParseError):
        CryptoAttribute.parse(value)


def test_media_crypto_skips_unreadable_lines_and_keeps_them_in_the_sdp():
    body = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***\r\n"
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}\r\n")
    sdp = SessionDescription.parse(body)
    assert [line.tag for line in sdp.media[0].crypto] == [2]
    assert sdp.serialize().decode() == body


@pytest.mark.parametrize("line, ok", [
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}", True),
    (f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}|2^31", True),
    (f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_B64}", False),  # suite we do not run
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|1:4", False),  # MKI
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64} UNENCRYPTED_SRTP", False),  # session parameter
    ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", False),  # key too short
])
def test_acceptable_crypto(line, ok):
    assert acceptable_crypto(CryptoAttribute.parse(line)) is ok


# --- offer/answer -------------------------------------------------------------------------------

def _offer(policy: str) -> SessionDescription:
    return SessionDescription.parse(SdpSession("127.0.0.1", 4000, srtp=policy).offer().serialize())


def test_offers_per_policy():
    plain, optional, mandatory = _offer("off"), _offer("optional"), _offer("mandatory")
    assert plain.media[0].proto == "RTP/AVP" and plain.media[0].crypto == []
    assert optional.media[0].proto == "RTP/AVP"
    assert mandatory.media[0].proto == "RTP/SAVP"
    for offer in (optional, mandatory):
        lines = offer.media[0].crypto
        assert [(c.tag, c.suite) for c in lines] == [(1, SRTP_SUITES[0]), (2, SRTP_SUITES[1])]
        assert all(acceptable_crypto(c) for c in lines)
        assert lines[0].key_salt != lines[1].key_salt


def test_keys_are_fresh_per_call_and_kept_across_reoffers():
    first, second = SdpSession("127.0.0.1", 4000, srtp="optional"), SdpSession("127.0.0.1", 4000, srtp="optional")
    keys = [c.key_salt for c in first.offer().media[0].crypto]
    assert keys != [c.key_salt for c in second.offer().media[0].crypto]
    assert keys == [c.key_salt for c in first.offer("sendonly").media[0].crypto]


@pytest.mark.parametrize("offerer, answerer, suite", [
    ("optional", "optional", SRTP_SUITES[0]),
    ("optional", "mandatory", SRTP_SUITES[0]),
    ("mandatory", "optional", SRTP_SUITES[0]),
    ("mandatory", "mandatory", SRTP_SUITES[0]),
    ("off", "off", None), ("off", "optional", None), ("optional", "off", None),
])
def test_policies_negotiate(offerer, answerer, suite):
    caller = SdpSession("127.0.0.1", 4000, srtp=offerer)
    callee = SdpSession("127.0.0.1", 5000, srtp=answerer)
    offer = caller.offer()
    answer, callee_params = callee.answer(offer.serialize())
    caller_params = media_params_from_answer(offer, answer.serialize())
    assert answer.media[0].proto == offer.media[0].proto  # RFC 3264: the answer keeps the profile
    if suite is None:
        assert callee_params.srtp is None and caller_params.srtp is None
        assert answer.media[0].crypto == []
        return
    (line,) = answer.media[0].crypto
    assert line.suite == suite and line.tag == 1
    assert callee_params.srtp.suite == caller_params.srtp.suite == suite
    # each side receives with the key the other sends with
    assert callee_params.srtp.remote_key == caller_params.srtp.local_key
    assert caller_params.srtp.remote_key == callee_params.srtp.local_key
    assert callee_params.srtp.local_key != callee_params.srtp.remote_key


@pytest.mark.parametrize("policy", ["off", "mandatory"])
def test_refusals_are_488(policy):
    other = "optional" if policy == "off" else "off"
    offer = _offer("mandatory" if policy == "off" else other)  # SAVP to "off"; plain to "mandatory"
    with pytest.raises(SDPNegotiationError) as info:
        SdpSession("127.0.0.1", 5000, srtp=policy).answer(offer.serialize())
    assert info.value.status == 488
    if policy == "mandatory":
        assert "crypto" in str(info.value)


def test_answerer_takes_the_offerers_first_acceptable_line():
    offer = make_offer("127.0.0.1", 4000, crypto=[
        CryptoAttribute(1, "AES_256_CM_HMAC_SHA1_80", (SdesKey(bytes(46)),)),
        CryptoAttribute(5, "AES_CM_128_HMAC_SHA1_32", (SdesKey(KEY),)),
        CryptoAttribute(6, "AES_CM_128_HMAC_SHA1_80", (SdesKey(KEY),)),
    ], secure_profile=True)
    keys = {suite: new_master_key() for suite in SRTP_SUITES}
    answer, params = make_answer(offer, "127.0.0.1", 5000, srtp="optional", srtp_keys=keys)
    (line,) = answer.media[0].crypto
    assert (line.tag, line.suite) == (5, "AES_CM_128_HMAC_SHA1_32")
    assert params.srtp == SrtpParams("AES_CM_128_HMAC_SHA1_32", keys["AES_CM_128_HMAC_SHA1_32"], KEY)


def test_suites_limit_what_is_accepted():
    offer = make_offer("127.0.0.1", 4000, crypto=[CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_32", (SdesKey(KEY),))],
                       secure_profile=True)
    only_80 = SdpSession("127.0.0.1", 5000, srtp="optional", srtp_suites=["AES_CM_128_HMAC_SHA1_80"])
    with pytest.raises(SDPNegotiationError):
        only_80.answer(offer)


def test_mandatory_offer_rejects_an_answer_without_crypto():
    caller = SdpSession("127.0.0.1", 4000, srtp="mandatory")
    offer = caller.offer()
    answer = offer.serialize().decode().replace("a=crypto:2", "a=x-crypto:2").replace("a=crypto:1", "a=x-crypto:1")
    with pytest.raises(SDPNegotiationError):
        media_params_from_answer(offer, answer)
    # an answer crypto line with a tag we did not offer is no better
    forged = offer.serialize().decode().replace("a=crypto:2", "a=x:2").replace("a=crypto:1", "a=crypto:7")
    with pytest.raises(SDPNegotiationError):
        media_params_from_answer(offer, forged)


def test_optional_offer_takes_a_plain_answer():
    caller = SdpSession("127.0.0.1", 4000, srtp="optional")
    offer = caller.offer()
    answer, _ = SdpSession("127.0.0.1", 5000).answer(offer)
    assert media_params_from_answer(offer, answer).srtp is None


def test_srtp_params_hide_keys_from_repr():
    assert KEY_B64 not in repr(SrtpParams(SRTP_SUITES[0], KEY, KEY)) and "0, 1, 2" not in repr(SrtpParams(SRTP_SUITES[0], KEY, KEY))


# --- SRTP between two RtpSessions ---------------------------------------------------------------

def _pair(suite: str = SRTP_SUITES[0]) -> tuple[RtpSession, RtpSession]:
    a_key, b_key = new_master_key(), new_master_key()
    a = RtpSession(0, "PCMU", ("127.0.0.1", 2000), jitter_target_ms=20, rng=random.Random(1),
                   srtp=SrtpParams(suite, a_key, b_key))
    b = RtpSession(0, "PCMU", ("127.0.0.1", 1000), jitter_target_ms=20, rng=random.Random(2),
                   srtp=SrtpParams(suite, b_key, a_key))
    return a, b


@pytest.mark.parametrize("suite, tag_length", [(SRTP_SUITES[0], 10), (SRTP_SUITES[1], 4)])
def test_audio_arrives_bit_exact_and_encrypted(suite, tag_length):
    a, b = _pair(suite)
    frames = [bytes((i * 7 + j) & 0xFF for j in range(160)) for i in range(20)]
    got = []
    for i, frame in enumerate(frames):
        packet = a.build_packet(frame)
        assert len(packet) == 12 + 160 + tag_length
        assert frame not in packet  # the payload is encrypted
        b.receive(packet, ("127.0.0.1", 1000), i * 0.02)
        got.append(b.pull_frame())
    got += [b.pull_frame() for _ in range(5)]
    assert [f for f in got if f in frames] == frames
    assert b.stats()["srtp"] == 1 and b.stats()["srtp_auth_failures"] == 0


def test_dtmf_over_srtp():
    a, b = _pair()
    a.build_dtmf_packets("7", 100)
    now = 0.0
    while a.dtmf_pending:
        b.receive(a.build_packet(bytes(160)), ("127.0.0.1", 1000), now)
        now += 0.02
    assert [digit for digit, _ in b.pop_dtmf(now + 1)] == ["7"]


def test_wrong_key_and_replays_are_counted_and_dropped():
    a, b = _pair()
    stranger = RtpSession(0, "PCMU", ("127.0.0.1", 2000), srtp=SrtpParams(SRTP_SUITES[0], new_master_key(),
                                                                         new_master_key()))
    for i in range(5):
        b.receive(stranger.build_packet(b"\x11" * 160), ("127.0.0.1", 3000), i * 0.02)
    assert b.latched_addr is None  # forged packets never latch
    assert b.stats()["srtp_auth_failures"] == 5 and b.stats()["packets_in"] == 0
    packet = a.build_packet(b"\x22" * 160)
    b.receive(packet, ("127.0.0.1", 1000), 1.0)
    b.receive(packet, ("127.0.0.1", 1000), 1.01)  # the same packet again
    plain = RtpSession(0, "PCMU", None).build_packet(b"\x33" * 160)
    b.receive(plain, ("127.0.0.1", 1000), 1.02)  # clear RTP on an SRTP call
    b.receive(b"\x80", ("127.0.0.1", 1000), 1.03)  # runt
    b.receive(bytes.fromhex("80cc0003a87ca93350494e47504f4e47"), ("127.0.0.1", 1001), 1.04)  # baresip's clear RTCP APP
    stats = b.stats()
    assert stats["packets_in"] == 1 and b.latched_addr == ("127.0.0.1", 1000)
    assert stats["srtp_replay_failures"] == 1 and stats["srtp_auth_failures"] == 6
    assert stats["srtp_malformed"] == 2


def test_srtcp_reports_are_protected_and_read():
    a, b = _pair()
    for i in range(3):
        b.receive(a.build_packet(bytes(160)), ("127.0.0.1", 1000), i * 0.02)
    assert b.rtcp_report(0.0) is None  # the first call only schedules
    report = b.rtcp_report(100.0)
    assert report is not None and is_rtcp(report)
    assert b"simplesip" not in report  # the SDES CNAME is encrypted
    a.receive(report, ("127.0.0.1", 2001), 100.0)
    assert a.stats()["srtp_auth_failures"] == 0 and a.stats()["malformed"] == 0
    a.receive(report, ("127.0.0.1", 2001), 100.1)  # replayed
    tampered = bytearray(b.rtcp_report(200.0) or b"")
    tampered[12] ^= 1
    a.receive(bytes(tampered), ("127.0.0.1", 2001), 200.0)
    assert a.stats()["srtp_replay_failures"] == 1 and a.stats()["srtp_auth_failures"] == 1


def test_renegotiation_rekeys_and_keeps_what_is_unchanged():
    a, b = _pair()
    b.receive(a.build_packet(bytes(160)), ("127.0.0.1", 1000), 0.0)
    new_key = new_master_key()
    # a re-offer: a sends with a new key; b is told, and keeps its own sending key
    a.update(_Params(SrtpParams(SRTP_SUITES[0], new_key, a.srtp.params.remote_key)))
    b.update(_Params(SrtpParams(SRTP_SUITES[0], b.srtp.params.local_key, new_key)))
    b.receive(a.build_packet(bytes(160)), ("127.0.0.1", 1000), 0.02)
    a.receive(b.build_packet(bytes(160)), ("127.0.0.1", 2000), 0.02)
    assert b.stats()["packets_in"] == 2 and a.stats()["packets_in"] == 1
    assert a.stats()["srtp_auth_failures"] == b.stats()["srtp_auth_failures"] == 0
    b.update(_Params(None))  # a re-offer without crypto under "optional": plain RTP from now on
    assert b.srtp is None and b.stats()["srtp"] == 0


class _Params:
    """The one field of MediaParams that RtpSession.update reads here."""

    def __init__(self, srtp: SrtpParams | None) -> None:
        self.srtp = srtp


def test_context_protect_failure_sends_nothing():
    context = SrtpContext(SrtpParams(SRTP_SUITES[0], KEY, KEY))
    assert context.protect(bytes(2000)) == b""  # larger than libsrtp's buffer
    assert context.protect_failures == 1
