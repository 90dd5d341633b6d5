"""Session timers (RFC 4028) between two sans-IO cores in memory, on a virtual clock."""

from __future__ import annotations

from simplesip.core.config import UAConfig
from simplesip.core.events import CallEnded
from simplesip.core.session_timers import parse_session_expires
from simplesip.core.useragent import UserAgentCore
from simplesip.wire.message import parse_message
from tests.helpers.sipmem import ANSWER, OFFER, Network, request, response, sip

ALICE = ("127.0.0.1", 15261)
BOB = ("127.0.0.1", 15262)


def _pair(net: Network, alice_options: dict | None = None, bob_options: dict | None = None
          ) -> tuple[UserAgentCore, UserAgentCore]:
    alice = net.add(UAConfig(local_port=ALICE[1], username="alice", **(alice_options or {})))
    bob = net.add(UAConfig(local_port=BOB[1], username="bob",
                           answer_reinvite=lambda call_id, offer: ANSWER, **(bob_options or {})))
    return alice, bob


def _call(net: Network, alice: UserAgentCore, bob: UserAgentCore) -> str:
    call_id = alice.invite("sip:bob@127.0.0.1:15262", OFFER, net.now)
    net.pump()
    bob.answer(call_id, ANSWER, net.now)
    net.pump()
    net.events(alice), net.events(bob)
    return call_id


def _sent(net: Network, match) -> list:
    return [d for d in net.log if match(d)]


def test_the_caller_refreshes_with_update_at_half_the_interval_and_the_call_lives_on(net):
    alice, bob = _pair(net)
    _call(net, alice, bob)
    invite = _sent(net, request("INVITE"))[0].message
    assert parse_session_expires(invite) == (1800, None) and "timer" in invite.headers.get("Supported")
    ok = _sent(net, response(200, "INVITE"))[0].message
    assert parse_session_expires(ok) == (1800, "uac") and ok.headers.get("Require") == "timer"
    net.advance(899)
    assert not _sent(net, request("UPDATE"))
    net.advance(2)
    assert len(_sent(net, request("UPDATE"))) == 1
    net.advance(3 * 1800)  # refreshes keep coming; nobody hangs up
    assert len(_sent(net, request("UPDATE"))) == 7  # at 900, 1800 ... 6300 s
    assert net.events(alice) == [] and net.events(bob) == []


def test_a_callee_not_allowing_update_is_refreshed_by_reinvite(net):
    alice, bob = _pair(net, bob_options={"allow_methods": ("INVITE", "ACK", "CANCEL", "BYE")})
    _call(net, alice, bob)
    net.advance(901)
    reinvites = _sent(net, request("INVITE"))
    assert len(reinvites) == 2 and reinvites[1].message.body == OFFER
    assert len(_sent(net, request("ACK"))) == 2
    assert net.events(alice) == []
    assert [type(e).__name__ for e in net.events(bob)] == ["RemoteOfferReceived"]  # the same SDP


def test_a_peer_that_stops_refreshing_gets_bye_before_the_session_expires(net):
    alice, bob = _pair(net)
    call_id = _call(net, alice, bob)
    net.drop(request("UPDATE"), count=1000)  # alice's refreshes never arrive
    net.advance(1800 - 32 - 1)
    assert net.events(bob) == []
    net.advance(2)
    ended = net.events(bob)
    assert ended == [CallEnded(call_id, "session_expired", 408)]
    assert _sent(net, lambda d: d.is_request("BYE") and d.src == BOB)


def test_a_too_small_interval_gets_422_and_the_caller_retries_with_the_min_se(net):
    alice, bob = _pair(net, alice_options={"session_expires": 300},
                       bob_options={"min_se": 1200, "session_expires": 1800})
    _call(net, alice, bob)
    assert len(_sent(net, response(422, "INVITE"))) == 1
    assert _sent(net, response(422))[0].message.headers.get("Min-SE") == "1200"
    retry = _sent(net, request("INVITE"))[1].message
    assert parse_session_expires(retry) == (1200, None) and retry.cseq[0] == 2
    assert parse_session_expires(_sent(net, response(200, "INVITE"))[0].message) == (1200, "uac")


def test_a_caller_without_timer_support_makes_us_the_refresher(net):
    alice, bob = _pair(net, alice_options={"session_expires": 0}, bob_options={"session_expires": 120,
                                                                               "min_se": 90})
    _call(net, alice, bob)
    invite = _sent(net, request("INVITE"))[0].message
    assert invite.headers.get("Session-Expires") is None
    assert "timer" not in (invite.headers.get("Supported") or "")
    ok = _sent(net, response(200, "INVITE"))[0].message
    assert parse_session_expires(ok) == (120, "uas") and ok.headers.get("Require") is None
    net.advance(61)
    assert [d.src for d in _sent(net, request("UPDATE"))] == [BOB]
    assert net.events(alice) == [] and net.events(bob) == []


def test_session_timers_off_means_no_headers_and_require_timer_gets_420(net):
    net.add(UAConfig(local_port=BOB[1], session_expires=0))
    net.inject(sip(f"""
        INVITE sip:bob@127.0.0.1:{BOB[1]} SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:{ALICE[1]};branch=z9hG4bK-st1
        From: <sip:alice@127.0.0.1>;tag=a1
        To: <sip:bob@127.0.0.1>
        Call-ID: st-420
        CSeq: 1 INVITE
        Require: timer
        Session-Expires: 1800
        Content-Type: application/sdp
    """, OFFER), ALICE, BOB)
    refused = parse_message(net.log[-1].data)
    assert refused.status == 420 and refused.headers.get("Unsupported") == "timer"


def test_parse_session_expires_compact_form_and_junk():
    message = parse_message(sip("""
        OPTIONS sip:x@h SIP/2.0
        Via: SIP/2.0/UDP h;branch=z9hG4bK-x
        From: <sip:a@h>;tag=1
        To: <sip:x@h>
        Call-ID: c
        CSeq: 1 OPTIONS
        x: 90 ; refresher = UAS
    """))
    assert parse_session_expires(message) == (90, "uas")
    message.headers.set("Session-Expires", "soon")
    assert parse_session_expires(message) is None
