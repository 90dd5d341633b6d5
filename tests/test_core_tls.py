"""The sans-IO core over TLS: which requests go over TLS, what Via and Contact say (the TLS
port; sips: where RFC 3261 8.1.1.8 wants it), and TLS being reliable (no retransmissions)."""

from __future__ import annotations

import pytest

from simplesip.core.config import UAConfig, uri_transport
from simplesip.core.useragent import UserAgentCore
from simplesip.wire.headers import Headers
from simplesip.wire.message import Request, Response, parse_message

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def _core(**kw) -> UserAgentCore:
    return UserAgentCore(UAConfig(local_host="127.0.0.1", local_port=5060, tls_port=5071, username="alice",
                                  session_expires=0, **kw))


@pytest.mark.parametrize("uri, default, expected", [
    ("sips:bob@example.com", "udp", "tls"),
    ("SIPS:bob@example.com;transport=tcp", "udp", "tls"),
    ("sip:bob@example.com;transport=tls", "udp", "tls"),
    ("<sip:bob@example.com;transport=TCP>", "udp", "tcp"),
    ("sip:bob@example.com", "tcp", "tcp"),
    ("sip:bob@example.com?X=;transport=tls", "udp", "udp"),  # a header, not a parameter
])
def test_uri_transport(uri, default, expected):
    assert uri_transport(uri, default) == expected


@pytest.mark.parametrize("target, contact", [
    ("sips:bob@127.0.0.1:5081", "<sips:alice@127.0.0.1:5071>"),
    ("sip:bob@127.0.0.1:5081;transport=tls", "<sip:alice@127.0.0.1:5071;transport=tls>"),
])
def test_an_invite_to_a_tls_target(target, contact):
    core = _core()
    core.invite(target, SDP, 0.0)
    [(data, dest, transport)] = core.datagrams_to_send()
    request = parse_message(data)
    assert isinstance(request, Request) and transport == "tls" and dest == ("127.0.0.1", 5081)
    assert request.headers.get("Via").startswith("SIP/2.0/TLS 127.0.0.1:5071;branch=")
    assert request.headers.get("Contact") == contact
    core.handle_timer(40.0)  # reliable: Timer A never retransmits; Timer B ends it at 64*T1
    assert [d for d in core.datagrams_to_send() if d[0].startswith(b"INVITE")] == []


def test_sips_default_port_and_a_response_on_the_tls_via_is_ours():
    core = _core()
    call_id = core.invite("sips:bob@127.0.0.1", SDP, 0.0)
    [(data, dest, _)] = core.datagrams_to_send()
    assert dest == ("127.0.0.1", 5061)
    invite = parse_message(data)
    headers = Headers([(name, value) for name, value in invite.headers.items()
                       if name in ("Via", "From", "Call-ID", "CSeq")])
    headers.add("To", invite.headers.get("To") + ";tag=x")
    ringing = Response(180, "Ringing", headers)
    core.receive(ringing.serialize(), dest, 0.1, "tls")
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    assert any(getattr(e, "call_id", None) == call_id and getattr(e, "status", None) == 180 for e in events)


def test_an_incoming_call_over_tls_is_answered_with_a_tls_contact():
    core = _core(auto_ringing=True)
    invite = (
        "INVITE sip:alice@127.0.0.1:5071;transport=tls SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 127.0.0.1:40000;branch=z9hG4bKabc;rport\r\n"
        "From: <sip:bob@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: c1\r\n"
        "CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5081;transport=tls>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP
    core.receive(invite, ("127.0.0.1", 40000), 0.0, "tls")
    sent = core.datagrams_to_send()
    assert all(transport == "tls" and dest == ("127.0.0.1", 40000) for _, dest, transport in sent)
    ringing = [parse_message(d) for d, _, _ in sent if d.startswith(b"SIP/2.0 180")]
    assert ringing[0].headers.get("Contact") == "<sip:alice@127.0.0.1:5071;transport=tls>"


def test_tls_is_a_valid_transport_and_others_are_not():
    assert UAConfig(transport="tls").transport == "tls"
    with pytest.raises(ValueError, match="udp, tcp, tls"):
        UAConfig(transport="sctp")
