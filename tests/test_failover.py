"""RFC 3263 4.3 failover in the sans-IO core (in memory, virtual clock), and the SRV ordering and
nameserver parsing of simplesip.aio.locator (pure functions; the DNS lookups themselves are tested
against dnsmasq in tests/peer/test_rfc3263.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from simplesip.aio.locator import parse_nameserver, srv_order
from simplesip.core.config import Target, UAConfig
from simplesip.core.events import (
    CallAnswered,
    CallEnded,
    RegistrationFailed,
    RegistrationSucceeded,
)
from simplesip.core.useragent import UserAgentCore
from tests.helpers.sipmem import ANSWER, OFFER, Datagram, Network

ALICE = ("127.0.0.1", 15161)
FIRST = ("127.0.0.1", 15170)
SECOND = ("127.0.0.1", 15171)
TARGETS = [Target(*FIRST), Target(*SECOND)]


@pytest.fixture
def alice(net: Network) -> UserAgentCore:
    return net.add(UAConfig(local_port=ALICE[1], username="alice", domain="test.example",
                            server=("test.example", 5060), failover_timeout=4.0))


def _reply(status: int, reason: str, to_tag: bool = True):
    """A scripted server: every request gets ``status`` (ACKs get nothing)."""
    def handler(datagram: Datagram) -> list[bytes]:
        message = datagram.message
        if datagram.is_request("ACK"):
            return []
        lines = [f"SIP/2.0 {status} {reason}"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            value = message.headers.get(name)
            if name == "To" and to_tag:
                value += ";tag=srv"
            lines.append(f"{name}: {value}")
        lines.append("Contact: <sip:srv@127.0.0.1>")
        body = ANSWER if status == 200 and message.method == "INVITE" else b""
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append("Expires: 60" if message.method == "REGISTER" else "Server: test")
        head = "\r\n".join(lines)
        return [f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body]
    return handler


def _sent_to(net: Network, dest, method: str) -> list[Datagram]:
    return [d for d in net.log if d.dst == dest and d.is_request(method)]


def test_invite_moves_on_after_a_503_with_a_new_branch_and_the_same_cseq(net, alice):
    net.attach(FIRST, _reply(503, "Service Unavailable"))
    net.attach(SECOND, _reply(200, "OK"))
    call_id = alice.invite("sip:ivr@test.example", OFFER, net.now, targets=TARGETS)
    net.pump()
    first, second = _sent_to(net, FIRST, "INVITE")[0], _sent_to(net, SECOND, "INVITE")[0]
    assert first.message.vias[0].branch != second.message.vias[0].branch
    assert first.message.cseq == second.message.cseq
    assert [type(e) for e in net.events(alice)] == [CallAnswered]
    assert _sent_to(net, FIRST, "ACK"), "the 503 is acknowledged"
    assert alice.first_hop(call_id) == SECOND


def test_invite_moves_on_when_the_first_target_is_unreachable(net, alice):
    net.attach(SECOND, _reply(200, "OK"))
    net.drop(lambda d: d.dst == FIRST, count=100)
    alice.invite("sip:ivr@test.example", OFFER, net.now, targets=TARGETS)
    net.pump()
    assert not _sent_to(net, SECOND, "INVITE")
    alice.transport_error(FIRST, net.now)  # what the shell reports on ICMP port unreachable
    net.pump()
    assert len(_sent_to(net, SECOND, "INVITE")) == 1
    assert [type(e) for e in net.events(alice)] == [CallAnswered]


def test_a_silent_target_is_left_after_the_failover_timeout(net, alice):
    net.attach(SECOND, _reply(200, "OK"))
    net.drop(lambda d: d.dst == FIRST, count=100)
    alice.invite("sip:ivr@test.example", OFFER, net.now, targets=TARGETS)
    net.advance(3.9)
    assert not _sent_to(net, SECOND, "INVITE")
    net.advance(0.2)
    assert len(_sent_to(net, SECOND, "INVITE")) == 1
    assert [type(e) for e in net.events(alice)] == [CallAnswered]
    net.advance(60)
    assert len(_sent_to(net, FIRST, "INVITE")) <= 4  # its retransmissions stopped with the failover


def test_the_last_target_unreachable_ends_the_call_with_503(net, alice):
    net.drop(lambda d: True, count=100)
    call_id = alice.invite("sip:ivr@test.example", OFFER, net.now, targets=[Target(*FIRST)])
    net.pump()
    alice.transport_error(FIRST, net.now)
    net.pump()
    ended = net.events(alice)
    assert [type(e) for e in ended] == [CallEnded]
    assert (ended[0].call_id, ended[0].reason, ended[0].status) == (call_id, "error", 503)


def test_a_provisional_response_pins_the_target(net, alice):
    """Once a server has answered at all, the request is its: no failover on a later timeout."""
    def ringing(datagram: Datagram) -> list[bytes]:
        return _reply(180, "Ringing")(datagram) if datagram.is_request("INVITE") else []
    net.attach(FIRST, ringing)
    alice.invite("sip:ivr@test.example", OFFER, net.now, targets=TARGETS)
    net.advance(10)
    assert not _sent_to(net, SECOND, "INVITE")


def test_registration_fails_over_and_each_refresh_starts_at_the_top(net, alice):
    net.attach(FIRST, _reply(503, "Service Unavailable", to_tag=False))
    net.attach(SECOND, _reply(200, "OK", to_tag=False))
    alice.register(net.now, expires=60, targets=TARGETS)
    net.pump()
    assert [type(e) for e in net.events(alice)] == [RegistrationSucceeded]
    net.attach(FIRST, _reply(200, "OK", to_tag=False))  # the first server is healthy again
    net.advance(31)  # the refresh is due at half of 60 s
    assert len(_sent_to(net, FIRST, "REGISTER")) == 2
    assert len(_sent_to(net, SECOND, "REGISTER")) == 1
    assert [type(e) for e in net.events(alice)] == [RegistrationSucceeded]


def test_registration_with_every_target_unreachable_fails_with_503(net, alice):
    net.drop(lambda d: True, count=100)
    alice.register(net.now, expires=60, targets=TARGETS)
    net.pump()
    alice.transport_error(FIRST, net.now)
    alice.transport_error(SECOND, net.now)
    net.pump()
    failed = net.events(alice)
    assert [type(e) for e in failed] == [RegistrationFailed]
    assert failed[0].status == 503 and "unreachable" in failed[0].reason


def test_a_failover_may_change_the_transport(net, alice):
    net.attach(FIRST, _reply(503, "Service Unavailable"))
    net.attach(SECOND, _reply(200, "OK"))
    alice.invite("sip:ivr@test.example", OFFER, net.now,
                 targets=[Target(*FIRST), Target(*SECOND, transport="tcp")])
    net.pump()
    second = _sent_to(net, SECOND, "INVITE")[0]
    assert second.transport == "tcp" and second.message.vias[0].transport == "TCP"
    assert [d.transport for d in net.log if d.is_request("ACK")] == ["udp", "tcp"]  # 503's, 200's


def test_hop_uri_names_what_the_shell_must_resolve(net, alice):
    assert alice.hop_uri("100") is None  # our domain: the configured server
    assert alice.hop_uri("sip:bob@other.example;transport=tcp") == "sip:bob@other.example;transport=tcp"
    proxied = net.add(UAConfig(local_port=15162, outbound_proxy="proxy.example"))
    assert proxied.hop_uri("sip:bob@other.example") == "sip:proxy.example"


# --- SRV ordering (RFC 2782) and nameserver syntax ---------------------------------------------

def test_srv_order_is_by_priority_then_weighted():
    records = [(20, 0, 3, "c"), (10, 90, 1, "a"), (10, 10, 2, "b")]
    rng = random.Random(1)
    firsts = Counter(srv_order(records, rng)[0][1] for _ in range(2000))
    assert set(firsts) == {"a", "b"}
    assert 0.85 < firsts["a"] / 2000 < 0.95  # weight 90 of 100
    for _ in range(50):
        assert srv_order(records, rng)[-1] == (3, "c")  # priority 20 only after every 10


def test_srv_order_gives_zero_weight_records_a_turn():
    order = srv_order([(10, 0, 1, "a"), (10, 0, 2, "b")], random.Random(3))
    assert sorted(order) == [(1, "a"), (2, "b")]


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.1", ("192.0.2.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:5353", ("::1", 5353)),
    ("::1", ("::1", 53)),
])
def test_parse_nameserver(text, expected):
    assert parse_nameserver(text) == expected


def test_a_nameserver_must_be_an_address():
    with pytest.raises(ValueError):
        parse_nameserver("dns.example:53")


async def test_without_a_working_dns_server_names_still_resolve_through_the_hosts_file():
    """NAPTR/SRV cannot be asked (nothing listens at the nameserver): A via /etc/hosts."""
    from simplesip.aio.locator import ServerLocator
    from tests.helpers.net import free_port

    locator = ServerLocator([f"127.0.0.1:{free_port()}"], timeout=0.3)
    assert await locator.locate("sip:bob@localhost") == [Target("127.0.0.1", 5060, "udp")]
    assert await locator.locate("sip:bob@localhost:5070;transport=tcp") == [
        Target("127.0.0.1", 5070, "tcp")]
