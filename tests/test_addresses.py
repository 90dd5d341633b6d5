"""What a wildcard-bound endpoint advertises: a routable address of this host, never 0.0.0.0/::."""

from __future__ import annotations

import asyncio
import socket

import pytest

from simplesip import Call, Endpoint, EndpointConfig
from simplesip.aio.addresses import advertised_address, is_wildcard, route_source


@pytest.mark.parametrize("host, wildcard", [("0.0.0.0", True), ("::", True), ("[::]", True), ("127.0.0.1", False),
                                            ("::1", False), ("example.com", False)])
def test_is_wildcard(host, wildcard) -> None:
    assert is_wildcard(host) is wildcard


def test_a_wildcard_advertises_an_address_this_host_owns() -> None:
    for wildcard, family in (("0.0.0.0", socket.AF_INET), ("::", socket.AF_INET6)):
        address = advertised_address(wildcard)
        assert not is_wildcard(address)
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))  # only an address of this host can be bound
    assert advertised_address("127.0.0.1") == "127.0.0.1"
    assert route_source("127.0.0.1") == "127.0.0.1"


async def test_an_endpoint_on_0_0_0_0_tells_its_peer_a_real_address_and_audio_flows() -> None:
    server = Endpoint(EndpointConfig(local_host="0.0.0.0", sip_port=0, transports=("udp",),
                                     rtp_port_range=(40000, 49000)))
    caller = Endpoint(EndpointConfig(sip_port=0, transports=("udp",), rtp_port_range=(40000, 49000)))
    await server.start()
    await caller.start()
    heard: list[bytes] = []

    async def on_call(call: Call) -> None:
        call.on_audio = heard.append
        await call.answer()

    server.on_incoming_call = on_call
    try:
        assert server.advertised_host == advertised_address("0.0.0.0")
        call = await asyncio.wait_for(caller.call(f"sip:ivr@127.0.0.1:{server.local_address[1]}"), 5)
        # Its SDP c= line: the address of ours on the route to this caller (the loopback), not
        # the default route's (advertised_host, used where no peer is known).
        assert call.remote_rtp is not None and call.remote_rtp[0] == route_source("127.0.0.1") == "127.0.0.1"
        call.queue_pcm(b"\x10\x20" * 4000)
        deadline = asyncio.get_running_loop().time() + 5
        while sum(map(len, heard)) < 4000:
            assert asyncio.get_running_loop().time() < deadline, "no audio reached the wildcard endpoint"
            await asyncio.sleep(0.02)
        await call.hangup()
    finally:
        await caller.stop()
        await server.stop()
