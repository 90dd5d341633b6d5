"""Reliable provisional responses (RFC 3262) between two sans-IO cores in memory."""

from __future__ import annotations

from simplesip.core.config import UAConfig
from simplesip.core.events import CallAnswered, CallEnded, CallProgress, IncomingCall
from simplesip.core.useragent import UserAgentCore
from tests.helpers.sipmem import ANSWER, OFFER, Network, request, response

ALICE = ("127.0.0.1", 15361)
BOB = ("127.0.0.1", 15362)
REQUIRE = [("Require", "100rel")]


def _pair(net: Network, **bob_options) -> tuple[UserAgentCore, UserAgentCore]:
    alice = net.add(UAConfig(local_port=ALICE[1], username="alice"))
    bob = net.add(UAConfig(local_port=BOB[1], username="bob", **bob_options))
    return alice, bob


def _sent(net: Network, match) -> list:
    return [d for d in net.log if match(d)]


def test_a_required_180_is_reliable_and_pracked_then_the_call_goes_on(net):
    alice, bob = _pair(net)
    call_id = alice.invite("sip:bob@127.0.0.1:15362", OFFER, net.now, headers=REQUIRE)
    net.pump()
    ringing = _sent(net, response(180))[0].message
    assert ringing.headers.get("Require") == "100rel" and ringing.headers.get("RSeq").isdigit()
    prack = _sent(net, request("PRACK"))[0].message
    assert prack.headers.get("RAck") == f"{ringing.headers.get('RSeq')} 1 INVITE"
    assert prack.cseq == (2, "PRACK") and prack.to_tag == ringing.to_tag
    assert len(_sent(net, response(200, "PRACK"))) == 1
    bob.answer(call_id, ANSWER, net.now)
    net.pump()
    assert CallAnswered in [type(e) for e in net.events(alice)]
    net.advance(10)
    assert len(_sent(net, response(180))) == 1  # acknowledged: never retransmitted
    alice.bye(call_id, net.now)
    net.pump()
    bye = _sent(net, request("BYE"))[0].message
    assert bye.cseq == (3, "BYE") and len(_sent(net, response(200, "BYE"))) == 1
    assert [type(e) for e in net.events(bob)][-1] is CallEnded


def test_the_answer_waits_for_a_lost_prack_and_the_180_is_retransmitted(net):
    alice, bob = _pair(net)
    net.drop(request("PRACK"), count=1)
    call_id = alice.invite("sip:bob@127.0.0.1:15362", OFFER, net.now, headers=REQUIRE)
    net.pump()
    bob.answer(call_id, ANSWER, net.now)
    net.pump()
    assert not _sent(net, response(200, "INVITE"))  # held back until the PRACK
    net.advance(0.6)  # T1: the 180 again (ignored: same RSeq), and the PRACK again
    assert len(_sent(net, response(180))) == 2
    assert len(_sent(net, request("PRACK"))) == 1  # the first was dropped before the log
    assert len(_sent(net, response(200, "INVITE"))) == 1
    events = net.events(alice)
    assert [e.status for e in events if isinstance(e, CallProgress)] == [100, 180]  # 180 once
    assert isinstance(events[-1], CallAnswered)


def test_no_prack_at_all_refuses_the_call_with_504(net):
    alice, bob = _pair(net)
    net.drop(request("PRACK"), count=1000)
    call_id = alice.invite("sip:bob@127.0.0.1:15362", OFFER, net.now, headers=REQUIRE)
    net.advance(31.9)
    assert not _sent(net, response(504))
    net.advance(0.2)
    assert len(_sent(net, response(504))) == 1
    assert net.events(bob)[-1] == CallEnded(call_id, "error", 504)
    assert net.events(alice)[-1] == CallEnded(call_id, "rejected", 504)


def test_without_require_the_180_is_plain(net):
    alice, bob = _pair(net)
    alice.invite("sip:bob@127.0.0.1:15362", OFFER, net.now)
    net.pump()
    assert "100rel" in _sent(net, request("INVITE"))[0].message.headers.get("Supported")
    ringing = _sent(net, response(180))[0].message
    assert ringing.headers.get("RSeq") is None and not _sent(net, request("PRACK"))


def test_turned_off_require_100rel_gets_420(net):
    alice, bob = _pair(net, reliable_provisionals=False)
    alice.invite("sip:bob@127.0.0.1:15362", OFFER, net.now, headers=REQUIRE)
    net.pump()
    refused = _sent(net, response(420))[0].message
    assert refused.headers.get("Unsupported") == "100rel"
    assert IncomingCall not in [type(e) for e in net.events(bob)]
