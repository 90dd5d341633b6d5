"""UserAgentCore in memory: a 2xx that arrives after the call is over is ACKed, then BYEd
(RFC 3261 13.2.2.4); a retransmitted one gets the same ACK again; a forged one is ignored."""

from __future__ import annotations

from simplesip.core.config import UAConfig
from simplesip.core.events import (
    CallEnded,
)
from simplesip.wire.message import Request, Response
from tests.helpers.sipmem import (
    ALICE,
    ANSWER,
    OFFER,
    PEER,
    request,
    sip,
)

# --- a 2xx after the call is over: ACK it, then BYE (RFC 3261 13.2.2.4) -------------------------


def _late_ok(invite: Request, to_tag: str) -> bytes:
    ok = Response.for_request(invite, 200, to_tag=to_tag)
    ok.headers.add("Contact", f"<sip:bob@127.0.0.1:{PEER[1]}>")
    ok.headers.add("Content-Type", "application/sdp")
    ok.body = ANSWER
    return ok.serialize()


def test_2xx_after_the_invite_timed_out_is_acked_and_byed(net):
    alice = net.add(UAConfig(local_port=ALICE[1], username="alice"))
    call_id = alice.invite(f"sip:bob@127.0.0.1:{PEER[1]}", OFFER, net.now)
    net.advance(40)  # nobody answers: Timer B ends the call and its transaction
    assert net.events(alice) == [CallEnded(call_id, "timeout", 408)]
    assert alice.state_counts()["client_transactions"] == 0
    invite = net.sent(request("INVITE"))[0].message
    net.inject(_late_ok(invite, "late"), PEER, ALICE)
    [ack] = net.sent(request("ACK"))
    [bye] = net.sent(request("BYE"))
    for sent in (ack.message, bye.message):
        assert sent.call_id == call_id and sent.to_tag == "late"
        assert sent.uri == f"sip:bob@127.0.0.1:{PEER[1]}"  # the 2xx's Contact
    assert ack.message.cseq == (1, "ACK") and bye.message.cseq[1] == "BYE"
    assert ack.dst == PEER and bye.dst == PEER
    net.inject(_late_ok(invite, "late"), PEER, ALICE)  # retransmitted: the ACK again, no new BYE
    assert len(net.sent(request("ACK"))) == 2 and len(net.sent(request("BYE"))) == 1
    assert net.sent(request("ACK"))[1].data == ack.data
    net.settle()  # the BYE times out unanswered: no second CallEnded for a call already over
    assert net.events(alice) == []
    assert alice.state_counts()["timers"] == 0


def test_2xx_retransmitted_after_timer_m_gets_the_same_ack_and_no_bye(net):
    alice = net.add(UAConfig(local_port=ALICE[1], username="alice"))
    call_id = alice.invite(f"sip:bob@127.0.0.1:{PEER[1]}", OFFER, net.now)
    net.pump()
    invite = net.sent(request("INVITE"))[0].message
    net.inject(_late_ok(invite, "b1"), PEER, ALICE)  # answered normally
    alice.bye(call_id, net.now)
    net.advance(40)  # our BYE goes unanswered, Timer M ends the INVITE transaction
    net.events(alice)
    byes = len(net.sent(request("BYE")))
    net.inject(_late_ok(invite, "b1"), PEER, ALICE)  # the peer never saw our ACK
    acks = net.sent(request("ACK"))
    assert len(acks) == 2 and acks[0].data == acks[1].data
    assert len(net.sent(request("BYE"))) == byes


def test_2xx_for_a_call_we_never_made_is_ignored(net):
    alice = net.add(UAConfig(local_port=ALICE[1], username="alice"))
    net.inject(sip(f"""
        SIP/2.0 200 OK
        Via: SIP/2.0/UDP 127.0.0.1:{ALICE[1]};branch=z9hG4bKforged
        From: <sip:alice@127.0.0.1>;tag=a1
        To: <sip:bob@127.0.0.1>;tag=b1
        Call-ID: forged@nowhere
        CSeq: 1 INVITE
        Contact: <sip:victim@127.0.0.9>
    """), PEER, ALICE)
    assert [d for d in net.log if d.src == ALICE] == []  # no ACK/BYE towards the forged Contact
    assert net.events(alice) == []
