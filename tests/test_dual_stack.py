"""Dual stack: SIP listeners on ``::`` take IPv4 callers too (UDP, TCP, TLS), and an IPv4 peer is
known by its IPv4 address everywhere (``::ffff:a.b.c.d`` from the kernel is unmapped): the call's
source, Via ``received``, the connection it is answered on; each peer is told an address of ours
in its own family (Contact, Via, SDP ``c=``), and the RTP socket follows the caller's ``c=``."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from simplesip import Call, Endpoint, EndpointConfig
from simplesip.aio.addresses import (
    advertised_for,
    is_dual_stack,
    peer_address,
    socket_address,
    unmap,
)
from simplesip.core.config import UAConfig
from simplesip.core.message_factory import MessageFactory
from simplesip.wire.uri import NameAddr
from tests.helpers.certs import CertSet, make_test_pki


@pytest.mark.parametrize("host, plain", [
    ("::ffff:127.0.0.1", "127.0.0.1"), ("::FFFF:192.0.2.7", "192.0.2.7"), ("::ffff:7f00:1", "127.0.0.1"),
    ("::1", "::1"), ("2001:db8::ffff:1", "2001:db8::ffff:1"), ("127.0.0.1", "127.0.0.1"),
    ("::ffff:not-an-address", "::ffff:not-an-address"), ("example.com", "example.com"),
])
def test_unmap(host: str, plain: str) -> None:
    assert unmap(host) == plain


def test_socket_addresses_are_unmapped_and_mapped_back() -> None:
    assert peer_address(("::ffff:10.1.2.3", 5060, 0, 0)) == ("10.1.2.3", 5060)
    assert peer_address(("::1", 5060, 0, 0)) == ("::1", 5060)
    assert socket_address("10.1.2.3", 5060, socket.AF_INET6) == ("::ffff:10.1.2.3", 5060)
    assert socket_address("::1", 5060, socket.AF_INET6) == ("::1", 5060)
    assert socket_address("10.1.2.3", 5060, socket.AF_INET) == ("10.1.2.3", 5060)
    assert is_dual_stack("::") and is_dual_stack("[::]")
    assert not is_dual_stack("::1") and not is_dual_stack("0.0.0.0") and not is_dual_stack("host")


def test_a_wildcard_tells_each_peer_an_address_in_its_family() -> None:
    assert advertised_for("::", "127.0.0.1") == "127.0.0.1"
    assert advertised_for("::", "::ffff:127.0.0.1") == "127.0.0.1"
    assert advertised_for("::", "::1") == "::1"
    assert advertised_for("0.0.0.0", "127.0.0.1") == "127.0.0.1"
    assert advertised_for("::1", "127.0.0.1") == "::1"  # not a wildcard: the host itself
    assert advertised_for("192.0.2.20", "::1") == "192.0.2.20"


def test_the_factory_writes_the_host_chosen_for_the_peer() -> None:
    chosen = {"127.0.0.1": "127.0.0.1", "::1": "::1"}
    factory = MessageFactory(UAConfig(local_host="::", advertised_host="2001:db8::20", local_port=5060,
                                      username="ivr", advertised_host_for=chosen.__getitem__))
    assert factory.contact("udp", peer="127.0.0.1") == "<sip:ivr@127.0.0.1:5060>"
    assert factory.contact("tcp", peer="::1") == "<sip:ivr@[::1]:5060;transport=tcp>"
    assert factory.contact("udp") == "<sip:ivr@[2001:db8::20]:5060>"  # no peer known
    assert factory.via("udp", "z9hG4bKa", "127.0.0.1").startswith("SIP/2.0/UDP 127.0.0.1:5060;")
    request = factory.new_request("INVITE", "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>", "t", "c", 1,
                                  "udp", peer="127.0.0.1")
    assert NameAddr.parse(request.headers.get("Contact")).uri.host == "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertSet:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _dual_stack_server(pki: CertSet, advertise: str | None = None) -> Endpoint:
    return Endpoint(EndpointConfig(
        local_host="::", advertised_host=advertise, sip_port=0, tls_port=0, transports=("udp", "tcp", "tls"), username="ivr",
        tls_cert_file=pki.cert("server"), tls_key_file=pki.key("server"),
        rtp_port_range=(40000, 49000), dns_srv=False))


async def _until(predicate, timeout: float = 5.0, message: str = "condition not met in time") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_ipv4_and_ipv6_callers_reach_one_listener_on_the_ipv6_wildcard(pki, transport) -> None:
    server = _dual_stack_server(pki)
    incoming: list[Call] = []
    heard: dict[str, int] = {}

    async def on_call(call: Call) -> None:
        incoming.append(call)
        host = call.source[0]
        heard[host] = 0

        def count(frame: bytes, host: str = host) -> None:
            heard[host] += len(frame)
        call.on_audio = count
        await call.answer()

    server.on_incoming_call = on_call
    async with server:
        port = server.tls_port if transport == "tls" else server.local_address[1]
        for host, uri_host in (("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")):
            caller = Endpoint(EndpointConfig(local_host=host, sip_port=0, tls_port=0, transports=("udp", "tcp", "tls"),
                                             transport=transport, username="alice", tls_ca_file=pki.ca,
                                             tls_cert_file=pki.cert("server"), tls_key_file=pki.key("server"),
                                             rtp_port_range=(40000, 49000), dns_srv=False))
            async with caller:
                call = await asyncio.wait_for(
                    caller.call(f"sip:ivr@{uri_host}:{port};transport={transport}"), 10)
                remote = incoming[-1]
                # The caller is known by its own address: never ::ffff:127.0.0.1.
                assert remote.source is not None and remote.source[0] == host
                assert remote.headers.get("Via").split()[1].startswith(uri_host)
                # It is told an address of ours in its family, for SIP and for RTP.
                assert call.remote_rtp is not None and call.remote_rtp[0] == host
                call.queue_pcm(b"\x10\x20" * 4000)
                await _until(lambda: heard.get(host, 0) >= 4000, message=f"no audio from {host}")
                await call.hangup()
                await asyncio.wait_for(remote.ended.wait(), 5)
                assert remote.end_reason == "remote_bye"
    assert [c.source[0] for c in incoming] == ["127.0.0.1", "::1"]


@pytest.mark.parametrize("advertise", [None, "127.0.0.1"])
async def test_an_ipv4_invite_to_the_ipv6_wildcard_gets_ipv4_everywhere(pki, advertise) -> None:
    """Raw datagrams: the 200 carries ``received=127.0.0.1`` (unmapped), an IPv4 Contact and
    ``c=IN IP4``, and the IVR's RTP reaches an IPv4 socket from the first packet; also with an
    IPv4 ``advertised_host`` (the RTP socket is IPv4 then too, not the listener's ``::``)."""
    loop = asyncio.get_running_loop()
    server = _dual_stack_server(pki, advertise)
    server.on_incoming_call = lambda call: asyncio.ensure_future(call.answer())
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind(("127.0.0.1", 0))
    sip.setblocking(False)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    try:
        async with server:
            port = server.local_address[1]
            sdp = (f"v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                   f"m=audio {rtp.getsockname()[1]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
            # The Via names another host, so the 200 must say where the INVITE really came from.
            invite = (f"INVITE sip:ivr@127.0.0.1:{port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 192.0.2.99:5999;branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
                      f"Max-Forwards: 70\r\nFrom: <sip:peer@192.0.2.99>;tag=p1\r\nTo: <sip:ivr@127.0.0.1>\r\n"
                      f"Call-ID: {uuid.uuid4().hex}@peer\r\nCSeq: 1 INVITE\r\n"
                      f"Contact: <sip:peer@127.0.0.1:{sip.getsockname()[1]}>\r\n"
                      f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
            await loop.sock_sendto(sip, invite, ("127.0.0.1", port))
            while True:
                data = await asyncio.wait_for(loop.sock_recv(sip, 65535), 5)
                if data.startswith(b"SIP/2.0 200"):
                    break
            text = data.decode()
            assert f";received=127.0.0.1;rport={sip.getsockname()[1]}" in text, text
            assert "ffff" not in text.lower(), text
            assert f"Contact: <sip:ivr@127.0.0.1:{port}>" in text, text
            assert "c=IN IP4 127.0.0.1" in text, text
            packet, source = await asyncio.wait_for(loop.sock_recvfrom(rtp, 2048), 5)
            assert packet[0] >> 6 == 2 and source[0] == "127.0.0.1"
            [call] = list(server.calls.values())
            assert call.source == ("127.0.0.1", sip.getsockname()[1])
    finally:
        sip.close()
        rtp.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_dual_stack_endpoint_calls_an_ipv4_peer_in_ipv4(pki, transport) -> None:
    """Outbound from ``::``: the INVITE's Via and Contact and the offer's ``c=`` name our IPv4
    address on the route to the callee, and the RTP socket is IPv4."""
    server = _dual_stack_server(pki)
    callee = Endpoint(EndpointConfig(local_host="127.0.0.1", sip_port=0, transports=(transport,),
                                     rtp_port_range=(40000, 49000), dns_srv=False))
    incoming: list[Call] = []
    heard: list[bytes] = []

    async def on_call(call: Call) -> None:
        incoming.append(call)
        call.on_audio = heard.append
        await call.answer()

    callee.on_incoming_call = on_call
    async with server, callee:
        port = callee.local_address[1]
        call = await asyncio.wait_for(server.call(f"sip:bob@127.0.0.1:{port};transport={transport}"), 10)
        (remote,) = incoming
        assert remote.headers.get("Via").split()[1].startswith("127.0.0.1:")
        assert NameAddr.parse(remote.headers.get("Contact")).uri.host == "127.0.0.1"
        assert remote.remote_rtp is not None and remote.remote_rtp[0] == "127.0.0.1"  # our offer's c=
        assert remote.source is not None and remote.source[0] == "127.0.0.1"
        call.queue_pcm(b"\x10\x20" * 4000)
        await _until(lambda: sum(map(len, heard)) >= 4000, message="no audio from the dual-stack caller")
        await remote.hangup()  # the BYE goes to our IPv4 Contact
        await asyncio.wait_for(call.ended.wait(), 5)
        assert call.end_reason == "remote_bye"
