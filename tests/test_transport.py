"""The asyncio SIP transports over real loopback sockets: UDP, TCP framing and reuse, idle close,
ICMP unreachable."""

from __future__ import annotations

import asyncio
import socket

import pytest

from simplesip.aio.transport import MAX_MESSAGE_SIZE, SipTransport, frame_stream
from tests.helpers.net import free_port
from tests.helpers.waiting import wait_for

OPTIONS = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n"
           b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nl: 5\r\n\r\nhello")


def test_frame_stream_splits_pipelined_messages_and_keeps_partial_tail():
    buf = bytearray(b"\r\n\r\n" + OPTIONS + OPTIONS + OPTIONS[:30])
    assert frame_stream(buf) == [OPTIONS, OPTIONS]
    assert bytes(buf) == OPTIONS[:30]
    buf += OPTIONS[30:]
    assert frame_stream(buf) == [OPTIONS]
    assert buf == b""


def test_frame_stream_rejects_missing_content_length_and_oversize():
    with pytest.raises(ValueError):
        frame_stream(bytearray(b"OPTIONS sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n"))
    with pytest.raises(ValueError):
        frame_stream(bytearray(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: %d\r\n\r\n" % MAX_MESSAGE_SIZE))


async def _pair(**kwargs):
    got: asyncio.Queue = asyncio.Queue()
    t = SipTransport("127.0.0.1", 0, lambda d, a, tr: got.put_nowait((d, a, tr)), **kwargs)
    await t.start()
    return t, got


async def test_udp_and_tcp_listen_on_the_same_port_and_deliver_source_address():
    a, got_a = await _pair()
    b, got_b = await _pair()
    try:
        assert a.local_address[1] != 0
        a.send(b"ping-udp", b.local_address, "udp")
        data, addr, tr = await asyncio.wait_for(got_b.get(), 2)
        assert (data, addr, tr) == (b"ping-udp", a.local_address, "udp")

        a.send(OPTIONS, b.local_address, "tcp")
        data, addr, tr = await asyncio.wait_for(got_b.get(), 2)
        assert data == OPTIONS and tr == "tcp" and addr[0] == "127.0.0.1"
        # the answer goes back over the same (accepted) connection, no new connection opened
        b.send(OPTIONS.replace(b"hello", b"world"), addr, "tcp")
        data, _, tr = await asyncio.wait_for(got_a.get(), 2)
        assert data.endswith(b"world") and tr == "tcp"
        a.send(OPTIONS, b.local_address, "tcp")
        await asyncio.wait_for(got_b.get(), 2)
        assert a.tcp_connection_count == 1 and b.tcp_connection_count == 1
    finally:
        await a.close()
        await b.close()


async def test_tcp_stream_fragmented_byte_by_byte_is_reassembled():
    t, got = await _pair()
    try:
        reader, writer = await asyncio.open_connection(*t.local_address)
        for i in range(len(OPTIONS)):
            writer.write(OPTIONS[i:i + 1])
            await writer.drain()
        writer.write(OPTIONS)
        assert (await asyncio.wait_for(got.get(), 2))[0] == OPTIONS
        assert (await asyncio.wait_for(got.get(), 2))[0] == OPTIONS
        writer.close()
    finally:
        await t.close()


async def test_idle_tcp_connection_is_closed():
    t, got = await _pair(tcp_idle_timeout=0.2)
    try:
        reader, writer = await asyncio.open_connection(*t.local_address)
        writer.write(OPTIONS)
        await asyncio.wait_for(got.get(), 2)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # EOF: the server closed it
        assert t.tcp_connection_count == 0
    finally:
        await t.close()


async def test_trickled_message_is_cut_off_by_the_message_deadline():
    """Slowloris: a byte every 0.1 s keeps the connection active, so only a deadline for the
    whole message can close it; a connection that completes its messages in time stays open."""
    t, got = await _pair(tcp_idle_timeout=5.0, tcp_message_timeout=0.6)
    try:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(*t.local_address)
        good_reader, good_writer = await asyncio.open_connection(*t.local_address)
        started = loop.time()
        closed_after = None
        for index, byte in enumerate(OPTIONS[:40]):
            writer.write(bytes([byte]))
            if index % 4 == 0:  # the well-behaved peer sends a whole message now and then
                good_writer.write(OPTIONS)
            try:
                if await asyncio.wait_for(reader.read(10), 0.1) == b"":
                    closed_after = loop.time() - started
                    break
            except asyncio.TimeoutError:
                continue
            except ConnectionResetError:  # closed with our bytes unread: the kernel sends RST
                closed_after = loop.time() - started
                break
        assert closed_after is not None and 0.5 < closed_after < 1.5, closed_after
        assert t.tcp_connection_count == 1  # the good connection survives
        good_writer.write(OPTIONS)
        while (await asyncio.wait_for(got.get(), 2))[1][1] != good_writer.get_extra_info("sockname")[1]:
            pass
        writer.close()
        good_writer.close()
    finally:
        await t.close()


def test_message_deadline_is_never_longer_than_the_idle_timeout():
    t = SipTransport("127.0.0.1", 0, lambda *a: None, tcp_idle_timeout=2.0, tcp_message_timeout=10.0)
    assert t.tcp_message_timeout == 2.0


async def test_unframeable_stream_closes_connection_but_listener_survives():
    t, got = await _pair()
    try:
        reader, writer = await asyncio.open_connection(*t.local_address)
        writer.write(b"GARBAGE\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 2) == b""
        reader, writer = await asyncio.open_connection(*t.local_address)
        writer.write(OPTIONS)
        assert (await asyncio.wait_for(got.get(), 2))[0] == OPTIONS
        writer.close()
    finally:
        await t.close()


async def test_icmp_port_unreachable_is_reported_with_destination():
    unreachable: asyncio.Queue = asyncio.Queue()
    t, _ = await _pair(on_unreachable=unreachable.put_nowait)
    dead = ("127.0.0.1", free_port())
    try:
        t.send(b"REGISTER", dead, "udp")
        assert await asyncio.wait_for(unreachable.get(), 2) == dead
        t.send(b"x", ("127.0.0.1", free_port(socket.SOCK_STREAM)), "tcp")
        assert (await asyncio.wait_for(unreachable.get(), 2))[0] == "127.0.0.1"
    finally:
        await t.close()


async def test_handler_exception_does_not_stop_receiving():
    seen = []

    def handler(data, addr, tr):
        seen.append(data)
        if data == b"boom":
            raise RuntimeError("handler bug")

    t = SipTransport("127.0.0.1", 0, handler, transports=("udp",))
    await t.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"boom", t.local_address)
            s.sendto(b"after", t.local_address)
        await wait_for(lambda: len(seen) == 2, message="both datagrams handled")
        assert seen == [b"boom", b"after"]
    finally:
        await t.close()


async def test_fixed_port_in_use_raises():
    t, _ = await _pair()
    try:
        with pytest.raises(OSError):
            await SipTransport("127.0.0.1", t.local_address[1], lambda *a: None).start()
    finally:
        await t.close()
