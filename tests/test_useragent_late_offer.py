"""UserAgentCore in memory: late offer (RFC 3264 via RFC 3261 13.2.1): an INVITE without SDP, our
offer in the 200, the answer in the ACK, reported on CallConfirmed; offerless re-INVITEs."""

from __future__ import annotations

import pytest

from simplesip.core.config import UAConfig
from simplesip.core.events import (
    CallConfirmed,
    IncomingCall,
)
from simplesip.wire.message import Response
from tests.helpers.sipmem import (
    ALICE,
    ANSWER,
    BOB,
    OFFER,
    PEER,
    response,
    sip,
)

# --- late offer: the INVITE has no SDP, our 200 offers, the ACK answers -------------------------


def _invite_without_sdp(call_id: str = "late@peer") -> bytes:
    return sip(f"""
        INVITE sip:bob@127.0.0.1:{BOB[1]} SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:{PEER[1]};branch=z9hG4bKlate1
        Max-Forwards: 70
        From: <sip:peer@127.0.0.1>;tag=p1
        To: <sip:bob@127.0.0.1>
        Call-ID: {call_id}
        CSeq: 1 INVITE
        Contact: <sip:peer@127.0.0.1:{PEER[1]}>
    """)


def _ack_for(ok: Response, body: bytes = b"") -> bytes:
    content_type = "Content-Type: application/sdp\n" if body else ""
    return sip(f"""
        ACK sip:bob@127.0.0.1:{BOB[1]} SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:{PEER[1]};branch=z9hG4bKlate2
        Max-Forwards: 70
        From: <sip:peer@127.0.0.1>;tag=p1
        To: {ok.headers.get("To")}
        Call-ID: {ok.call_id}
        CSeq: 1 ACK
        {content_type}
    """, body)


@pytest.mark.parametrize("ack_body", [ANSWER, b""])
def test_late_offer_answer_arrives_in_call_confirmed(net, ack_body):
    bob = net.add(UAConfig(local_port=BOB[1], username="bob"))
    net.inject(_invite_without_sdp(), PEER, BOB)
    [incoming] = net.events(bob)
    assert isinstance(incoming, IncomingCall) and incoming.remote_sdp is None
    assert incoming.source == PEER  # the transport source, not what the Via claims
    bob.answer(incoming.call_id, OFFER, net.now)
    net.pump()
    ok = net.sent(response(200, "INVITE"))[-1].message
    assert ok.body == OFFER  # our offer rides in the 200
    net.inject(_ack_for(ok, ack_body), PEER, BOB)
    assert net.events(bob) == [CallConfirmed(incoming.call_id, ack_body or None)]


def test_offerless_reinvite_gets_our_sdp_and_the_ack_answer_is_reported(net):
    bob = net.add(UAConfig(local_port=BOB[1], username="bob"))
    net.inject(_invite_without_sdp(), PEER, BOB)
    [incoming] = net.events(bob)
    bob.answer(incoming.call_id, OFFER, net.now)
    net.pump()
    ok = net.sent(response(200, "INVITE"))[-1].message
    net.inject(_ack_for(ok, ANSWER), PEER, BOB)
    net.events(bob)
    moved = ANSWER.replace(b"4002", b"4010")
    reinvite = _invite_without_sdp().replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE").replace(
        b"z9hG4bKlate1", b"z9hG4bKre1").replace(b"To: <sip:bob@127.0.0.1>",
                                               f"To: {ok.headers.get('To')}".encode())
    net.inject(reinvite, PEER, BOB)
    reoffer = net.sent(response(200, "INVITE"))[-1].message
    assert reoffer.cseq == (2, "INVITE") and reoffer.body == OFFER  # our session, offered again
    net.inject(_ack_for(reoffer, moved).replace(b"CSeq: 1 ACK", b"CSeq: 2 ACK"), PEER, BOB)
    assert net.events(bob) == [CallConfirmed(incoming.call_id, moved)]


def test_early_offer_confirmation_carries_no_sdp(net):
    bob = net.add(UAConfig(local_port=BOB[1], username="bob"))
    alice = net.add(UAConfig(local_port=ALICE[1], username="alice"))
    call_id = alice.invite(f"sip:bob@127.0.0.1:{BOB[1]}", OFFER, net.now)
    net.pump()
    bob.answer(call_id, ANSWER, net.now)
    net.pump()
    assert net.events(bob)[-1] == CallConfirmed(call_id, None)
