"""3xx recursion for calls we place (RFC 3261 8.1.3.4), in memory: Contacts by q, the same
Call-ID with the next CSeq, loop protection and the redirect limit."""

from __future__ import annotations

from simplesip.core.config import UAConfig
from simplesip.core.events import CallAnswered, CallEnded, CallRedirected
from simplesip.core.redirects import redirect_targets
from simplesip.core.useragent import UserAgentCore
from simplesip.wire.message import parse_message
from tests.helpers.sipmem import ANSWER, OFFER, Datagram, Network, sip

ALICE = ("127.0.0.1", 15461)
REDIRECTOR = ("127.0.0.1", 15462)
CAROL = ("127.0.0.1", 15463)
DAVE = ("127.0.0.1", 15464)


def _reply(status: int, reason: str, *extra: str):
    def handler(datagram: Datagram) -> list[bytes]:
        if datagram.is_request("ACK"):
            return []
        message = datagram.message
        lines = [f"SIP/2.0 {status} {reason}"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            value = message.headers.get(name)
            lines.append(f"{name}: {value}{';tag=x' if name == 'To' else ''}")
        lines += list(extra)
        body = ANSWER if status == 200 else b""
        if body:
            lines.append("Content-Type: application/sdp")
        head = "\r\n".join(lines)
        return [f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body]
    return handler


def _alice(net: Network, **options) -> UserAgentCore:
    return net.add(UAConfig(local_port=ALICE[1], username="alice", **options))


def _follow(net: Network, alice: UserAgentCore) -> list:
    """Answer every CallRedirected as a shell without DNS would; the events seen."""
    seen = []
    for _ in range(20):
        events = net.events(alice)
        seen += events
        redirects = [e for e in events if isinstance(e, CallRedirected)]
        if not redirects:
            return seen
        for event in redirects:
            alice.follow_redirect(event.call_id, None, net.now)
        net.pump()
    return seen


def test_a_302_is_followed_to_the_best_contact_with_the_same_call_id(net):
    net.attach(REDIRECTOR, _reply(302, "Moved Temporarily",
                                  "Contact: <sip:carol@127.0.0.1:15463>;q=0.5, <sip:dave@127.0.0.1:15464>;q=0.9"))
    net.attach(DAVE, _reply(200, "OK", "Contact: <sip:dave@127.0.0.1:15464>"))
    alice = _alice(net)
    call_id = alice.invite("sip:bob@127.0.0.1:15462", OFFER, net.now)
    net.pump()
    events = _follow(net, alice)
    assert CallRedirected(call_id, "sip:dave@127.0.0.1:15464") in events
    assert isinstance(events[-1], CallAnswered)
    invites = [d.message for d in net.log if d.is_request("INVITE")]
    assert [(m.uri, m.cseq[0], m.call_id) for m in invites] == [
        ("sip:bob@127.0.0.1:15462", 1, call_id), ("sip:dave@127.0.0.1:15464", 2, call_id)]
    assert invites[0].vias[0].branch != invites[1].vias[0].branch
    assert invites[1].headers.get("To") == invites[0].headers.get("To")


def test_the_next_contact_is_tried_when_the_first_fails(net):
    net.attach(REDIRECTOR, _reply(302, "Moved Temporarily",
                                  "Contact: <sip:carol@127.0.0.1:15463>, <sip:dave@127.0.0.1:15464>;q=0.1"))
    net.attach(CAROL, _reply(486, "Busy Here"))
    net.attach(DAVE, _reply(200, "OK", "Contact: <sip:dave@127.0.0.1:15464>"))
    alice = _alice(net)
    alice.invite("sip:bob@127.0.0.1:15462", OFFER, net.now)
    net.pump()
    events = _follow(net, alice)
    assert [e.uri for e in events if isinstance(e, CallRedirected)] == [
        "sip:carol@127.0.0.1:15463", "sip:dave@127.0.0.1:15464"]
    assert isinstance(events[-1], CallAnswered)


def test_a_redirect_loop_ends_the_call_with_the_3xx(net):
    # The redirector sends us to itself (with other parameters) and to carol, who sends us back.
    net.attach(REDIRECTOR, _reply(302, "Moved", "Contact: <sip:bob@127.0.0.1:15462;x=1>, <sip:carol@127.0.0.1:15463>"))
    net.attach(CAROL, _reply(302, "Moved", "Contact: <sip:bob@127.0.0.1:15462>"))
    alice = _alice(net)
    call_id = alice.invite("sip:bob@127.0.0.1:15462", OFFER, net.now)
    net.pump()
    events = _follow(net, alice)
    assert len([d for d in net.log if d.is_request("INVITE")]) == 2
    assert events[-1] == CallEnded(call_id, "rejected", 302)


def test_max_redirects_zero_makes_a_3xx_final(net):
    net.attach(REDIRECTOR, _reply(302, "Moved", "Contact: <sip:dave@127.0.0.1:15464>"))
    alice = _alice(net, max_redirects=0)
    call_id = alice.invite("sip:bob@127.0.0.1:15462", OFFER, net.now)
    net.pump()
    assert net.events(alice)[-1] == CallEnded(call_id, "rejected", 302)


def test_an_unlocatable_target_moves_on_and_then_ends(net):
    net.attach(REDIRECTOR, _reply(302, "Moved", "Contact: <sip:carol@nowhere.invalid>"))
    alice = _alice(net)
    call_id = alice.invite("sip:bob@127.0.0.1:15462", OFFER, net.now)
    net.pump()
    redirected = [e for e in net.events(alice) if isinstance(e, CallRedirected)]
    alice.follow_redirect(redirected[0].call_id, [], net.now)  # the shell found no address
    net.pump()
    assert net.events(alice)[-1] == CallEnded(call_id, "rejected", 302)


def test_contacts_ranked_by_q_skipping_other_schemes():
    message = parse_message(sip("""
        SIP/2.0 300 Multiple Choices
        Via: SIP/2.0/UDP h;branch=z9hG4bK-x
        From: <sip:a@h>;tag=1
        To: <sip:b@h>;tag=2
        Call-ID: c
        CSeq: 1 INVITE
        Contact: <sip:low@h>;q=0.1, <tel:+4930123>;q=1.0, <sip:plain@h>
        Contact: <sip:high@h>;q=0.7
    """))
    assert redirect_targets(message) == ["sip:plain@h", "sip:high@h", "sip:low@h"]


def test_cancel_while_a_redirect_is_being_located(net):
    net.attach(REDIRECTOR, _reply(302, "Moved", "Contact: <sip:dave@127.0.0.1:15464>"))
    alice = _alice(net)
    call_id = alice.invite("sip:bob@127.0.0.1:15462", OFFER, net.now)
    net.pump()
    net.events(alice)
    alice.cancel(call_id, net.now)
    alice.follow_redirect(call_id, None, net.now)
    net.pump()
    assert net.events(alice)[-1] == CallEnded(call_id, "cancelled", 302)
    assert not [d for d in net.log if d.is_request("INVITE") and d.dst == DAVE]
    assert not [d for d in net.log if d.is_request("CANCEL")]
