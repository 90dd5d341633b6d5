"""UserAgentCore scenarios in memory (tests/sipmem.py): two cores, or a core and a hand-written peer.

Addresses here are labels in the in-memory network: no socket is ever opened.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplesip.core.auth_server import DigestVerifier
from simplesip.core.config import UAConfig
from simplesip.core.events import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallProgress,
    IncomingCall,
    InfoReceived,
    MessageRejected,
    ReferProgress,
    RegistrationFailed,
    RegistrationSucceeded,
    RemoteOfferReceived,
)
from simplesip.core.useragent import UserAgentCore
from simplesip.errors import CallError
from simplesip.wire.message import Response, parse_message
from tests.helpers.sipmem import (
    ANSWER,
    OFFER,
    Datagram,
    Network,
    request,
    response,
    sip,
)

ALICE = ("127.0.0.1", 15061)
BOB = ("127.0.0.1", 15062)
PEER = ("127.0.0.1", 15070)  # a hand-driven peer (no core)
REGISTRAR = ("127.0.0.1", 15080)
ZERO = {"calls": 0, "dialogs": 0, "client_transactions": 0, "server_transactions": 0,
        "merge_index": 0, "timers": 0}


def types(events) -> list[str]:
    return [type(e).__name__ for e in events]


@pytest.fixture
def alice(net: Network) -> UserAgentCore:
    return net.add(UAConfig(local_port=ALICE[1], username="alice", password="alicepw",
                            domain="example.com", server=REGISTRAR))


@pytest.fixture
def bob(net: Network) -> UserAgentCore:
    return net.add(UAConfig(local_port=BOB[1], username="bob",
                            answer_reinvite=lambda call_id, offer: hold_answer(offer)))


def hold_answer(offer: bytes) -> bytes:
    """What a phone answers to hold (sendonly -> recvonly) and resume (sendrecv)."""
    return ANSWER + (b"a=recvonly\r\n" if b"a=sendonly" in offer else b"a=sendrecv\r\n")


def call(net: Network, alice: UserAgentCore, bob: UserAgentCore) -> str:
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    bob.answer(call_id, ANSWER, net.now)
    net.pump()
    net.events(alice), net.events(bob)
    return call_id


# --- basic calls ------------------------------------------------------------------------------


def test_call_answered_then_caller_hangs_up(net, alice, bob):
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    [incoming] = net.events(bob)
    assert isinstance(incoming, IncomingCall) and incoming.call_id == call_id
    assert incoming.remote_sdp == OFFER
    assert [(e.status, e.reason) for e in net.events(alice)] == [(100, "Trying"), (180, "Ringing")]
    bob.answer(call_id, ANSWER, net.now)
    net.pump()
    assert net.events(alice) == [CallAnswered(call_id, ANSWER)]
    assert net.events(bob) == [CallConfirmed(call_id)]
    alice.bye(call_id, net.now)
    net.pump()
    assert net.events(alice) == [CallEnded(call_id, "local_bye", None)]
    assert net.events(bob) == [CallEnded(call_id, "remote_bye", None)]
    [ok] = net.sent(response(200, "BYE"))
    assert ok.src == BOB
    net.settle()
    assert alice.state_counts() == ZERO and bob.state_counts() == ZERO


def test_callee_hangs_up_and_bye_follows_callee_contact(net, alice, bob):
    call_id = call(net, alice, bob)
    bob.bye(call_id, net.now)
    net.pump()
    [bye] = net.sent(request("BYE"))
    assert bye.src == BOB and bye.dst == ALICE
    assert bye.message.uri == "sip:alice@127.0.0.1:15061"  # alice's Contact (remote target)
    assert net.events(alice) == [CallEnded(call_id, "remote_bye", None)]
    assert net.events(bob) == [CallEnded(call_id, "local_bye", None)]


def test_reject_486_is_acked_and_ends_the_call(net, alice, bob):
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    bob.reject(call_id, 486, net.now)
    net.pump()
    assert net.events(alice)[-1] == CallEnded(call_id, "rejected", 486)
    assert types(net.events(bob)) == ["IncomingCall", "CallEnded"]
    [ack] = net.sent(request("ACK"))
    invite = net.sent(request("INVITE"))[0].message
    assert ack.message.vias[0].branch == invite.vias[0].branch  # ACK inside the INVITE transaction
    net.advance(40)
    assert len(net.sent(response(486))) == 1  # the ACK stopped Timer G
    assert alice.state_counts() == ZERO and bob.state_counts() == ZERO


def test_reject_can_carry_headers(net, alice, bob):
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    bob.reject(call_id, 503, net.now, headers={"Retry-After": "7"})
    net.pump()
    [busy] = net.sent(response(503))
    assert busy.message.headers.get("Retry-After") == "7"
    assert net.events(alice)[-1] == CallEnded(call_id, "rejected", 503)


def test_many_concurrent_calls_leave_nothing_behind(net, alice, bob):
    ids = [alice.invite(f"sip:bob@127.0.0.1:15062;n={n}", OFFER, net.now) for n in range(25)]
    net.pump()
    assert len(set(ids)) == 25 and len(bob.call_ids) == 25
    for n, call_id in enumerate(ids):
        if n % 3 == 0:
            bob.reject(call_id, 603, net.now)
        else:
            bob.answer(call_id, ANSWER, net.now)
    net.pump()
    for n, call_id in enumerate(ids):
        if n % 3 == 1:
            alice.bye(call_id, net.now)
        elif n % 3 == 2:
            bob.bye(call_id, net.now)
    net.pump()
    ended = [e for e in net.events(alice) if isinstance(e, CallEnded)]
    assert len(ended) == 25
    net.settle()
    assert alice.state_counts() == ZERO and bob.state_counts() == ZERO


# --- timers and retransmissions ---------------------------------------------------------------


def test_invite_to_nobody_is_retransmitted_then_timer_b_gives_408(net, alice):
    call_id = alice.invite("sip:nobody@127.0.0.1:15099", OFFER, net.now)
    net.advance(31)
    assert net.events(alice) == []
    net.advance(2)
    # Timer A at 0.5, 1, 2, 4, 8, 16 s: the first send plus six retransmissions before 32 s.
    assert len(net.sent(request("INVITE"))) == 7
    assert net.events(alice) == [CallEnded(call_id, "timeout", 408)]
    assert alice.state_counts() == ZERO


def test_register_to_dead_server_times_out_with_timer_f(net, alice):
    alice.register(net.now)
    net.advance(33)
    # Timer E: 0.5, 1, 2, 4 then every T2=4 s up to Timer F at 32 s.
    assert len(net.sent(request("REGISTER"))) == 11
    assert net.events(alice) == [RegistrationFailed(408, "Request Timeout")]


def test_tcp_never_retransmits(net):
    core = net.add(UAConfig(local_port=15063, transport="tcp"))
    call_id = core.invite("sip:x@127.0.0.1:15099", OFFER, net.now)
    net.advance(40)
    [invite] = net.sent(request("INVITE"))
    assert invite.transport == "tcp" and "SIP/2.0/TCP" in invite.message.headers.get("Via")
    assert net.events(core) == [CallEnded(call_id, "timeout", 408)]


def test_2xx_is_retransmitted_until_the_ack_arrives(net, alice, bob):
    net.drop(request("ACK"), count=2)
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    bob.answer(call_id, ANSWER, net.now)
    net.pump()
    assert types(net.events(bob)) == ["IncomingCall"]
    net.advance(0.6)  # T1: second 200, second ACK (dropped)
    assert net.events(bob) == []
    net.advance(1.0)  # 2*T1: third 200, third ACK arrives
    assert net.events(bob) == [CallConfirmed(call_id)]
    assert len(net.sent(response(200, "INVITE"))) == 3
    assert len(net.sent(request("ACK"))) + len(net.dropped) == 3
    assert net.events(alice) == [CallProgress(call_id, 100, "Trying"),
                                 CallProgress(call_id, 180, "Ringing"), CallAnswered(call_id, ANSWER)]
    net.advance(30)
    assert len(net.sent(response(200, "INVITE"))) == 3


def test_missing_ack_ends_the_call_with_bye_after_64_t1(net, alice, bob):
    net.drop(request("ACK"), count=100)
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    bob.answer(call_id, ANSWER, net.now)
    net.advance(33)
    assert net.events(bob)[-1] == CallEnded(call_id, "no_ack", 408)
    assert net.events(alice)[-1] == CallEnded(call_id, "remote_bye", None)
    # 200 at 0, 0.5, 1.5, 3.5, 7.5, then every 4 s until 32 s
    assert len(net.sent(response(200, "INVITE"))) == 11


# --- CANCEL -----------------------------------------------------------------------------------


def test_cancel_after_ringing_gets_487(net, alice, bob):
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    alice.cancel(call_id, net.now)
    net.pump()
    assert net.events(bob)[-1] == CallEnded(call_id, "cancelled", 487)
    assert net.events(alice)[-1] == CallEnded(call_id, "cancelled", 487)
    assert len(net.sent(response(200, "CANCEL"))) == 1
    assert len(net.sent(request("ACK"))) == 1  # the 487 is ACKed
    net.settle()
    assert alice.state_counts() == ZERO and bob.state_counts() == ZERO


def test_cancel_waits_for_a_provisional_response(net, alice, bob):
    net.drop(response(100), count=1)
    bob.config.auto_ringing = False
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    alice.cancel(call_id, net.now)
    net.pump()
    assert net.sent(request("CANCEL")) == []  # RFC 3261 9.1: not before a provisional
    net.advance(0.6)  # Timer A resends the INVITE, bob repeats 100, now CANCEL goes out
    assert len(net.sent(request("CANCEL"))) == 1
    assert net.events(alice)[-1] == CallEnded(call_id, "cancelled", 487)


def test_200_racing_cancel_is_acked_then_byed(net, alice, bob):
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    net.delay(response(200, "INVITE"), 0.05)
    bob.answer(call_id, ANSWER, net.now)
    net.pump()
    alice.cancel(call_id, net.now)
    net.pump()
    [ok_cancel] = net.sent(response(200, "CANCEL"))  # CANCEL answered; the INVITE is not 487
    assert net.sent(response(487)) == []
    net.advance(0.1)
    assert len(net.sent(request("ACK"))) == 1
    assert len(net.sent(request("BYE"))) == 1
    assert net.events(alice)[-1] == CallEnded(call_id, "cancelled", 200)
    assert types(net.events(bob))[-2:] == ["CallConfirmed", "CallEnded"]
    net.settle()
    assert alice.state_counts() == ZERO and bob.state_counts() == ZERO


# --- registration and digest ------------------------------------------------------------------


class Registrar:
    """A digest-checking registrar peer built on DigestVerifier."""

    def __init__(self, net: Network, challenges: str = "normal") -> None:
        self.net = net
        self.mode = challenges
        self.verifier = DigestVerifier("example.com", {"alice": "alicepw"}.get)
        self.requests = []
        net.attach(REGISTRAR, self.handle)

    def handle(self, datagram: Datagram) -> list[bytes]:
        req = datagram.message
        self.requests.append(req)
        authorization = req.headers.get("Authorization")
        if self.mode == "forbidden":
            return [Response.for_request(req, 403).serialize()]
        if authorization is None or self.mode == "always":
            return [self._challenge(req)]
        result = self.verifier.verify(authorization, "REGISTER", self.net.now, uri=req.uri)
        if self.mode == "stale-once":
            self.mode = "normal"
            return [self._challenge(req, stale=True)]
        if not result.ok:
            return [self._challenge(req, stale=result.stale)]
        ok = Response.for_request(req, 200, to_tag="reg")
        expires = req.headers.get("Expires")
        if expires != "0":
            ok.headers.add("Contact", f"{req.headers.get('Contact')};expires=60")
        return [ok.serialize()]

    def _challenge(self, req, stale: bool = False) -> bytes:
        challenge = Response.for_request(req, 401, to_tag="reg")
        challenge.headers.add("WWW-Authenticate", self.verifier.challenge(self.net.now, stale))
        return challenge.serialize()


def test_register_answers_401_with_qop_digest_and_refreshes_at_half_time(net, alice):
    registrar = Registrar(net)
    alice.register(net.now, expires=120)
    net.pump()
    assert net.events(alice) == [RegistrationSucceeded(60)]  # the Contact's expires wins
    first, second = registrar.requests
    assert "qop=auth" in second.headers.get("Authorization")
    assert second.call_id == first.call_id and second.cseq[0] == first.cseq[0] + 1
    assert second.vias[0].branch != first.vias[0].branch
    net.advance(29)
    assert len(registrar.requests) == 2
    net.advance(2)  # refresh at 30 s, answering the cached challenge: no new 401 round trip
    assert len(registrar.requests) == 3 and registrar.requests[2].cseq[0] == 3
    assert "nc=00000002" in registrar.requests[2].headers.get("Authorization")
    assert net.events(alice) == [RegistrationSucceeded(60)]
    assert alice.registered


def test_unregister_sends_star_contact_and_stops_refreshing(net, alice):
    registrar = Registrar(net)
    alice.register(net.now)
    net.pump()
    alice.unregister(net.now)
    net.pump()
    last = registrar.requests[-1]
    assert last.headers.get("Contact") == "*" and last.headers.get("Expires") == "0"
    assert net.events(alice) == [RegistrationSucceeded(60), RegistrationSucceeded(0)]
    count = len(registrar.requests)
    net.advance(300)
    assert len(registrar.requests) == count and not alice.registered


def test_a_second_challenge_fails_unless_stale(net, alice):
    registrar = Registrar(net, challenges="always")
    alice.register(net.now)
    net.pump()
    assert len(registrar.requests) == 2  # one retry per challenge
    assert net.events(alice) == [RegistrationFailed(401, "Unauthorized")]
    registrar.mode = "stale-once"
    registrar.requests.clear()
    alice.register(net.now)
    net.pump()
    assert len(registrar.requests) == 3  # the stale=true challenge earns one more try
    assert net.events(alice) == [RegistrationSucceeded(60)]


def test_register_learns_public_address_from_received_and_rport(net):
    behind_nat = net.add(UAConfig(local_host="192.168.1.20", local_port=15064, username="carol",
                                  domain="example.com", server=REGISTRAR))
    contacts = []

    def registrar(datagram: Datagram) -> list[bytes]:
        req = datagram.message
        contacts.append(req.headers.get("Contact"))
        ok = Response.for_request(req, 200)
        # What a registrar sees of a phone behind a NAT (RFC 3581 filled in).
        via = req.vias[0]
        via.params.update({"received": "203.0.113.7", "rport": "40000"})
        ok.headers.set("Via", str(via))
        ok.headers.add("Contact", f"{req.headers.get('Contact')};expires=300")
        return [ok.serialize()]

    net.attach(REGISTRAR, registrar)
    behind_nat.register(net.now)
    net.pump()
    assert contacts == ["<sip:carol@192.168.1.20:15064>", "<sip:carol@203.0.113.7:40000>"]
    assert net.events(behind_nat) == [RegistrationSucceeded(300)]


def test_register_403_fails(net, alice):
    Registrar(net, challenges="forbidden")
    alice.register(net.now)
    net.pump()
    assert net.events(alice) == [RegistrationFailed(403, "Forbidden")]


class ChallengingCallee:
    """A UAS peer behind a proxy that wants Proxy-Authorization (407) before it answers.

    It also challenges the first BYE with a 401, as some PBXs do.
    """

    def __init__(self, net: Network) -> None:
        self.net = net
        self.verifier = DigestVerifier("example.com", {"alice": "alicepw"}.get)
        self.seen = []
        self.bye_challenged = False
        net.attach(PEER, self.handle)

    def handle(self, datagram: Datagram) -> list[bytes]:
        req = datagram.message
        self.seen.append(req)
        if req.method == "BYE" and not self.bye_challenged:
            self.bye_challenged = True
            challenge = Response.for_request(req, 401)
            challenge.headers.add("WWW-Authenticate", self.verifier.challenge(self.net.now))
            return [challenge.serialize()]
        if req.method != "INVITE":
            return [] if req.method == "ACK" else [Response.for_request(req, 200).serialize()]
        credentials = req.headers.get("Proxy-Authorization")
        if credentials is None or not self.verifier.verify(credentials, "INVITE", self.net.now).ok:
            challenge = Response.for_request(req, 407, to_tag="p1")
            challenge.headers.add("Proxy-Authenticate", self.verifier.challenge(self.net.now))
            return [challenge.serialize()]
        ok = Response.for_request(req, 200, to_tag="p2")
        ok.headers.add("Contact", f"<sip:carol@{PEER[0]}:{PEER[1]}>")
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = ANSWER
        return [ok.serialize()]


def test_invite_answers_407_with_new_cseq_same_call_id(net, alice):
    peer = ChallengingCallee(net)
    call_id = alice.invite(f"sip:carol@{PEER[0]}:{PEER[1]}", OFFER, net.now)
    net.pump()
    first, ack_407, second, ack_200 = peer.seen
    assert ack_407.method == "ACK" and ack_407.vias[0].branch == first.vias[0].branch
    assert second.call_id == first.call_id == call_id
    assert second.cseq == (2, "INVITE") and second.from_tag == first.from_tag
    assert ack_200.method == "ACK" and ack_200.cseq == (2, "ACK")
    assert ack_200.headers.get("Proxy-Authorization") == second.headers.get("Proxy-Authorization")
    assert net.events(alice) == [CallAnswered(call_id, ANSWER)]
    alice.bye(call_id, net.now)
    net.pump()
    first_bye, bye = peer.seen[-2:]
    assert first_bye.cseq == (3, "BYE") and bye.cseq == (4, "BYE")
    assert peer.verifier.verify(bye.headers.get("Authorization"), "BYE", net.now).ok


def test_in_dialog_481_ends_the_call(net, alice, bob):
    call_id = call(net, alice, bob)
    net.drop(request("BYE"))  # bob forgets the call, alice does not hear of it
    bob.bye(call_id, net.now)
    net.pump()
    alice.send_info(call_id, "application/dtmf-relay", b"Signal=1\r\n", net.now)
    net.pump()
    assert net.events(alice) == [CallEnded(call_id, "error", 481)]
    assert alice.state_counts()["calls"] == 0


# --- in-dialog requests -----------------------------------------------------------------------


def test_info_in_dialog(net, alice, bob):
    call_id = call(net, alice, bob)
    alice.send_info(call_id, "application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", net.now)
    net.pump()
    assert net.events(bob) == [InfoReceived(call_id, "application/dtmf-relay",
                                            b"Signal=5\r\nDuration=160\r\n")]
    assert len(net.sent(response(200, "INFO"))) == 1


def test_incoming_refer_is_declined(net, alice, bob):
    call_id = call(net, alice, bob)
    alice.refer(call_id, "sip:carol@127.0.0.1:15070", net.now)
    net.pump()
    assert net.events(alice) == [ReferProgress(call_id, 603, True)]


def raw_caller_dialog(net: Network, bob: UserAgentCore) -> tuple[str, str]:
    """PEER calls bob by hand; returns (Call-ID, bob's To tag) once bob answered and got the ACK."""
    net.attach(PEER, lambda d: [])
    net.inject(sip("""
        INVITE sip:bob@127.0.0.1:15062 SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bKraw1
        Max-Forwards: 70
        From: <sip:carol@127.0.0.1>;tag=c1
        To: <sip:bob@127.0.0.1>
        Call-ID: raw-call
        CSeq: 1 INVITE
        Contact: <sip:carol@127.0.0.1:15070>
        Content-Type: application/sdp
        """, OFFER), PEER, BOB)
    bob.answer("raw-call", ANSWER, net.now)
    net.pump()
    ok = [d.message for d in net.log if d.is_response(200, "INVITE")][-1]
    tag = ok.to_tag
    net.inject(sip(f"""
        ACK sip:bob@127.0.0.1:15062 SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bKraw2
        Max-Forwards: 70
        From: <sip:carol@127.0.0.1>;tag=c1
        To: <sip:bob@127.0.0.1>;tag={tag}
        Call-ID: raw-call
        CSeq: 1 ACK
        """), PEER, BOB)
    assert types(net.events(bob)) == ["IncomingCall", "CallConfirmed"]
    return "raw-call", tag


def reinvite(tag: str, cseq: int, sdp: bytes, branch: str) -> bytes:
    return sip(f"""
        INVITE sip:bob@127.0.0.1:15062 SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:15070;branch={branch}
        Max-Forwards: 70
        From: <sip:carol@127.0.0.1>;tag=c1
        To: <sip:bob@127.0.0.1>;tag={tag}
        Call-ID: raw-call
        CSeq: {cseq} INVITE
        Contact: <sip:carol@127.0.0.1:15070>
        Content-Type: application/sdp
        """, sdp)


def test_reinvite_hold_and_resume_are_answered_through_the_callback(net, bob):
    call_id, tag = raw_caller_dialog(net, bob)
    hold = OFFER + b"a=sendonly\r\n"
    net.inject(reinvite(tag, 2, hold, "z9hG4bKhold"), PEER, BOB)
    answer = [d.message for d in net.log if d.is_response(200, "INVITE")][-1]
    assert answer.cseq == (2, "INVITE") and answer.body.endswith(b"a=recvonly\r\n")
    assert net.events(bob) == [RemoteOfferReceived(call_id, hold)]
    net.inject(sip(f"""
        ACK sip:bob@127.0.0.1:15062 SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bKack2
        From: <sip:carol@127.0.0.1>;tag=c1
        To: <sip:bob@127.0.0.1>;tag={tag}
        Call-ID: raw-call
        CSeq: 2 ACK
        """), PEER, BOB)
    resume = OFFER + b"a=sendrecv\r\n"
    net.inject(reinvite(tag, 3, resume, "z9hG4bKresume"), PEER, BOB)
    answer = [d.message for d in net.log if d.is_response(200, "INVITE")][-1]
    assert answer.cseq == (3, "INVITE") and answer.body.endswith(b"a=sendrecv\r\n")
    assert net.events(bob) == [RemoteOfferReceived(call_id, resume)]


def test_reinvite_refused_with_488_when_no_answer(net):
    bob = net.add(UAConfig(local_port=BOB[1], answer_reinvite=lambda call_id, offer: None))
    call_id, tag = raw_caller_dialog(net, bob)
    net.inject(reinvite(tag, 2, OFFER, "z9hG4bKx"), PEER, BOB)
    assert len(net.sent(response(488, "INVITE"))) == 1
    assert net.events(bob) == []
    assert call_id in bob.call_ids  # the call goes on


def test_refer_progress_from_sipfrag_notifies(net, alice):
    responses = {"REFER": 202}

    def callee(datagram: Datagram) -> list[bytes]:
        req = datagram.message
        if isinstance(req, Response):
            return []
        if req.method == "INVITE":
            ok = Response.for_request(req, 200, to_tag="t9")
            ok.headers.add("Contact", "<sip:carol@127.0.0.1:15070>")
            return [ok.serialize()]
        if req.method in responses:
            refer = Response.for_request(req, responses[req.method])
            return [refer.serialize()] + [notify(req, n, frag, state) for n, frag, state in (
                (1, b"SIP/2.0 100 Trying\r\n", "active;expires=60"),
                (2, b"SIP/2.0 200 OK\r\n", "terminated;reason=noresource"))]
        return []

    def notify(refer, n: int, frag: bytes, state: str) -> bytes:
        return sip(f"""
            NOTIFY sip:alice@127.0.0.1:15061 SIP/2.0
            Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bKn{n}
            Max-Forwards: 70
            From: {refer.headers.get("To")}
            To: {refer.headers.get("From")}
            Call-ID: {refer.call_id}
            CSeq: {n} NOTIFY
            Event: refer
            Subscription-State: {state}
            Contact: <sip:carol@127.0.0.1:15070>
            Content-Type: message/sipfrag;version=2.0
            """, frag)

    net.attach(PEER, callee)
    call_id = alice.invite("sip:carol@127.0.0.1:15070", OFFER, net.now)
    net.pump()
    net.events(alice)
    alice.refer(call_id, "sip:dave@127.0.0.1", net.now)
    net.pump()
    assert net.events(alice) == [ReferProgress(call_id, 202, False), ReferProgress(call_id, 100, False),
                                 ReferProgress(call_id, 200, True)]
    assert len(net.sent(response(200, "NOTIFY"))) == 2
    [refer] = net.sent(request("REFER"))
    assert refer.message.headers.get("Refer-To") == "<sip:dave@127.0.0.1>"


# --- refusals and robustness ------------------------------------------------------------------


def raw(net: Network, text: str, body: bytes = b"") -> list:
    """Send a hand-written request from PEER to bob; the responses bob sent back."""
    net.attach(PEER, lambda d: [])
    before = len(net.log)
    net.inject(sip(text, body), PEER, BOB)
    return [d.message for d in net.log[before:] if d.dst == PEER]


def options(extra: str = "", method: str = "OPTIONS", uri: str = "sip:bob@127.0.0.1:15062",
            branch: str = "z9hG4bKo1") -> str:
    return f"""
        {method} {uri} SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:15070;branch={branch}
        Max-Forwards: 70
        From: <sip:carol@127.0.0.1>;tag=o1
        To: <sip:bob@127.0.0.1>
        Call-ID: call-{branch}
        CSeq: 5 {method}
        Contact: <sip:carol@127.0.0.1:15070>
        {extra}
        """


def test_options_is_answered_with_capabilities(net, bob):
    [ok] = raw(net, options())
    assert ok.status == 200
    assert "INVITE" in ok.headers.get("Allow") and ok.headers.get("Accept") == "application/sdp"
    assert "Supported" in ok.headers
    assert ok.vias[0].params.get("rport") is None  # no rport asked, none given


def test_unknown_method_gets_501_and_disallowed_known_method_405(net, bob):
    [reply] = raw(net, options(method="FROBNICATE"))
    assert reply.status == 501 and "INVITE" in reply.headers.get("Allow")
    [reply] = raw(net, options(method="MESSAGE", branch="z9hG4bKo2"))
    assert reply.status == 405


def test_in_dialog_request_for_unknown_dialog_gets_481(net, bob):
    [reply] = raw(net, options(method="BYE").replace("To: <sip:bob@127.0.0.1>",
                                                     "To: <sip:bob@127.0.0.1>;tag=gone"))
    assert reply.status == 481


def test_unsupported_uri_scheme_gets_416(net, bob):
    [reply] = raw(net, options(uri="http://example.com/x"))
    assert reply.status == 416


def test_unknown_require_gets_420_with_unsupported(net, bob):
    [reply] = raw(net, options("Require: foo, bar"))
    assert reply.status == 420 and reply.headers.get_all("Unsupported") == ["foo", "bar"]


def test_invite_with_non_sdp_body_gets_415_with_accept(net, bob):
    [reply] = raw(net, options("Content-Type: text/plain", method="INVITE"), b"hello")
    assert reply.status == 415 and reply.headers.get("Accept") == "application/sdp"
    assert net.events(bob) == []


def test_max_forwards_zero(net, bob):
    mf0 = options().replace("Max-Forwards: 70", "Max-Forwards: 0")
    assert [r.status for r in raw(net, mf0)] == [200]  # addressed to us: still answered
    other = options(uri="sip:someone@elsewhere.example", branch="z9hG4bKo3")
    assert [r.status for r in raw(net, other.replace("Max-Forwards: 70", "Max-Forwards: 0"))] == [483]


def test_invite_refusing_sdp_answers_gets_406(net, bob):
    [reply] = raw(net, options("Content-Type: application/sdp\nAccept: text/nobodyKnowsThis",
                               method="INVITE"), OFFER)
    assert reply.status == 406 and reply.headers.get("Accept") == "application/sdp"


def test_request_missing_from_to_call_id_still_gets_400(net, bob):
    insufficient = sip("""
        INVITE sip:bob@127.0.0.1:15062 SIP/2.0
        CSeq: 193942 INVITE
        Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bKkdj.insuf
        Content-Type: application/sdp
        """, OFFER)
    net.attach(PEER, lambda d: [])
    net.inject(insufficient, PEER, BOB)
    [reply] = [d for d in net.log if d.dst == PEER]
    assert reply.first_line == "SIP/2.0 400 missing Call-ID header"
    assert b"CSeq: 193942 INVITE\r\n" in reply.data and b"branch=z9hG4bKkdj.insuf" in reply.data


def test_rfc2543_invite_without_contact_is_reached_at_its_from(net, bob):
    no_contact = options("Content-Type: application/sdp", method="INVITE").replace(
        "Contact: <sip:carol@127.0.0.1:15070>", "Subject: no contact").replace(
        "From: <sip:carol@127.0.0.1>", "From: <sip:carol@127.0.0.1:15070>")
    replies = raw(net, no_contact, OFFER)
    assert [r.status for r in replies] == [100, 180]
    [incoming] = net.events(bob)
    bob.answer(incoming.call_id, ANSWER, net.now)
    bob.hangup(incoming.call_id, net.now)
    net.advance(33)  # no ACK will come: BYE after 64*T1, to the From address
    bye = net.sent(request("BYE"))[0]  # then retransmitted: PEER does not answer
    assert bye.dst == PEER and bye.message.uri == "sip:carol@127.0.0.1:15070"


def test_malformed_request_gets_400_and_the_next_one_works(net, bob):
    bad = options().replace("CSeq: 5 OPTIONS", "CSeq: five OPTIONS")
    net.attach(PEER, lambda d: [])
    net.inject(sip(bad), PEER, BOB)
    [reply] = [d for d in net.log if d.dst == PEER]
    # The peer's own (broken) headers are echoed so it can match the answer to what it sent.
    assert reply.first_line == "SIP/2.0 400 bad CSeq 'five OPTIONS'"
    assert b"Call-ID: call-z9hG4bKo1\r\n" in reply.data and b"CSeq: five OPTIONS" in reply.data
    [event] = net.events(bob)
    assert isinstance(event, MessageRejected) and event.addr == PEER
    [ok] = raw(net, options(branch="z9hG4bKo9"))
    assert ok.status == 200


def test_garbage_is_dropped_without_reply(net, bob):
    net.attach(PEER, lambda d: [])
    for junk in (b"\x00\xff" * 50, b"SIP/2.0 200 OK\r\n\r\n", b"INVITE\r\n\r\n", b"\r\n\r\n"):
        net.inject(junk, PEER, BOB)
    assert [d for d in net.log if d.dst == PEER] == []
    assert all(isinstance(e, MessageRejected) for e in net.events(bob))


def test_rfc2543_invite_without_magic_cookie_matches_its_transaction(net, bob):
    old_style = options("Content-Type: application/sdp", method="INVITE", branch="1").replace(
        "Call-ID: call-1", "Call-ID: old-1")
    first = raw(net, old_style, OFFER)
    again = raw(net, old_style, OFFER)  # retransmission: absorbed, last response repeated
    assert [r.status for r in first] == [100, 180] and [r.status for r in again] == [180]
    assert types(net.events(bob)) == ["IncomingCall"]
    bob.reject("old-1", 486, net.now)
    net.pump()
    tag = [d.message for d in net.log if d.is_response(486)][0].to_tag
    ack = old_style.replace("INVITE sip", "ACK sip").replace("5 INVITE", "5 ACK").replace(
        "To: <sip:bob@127.0.0.1>", f"To: <sip:bob@127.0.0.1>;tag={tag}")
    raw(net, ack)
    net.advance(40)
    assert len(net.sent(response(486))) == 1  # the ACK matched: no Timer G retransmissions
    assert bob.state_counts() == ZERO


def test_merged_request_gets_482(net, bob):
    sdp = "Content-Type: application/sdp"
    raw(net, options(sdp, method="INVITE", branch="z9hG4bKm1"), OFFER)
    forked = options(sdp, method="INVITE", branch="z9hG4bKm2").replace("call-z9hG4bKm2", "call-z9hG4bKm1")
    replies = raw(net, forked, OFFER)  # same request, reached us by another path
    assert [r.status for r in replies] == [482]
    assert types(net.events(bob)) == ["IncomingCall"]


def test_response_for_another_host_is_dropped(net, alice):
    stray = sip("""
        SIP/2.0 200 OK
        Via: SIP/2.0/UDP 10.1.1.1:5999;branch=z9hG4bKnope
        From: <sip:a@b>;tag=1
        To: <sip:c@d>;tag=2
        Call-ID: x
        CSeq: 1 OPTIONS
        """)
    net.inject(stray, PEER, ALICE)
    assert types(net.events(alice)) == ["MessageRejected"]
    assert parse_message(stray).status == 200


def test_update_offer_is_answered_in_dialog(net, bob):
    call_id, tag = raw_caller_dialog(net, bob)
    hold = OFFER + b"a=sendonly\r\n"
    replies = raw(net, f"""
        UPDATE sip:bob@127.0.0.1:15062 SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bKupd
        Max-Forwards: 70
        From: <sip:carol@127.0.0.1>;tag=c1
        To: <sip:bob@127.0.0.1>;tag={tag}
        Call-ID: raw-call
        CSeq: 2 UPDATE
        Contact: <sip:carol@127.0.0.1:15071>
        Content-Type: application/sdp
        """, hold)
    [ok] = replies
    assert ok.status == 200 and ok.body.endswith(b"a=recvonly\r\n")
    assert net.events(bob) == [RemoteOfferReceived(call_id, hold)]
    bob.bye(call_id, net.now)
    net.pump()
    [bye] = net.sent(request("BYE"))
    assert bye.dst == ("127.0.0.1", 15071)  # UPDATE refreshed the remote target


def test_uas_copies_record_route_and_routes_its_bye_through_it(net, bob):
    net.attach(PEER, lambda d: [])
    net.inject(sip("""
        INVITE sip:bob@127.0.0.1:15062 SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bKviaproxy
        Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKcaller
        Record-Route: <sip:127.0.0.1:15070;lr>
        Max-Forwards: 69
        From: <sip:carol@example.com>;tag=c7
        To: <sip:bob@example.com>
        Call-ID: rr-call
        CSeq: 10 INVITE
        Contact: <sip:carol@10.9.9.9:5060>
        Content-Type: application/sdp
        """, OFFER), PEER, BOB)
    bob.answer("rr-call", ANSWER, net.now)
    net.pump()
    [ok] = [d.message for d in net.log if d.is_response(200, "INVITE")]
    assert ok.headers.get_all("Record-Route") == ["<sip:127.0.0.1:15070;lr>"]
    assert len(ok.headers.get_all("Via")) == 2
    bob.hangup("rr-call", net.now)  # answered: hangup means BYE, but only after the ACK (15)
    net.pump()
    assert net.sent(request("BYE")) == []
    assert types(net.events(bob)) == ["IncomingCall", "CallEnded"]
    net.inject(sip(f"""
        ACK sip:bob@127.0.0.1:15062 SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bKviaproxy2
        Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKcaller2
        From: <sip:carol@example.com>;tag=c7
        To: {ok.headers.get("To")}
        Call-ID: rr-call
        CSeq: 10 ACK
        """), PEER, BOB)
    [bye] = net.sent(request("BYE"))
    assert bye.dst == PEER  # the proxy, not the caller's Contact
    assert bye.message.uri == "sip:carol@10.9.9.9:5060"
    assert bye.message.headers.get_all("Route") == ["<sip:127.0.0.1:15070;lr>"]


def test_extension_is_called_through_the_server(net, alice):
    seen = []
    net.attach(REGISTRAR, lambda d: seen.append(d.message) or [])
    alice.invite("100", OFFER, net.now)
    net.pump()
    [invite] = seen
    assert invite.uri == "sip:100@example.com" and invite.from_.uri.host == "example.com"


def test_hangup_fits_the_state(net, alice, bob):
    ringing_out = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    bob.hangup(ringing_out, net.now)  # unanswered incoming: 603
    net.pump()
    assert net.events(alice)[-1] == CallEnded(ringing_out, "rejected", 603)
    other = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    alice.hangup(other, net.now)  # unanswered outgoing: CANCEL
    net.pump()
    assert net.events(alice)[-1] == CallEnded(other, "cancelled", 487)
    with pytest.raises(CallError):
        alice.bye(other, net.now)  # gone


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                               max_size=6))
def test_mangled_requests_never_break_the_core(cut, flips):
    net = Network()
    core = net.add(UAConfig(local_port=BOB[1]))
    data = bytearray(sip(options("Content-Type: application/sdp", method="INVITE"), OFFER))
    for position, value in flips:
        if position < len(data):
            data[position] = value
    net.attach(PEER, lambda d: [])
    net.inject(bytes(data[: len(data) - cut]), PEER, BOB)
    net.advance(40)
    for event in net.events(core):
        assert not (isinstance(event, MessageRejected) and "internal error" in event.reason)
    for datagram in net.log:
        if datagram.src == BOB:
            assert datagram.first_line.startswith("SIP/2.0 ")


def test_callee_hanging_up_before_the_ack_sends_bye_after_64_t1_if_ack_never_comes(net, alice, bob):
    net.drop(request("ACK"), count=100)
    call_id = alice.invite("sip:bob@127.0.0.1:15062", OFFER, net.now)
    net.pump()
    bob.answer(call_id, ANSWER, net.now)
    bob.hangup(call_id, net.now)
    net.pump()
    assert net.events(bob)[-1] == CallEnded(call_id, "local_bye", None)
    net.advance(31)
    assert net.sent(request("BYE")) == [] and len(net.sent(response(200, "INVITE"))) > 1
    net.advance(2)
    assert len(net.sent(request("BYE"))) == 1
    assert net.events(bob) == []  # the call had already ended for its owner
    net.settle()
    assert bob.state_counts() == ZERO


def test_outbound_proxy_gets_a_loose_route_and_the_request(net):
    core = net.add(UAConfig(local_port=15065, username="dave", outbound_proxy="sip:127.0.0.1:15070"))
    seen = []
    net.attach(PEER, lambda d: seen.append(d.message) or [])
    core.invite("sip:bob@192.0.2.1", OFFER, net.now)
    net.pump()
    [invite] = seen
    assert invite.uri == "sip:bob@192.0.2.1"
    assert invite.headers.get_all("Route") == ["<sip:127.0.0.1:15070;lr>"]


def test_incoming_call_over_tcp_answers_on_the_connection_without_retransmitting(net, bob):
    net.attach(PEER, lambda d: [])
    net.inject(sip(options("Content-Type: application/sdp", method="INVITE").replace(
        "SIP/2.0/UDP 127.0.0.1:15070", "SIP/2.0/TCP 127.0.0.1:5060")), PEER, BOB, transport="tcp")
    [incoming] = net.events(bob)
    bob.answer(incoming.call_id, ANSWER, net.now)
    net.advance(10)
    replies = [d for d in net.log if d.src == BOB]
    assert [d.first_line.split(" ", 2)[1] for d in replies] == ["100", "180", "200"]
    assert all(d.transport == "tcp" and d.dst == PEER for d in replies)  # the connection, not Via
    assert b"Contact: <sip:bob@127.0.0.1:15062;transport=tcp>" in replies[-1].data
