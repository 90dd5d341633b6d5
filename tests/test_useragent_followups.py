"""UserAgentCore in memory (tests/sipmem.py): routing by host and port, late offer, 2xx after the
call is over, digest credentials reused on REGISTER refreshes."""

from __future__ import annotations

import pytest

from sipmem import ANSWER, OFFER, Datagram, Network, request, response, sip
from simplesip.core.auth import Challenge, DigestCredentials
from simplesip.core.auth_server import DigestVerifier
from simplesip.core.events import (
    CallConfirmed,
    CallEnded,
    IncomingCall,
    RegistrationFailed,
    RegistrationSucceeded,
)
from simplesip.wire.message import Request, Response
from simplesip.core.useragent import UserAgentCore
from simplesip.core.config import UAConfig

ALICE = ("127.0.0.1", 15061)
BOB = ("127.0.0.1", 15062)
PEER = ("127.0.0.1", 15090)  # a hand-driven peer on the same host as the server, other port
SERVER = ("127.0.0.1", 15060)


@pytest.fixture
def net() -> Network:
    return Network()


def served_ua(net: Network, **extra: object) -> UserAgentCore:
    """Alice, whose registrar/proxy is SERVER and whose domain is the server's host."""
    return net.add(UAConfig(local_port=ALICE[1], username="alice", password="alicepw",
                            domain=SERVER[0], server=SERVER, **extra))


# --- routing: the server gets only what is in our domain on its port ---------------------------


@pytest.mark.parametrize("target, first_hop", [
    (f"sip:bob@127.0.0.1:{PEER[1]}", PEER),      # same host as the server, other port: direct
    ("sip:bob@127.0.0.1", SERVER),               # our domain, no port: the server
    (f"sip:bob@127.0.0.1:{SERVER[1]}", SERVER),  # our domain on the server's port
    ("100", SERVER),                             # an extension: sip:100@domain
    ("tel:+15551234", SERVER),                   # we cannot route tel: ourselves
    ("sip:bob@127.0.0.5:5070", ("127.0.0.5", 5070)),  # another host
])
def test_invite_goes_to_the_server_only_for_our_domain_and_its_port(net, target, first_hop):
    alice = served_ua(net)
    call_id = alice.invite(target, OFFER, net.now)
    net.pump()
    [invite] = net.sent(request("INVITE"))
    assert invite.dst == first_hop
    assert alice.first_hop(call_id) == first_hop


def test_outbound_proxy_takes_every_out_of_dialog_request(net):
    alice = served_ua(net, outbound_proxy="sip:127.0.0.1:15070")
    alice.invite(f"sip:bob@127.0.0.1:{PEER[1]}", OFFER, net.now)
    net.pump()
    [invite] = net.sent(request("INVITE"))
    assert invite.dst == ("127.0.0.1", 15070)
    assert invite.message.headers.get("Route") == "<sip:127.0.0.1:15070;lr>"
    assert invite.message.uri == f"sip:bob@127.0.0.1:{PEER[1]}"


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


# --- REGISTER refreshes reuse the registrar's challenge ---------------------------------------------


class Registrar:
    """A digest registrar at SERVER; ``stale_next`` answers the next request with a fresh nonce."""

    def __init__(self, net: Network, password: str = "alicepw") -> None:
        self.net = net
        self.password = password
        self.stale_next = False
        self.verifier = DigestVerifier("example.com", lambda user: self.password if user == "alice" else None)
        self.requests: list[Request] = []
        net.attach(SERVER, self.handle)

    def handle(self, datagram: Datagram) -> list[bytes]:
        req = datagram.message
        self.requests.append(req)
        authorization = req.headers.get("Authorization")
        if authorization is None:
            return [self._challenge(req)]
        if self.stale_next:
            self.stale_next = False
            return [self._challenge(req, stale=True)]
        result = self.verifier.verify(authorization, "REGISTER", self.net.now, uri=req.uri)
        if not result.ok:
            return [self._challenge(req, stale=result.stale)]
        ok = Response.for_request(req, 200, to_tag="reg")
        ok.headers.add("Expires", "60")
        return [ok.serialize()]

    def _challenge(self, req: Request, stale: bool = False) -> bytes:
        challenge = Response.for_request(req, 401, to_tag="reg")
        challenge.headers.add("WWW-Authenticate", self.verifier.challenge(self.net.now, stale))
        return challenge.serialize()


def _credentials(req: Request) -> DigestCredentials:
    return DigestCredentials.parse(req.headers.get("Authorization") or "")


def test_refresh_reuses_the_nonce_with_a_growing_nonce_count(net):
    registrar = Registrar(net)
    alice = served_ua(net)
    alice.register(net.now, expires=60)
    net.pump()
    assert len(registrar.requests) == 2  # the first REGISTER is challenged once
    net.advance(31)
    net.advance(30)
    assert len(registrar.requests) == 4  # two refreshes, no challenge between
    first, *refreshes = [_credentials(r) for r in registrar.requests[1:]]
    assert {c.nonce for c in refreshes} == {first.nonce}
    assert [c.nc for c in (first, *refreshes)] == ["00000001", "00000002", "00000003"]
    assert net.events(alice) == [RegistrationSucceeded(60)] * 3


def test_stale_challenge_on_refresh_is_answered_once_with_the_new_nonce(net):
    registrar = Registrar(net)
    alice = served_ua(net)
    alice.register(net.now, expires=60)
    net.pump()
    registrar.stale_next = True
    net.advance(31)
    assert len(registrar.requests) == 4  # cached credentials, 401 stale, one answer
    old_nonce = _credentials(registrar.requests[2]).nonce
    answer = _credentials(registrar.requests[3])
    assert answer.nonce != old_nonce and answer.nc == "00000001"
    challenge = Challenge.parse(net.sent(response(401))[-1].message.headers.get("WWW-Authenticate"))
    assert challenge.stale and challenge.nonce == answer.nonce
    net.advance(30)
    assert len(registrar.requests) == 5
    assert (_credentials(registrar.requests[4]).nonce, _credentials(registrar.requests[4]).nc) == (
        answer.nonce, "00000002")
    assert net.events(alice) == [RegistrationSucceeded(60)] * 3


def test_refused_cached_credentials_still_fail_and_are_forgotten(net):
    registrar = Registrar(net)
    alice = served_ua(net)
    alice.register(net.now, expires=60)
    net.pump()
    registrar.password = "changed"
    net.advance(31)
    # cached credentials refused, one answer to the fresh challenge refused too: give up
    assert len(registrar.requests) == 4
    assert net.events(alice) == [RegistrationSucceeded(60), RegistrationFailed(401, "Unauthorized")]
    registrar.password = "alicepw"
    alice.register(net.now, expires=60)
    net.pump()
    assert registrar.requests[4].headers.get("Authorization") is None  # starts from scratch
    assert net.events(alice) == [RegistrationSucceeded(60)]
