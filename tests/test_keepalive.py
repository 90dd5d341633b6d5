"""CRLF keep-alives (RFC 5626 4.4.1): sent to the registrar while registered (in memory), and the
TCP transport answering a ping with a pong and counting the pongs it gets (real sockets)."""

from __future__ import annotations

import asyncio

from simplesip.aio.transport import SipTransport
from simplesip.core.config import UAConfig
from tests.helpers.sipmem import Datagram, Network

ALICE = ("127.0.0.1", 15561)
REGISTRAR = ("127.0.0.1", 15580)


def _registrar(datagram: Datagram) -> list[bytes]:
    if not datagram.data.strip():
        return []
    message = datagram.message
    lines = ["SIP/2.0 200 OK"] + [f"{name}: {message.headers.get(name)}"
                                  for name in ("Via", "From", "To", "Call-ID", "CSeq")]
    lines += ["Expires: 600"]
    return [("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()]


def _pings(net: Network) -> list[Datagram]:
    return [d for d in net.log if d.data == b"\r\n\r\n"]


def test_keepalives_go_to_the_registrar_while_registered(net):
    net.attach(REGISTRAR, _registrar)
    alice = net.add(UAConfig(local_port=ALICE[1], username="alice", server=REGISTRAR,
                             keepalive_interval=30))
    alice.register(net.now, expires=600)
    net.pump()
    net.advance(29)
    assert _pings(net) == []
    net.advance(2)
    assert [(d.dst, d.transport) for d in _pings(net)] == [(REGISTRAR, "udp")]
    net.advance(60)
    assert len(_pings(net)) == 3
    alice.unregister(net.now)
    net.pump()
    net.advance(120)
    assert len(_pings(net)) == 3  # none once unregistered


def test_no_keepalives_when_turned_off(net):
    net.attach(REGISTRAR, _registrar)
    alice = net.add(UAConfig(local_port=ALICE[1], username="alice", server=REGISTRAR,
                             keepalive_interval=0))
    alice.register(net.now, expires=600)
    net.advance(300)
    assert _pings(net) == []


async def test_tcp_ping_gets_a_pong_and_pongs_are_counted():
    transport = SipTransport("127.0.0.1", 0, lambda *args: None, transports=("tcp",))
    await transport.start()
    try:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(*transport.local_address)
        writer.write(b"\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        writer.write(b"\r\n")  # a pong to a ping of ours
        await writer.drain()
        deadline = loop.time() + 2
        while transport.keepalive_pongs < 1 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert transport.keepalive_pongs == 1
        writer.close()
    finally:
        await transport.close()
