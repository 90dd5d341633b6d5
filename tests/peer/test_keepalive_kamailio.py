"""CRLF keep-alives against Kamailio over TCP: registered, we ping (double CRLF) and Kamailio
answers each ping with a pong (RFC 5626 4.4.1), which the Endpoint counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from simplesip import Endpoint, EndpointConfig
from tests.helpers.peers import KamailioRunner

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]


async def test_kamailio_answers_our_tcp_keepalives(tmp_path: Path):
    with KamailioRunner(tmp_path, tcp=True) as kamailio:
        endpoint = Endpoint(EndpointConfig(
            sip_port=0, rtp_port_range=(40000, 49000), username="alice", password="secret",
            server="127.0.0.1", server_port=kamailio.port, transport="tcp",
            keepalive_interval=0.3))
        async with endpoint:
            await endpoint.register()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while endpoint.keepalive_pongs < 3 and loop.time() < deadline:
                await asyncio.sleep(0.05)
            assert endpoint.keepalive_pongs >= 3, kamailio.log()[-2000:]
