"""RtpReader: every call's RTP read through one epoll set, over real loopback sockets."""

from __future__ import annotations

import asyncio
import select
import socket
import time

import pytest

from simplesip.aio.rtpsocket import RtpReader, open_rtp_socket
from tests.helpers.waiting import wait_for

PORTS = (46000, 59998)


class RecordingSession:
    """Stands in for an RtpSession: keeps what the socket hands it."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int], float]] = []

    def receive(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.received.append((data, addr, now))


@pytest.fixture
async def reader():
    reader = RtpReader.create(asyncio.get_running_loop())
    assert reader is not None  # Linux: epoll is there
    yield reader
    reader.close()


@pytest.fixture
def sender():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


async def test_each_socket_gets_its_own_packets_in_order_with_rising_arrival_times(reader, sender):
    opened = [await open_rtp_socket("127.0.0.1", PORTS, reader) for _ in range(3)]
    sessions = []
    for rtp_socket, _ in opened:
        rtp_socket.session = RecordingSession()
        sessions.append(rtp_socket.session)
    assert len(reader) == 3
    for n in range(20):
        for index, (_, port) in enumerate(opened):
            sender.sendto(bytes([index, n]), ("127.0.0.1", port))
        await asyncio.sleep(0.002)
    await wait_for(lambda: all(len(s.received) == 20 for s in sessions))
    for index, session in enumerate(sessions):
        assert [data for data, _, _ in session.received] == [bytes([index, n]) for n in range(20)]
        assert {addr for _, addr, _ in session.received} == {sender.getsockname()}
        times = [now for _, _, now in session.received]
        assert times == sorted(times)
    for rtp_socket, _ in opened:
        rtp_socket.close()
    assert len(reader) == 0


async def test_rtcp_stays_with_the_loop_and_reaches_the_same_session(reader, sender):
    rtp_socket, port = await open_rtp_socket("127.0.0.1", PORTS, reader)
    rtp_socket.session = session = RecordingSession()
    sender.sendto(b"rtcp", ("127.0.0.1", port + 1))
    sender.sendto(b"rtp", ("127.0.0.1", port))
    await wait_for(lambda: len(session.received) == 2)
    assert sorted(data for data, _, _ in session.received) == [b"rtcp", b"rtp"]
    rtp_socket.close()


async def test_a_closed_socket_is_forgotten_and_a_new_one_on_its_descriptor_is_read(reader, sender):
    old, _ = await open_rtp_socket("127.0.0.1", PORTS, reader)
    old_fd = old._rtp_sock.fileno()
    old.session = old_session = RecordingSession()
    old.transport.close()  # the socket goes away without RtpSocket.close (say, a transport error)
    # the transport closes its socket on a later loop pass
    await wait_for(lambda: old._rtp_sock.fileno() == -1, message="the old socket closed")
    new, port = await open_rtp_socket("127.0.0.1", PORTS, reader)
    new.session = new_session = RecordingSession()
    assert new._rtp_sock.fileno() == old_fd  # the kernel hands out the lowest free number
    old.close()  # must not unhook the newer socket that now has the same number
    assert len(reader) == 1
    sender.sendto(b"x", ("127.0.0.1", port))
    await wait_for(lambda: len(new_session.received) == 1)
    assert not old_session.received
    new.close()
    assert len(reader) == 0


async def test_drain_reads_everything_that_waited_during_a_stall(reader, sender):
    rtp_socket, port = await open_rtp_socket("127.0.0.1", PORTS, reader)
    rtp_socket.session = session = RecordingSession()
    for n in range(15):  # the loop is not running: as if it were blocked
        sender.sendto(bytes([n]), ("127.0.0.1", port))
    time.sleep(0.05)
    assert rtp_socket.drain() == 15
    assert [data for data, _, _ in session.received] == [bytes([n]) for n in range(15)]
    rtp_socket.close()


async def test_the_reader_drains_every_socket_in_order_and_leaves_nothing_waiting(reader, sender):
    opened = [await open_rtp_socket("127.0.0.1", PORTS, reader) for _ in range(4)]
    sessions = []
    for rtp_socket, _ in opened:
        assert rtp_socket.reader is reader
        rtp_socket.session = RecordingSession()
        sessions.append(rtp_socket.session)
    backlog = [15, 0, 3, 7]  # one socket has nothing waiting
    for (_, port), count in zip(opened, backlog):
        for n in range(count):  # the loop is not running: as if it were blocked
            sender.sendto(bytes([n]), ("127.0.0.1", port))
    time.sleep(0.05)
    assert reader.drain() == sum(backlog)
    for session, count in zip(sessions, backlog):
        assert [data for data, _, _ in session.received] == [bytes([n]) for n in range(count)]
        assert len({now for _, _, now in session.received}) <= 1  # stamped with the drain's time
    assert reader.drain() == 0
    assert all(rtp_socket.drain() == 0 for rtp_socket, _ in opened)  # the kernel holds nothing more
    for rtp_socket, _ in opened:
        rtp_socket.close()


async def test_a_socket_the_loop_reads_has_no_reader() -> None:
    rtp_socket, _ = await open_rtp_socket("127.0.0.1", PORTS)
    assert rtp_socket.reader is None
    rtp_socket.close()


async def test_a_packet_before_the_session_exists_is_dropped_quietly(reader, sender):
    rtp_socket, port = await open_rtp_socket("127.0.0.1", PORTS, reader)
    sender.sendto(b"early", ("127.0.0.1", port))
    # until the reader has taken it off the socket (and dropped it: no session yet)
    await wait_for(lambda: not select.select([rtp_socket._rtp_sock], [], [], 0)[0], message="the early packet read")
    rtp_socket.session = session = RecordingSession()
    sender.sendto(b"late", ("127.0.0.1", port))
    await wait_for(lambda: len(session.received) == 1)
    assert session.received[0][0] == b"late"
    rtp_socket.close()


async def test_closing_the_reader_leaves_the_sockets_to_their_calls(reader):
    rtp_socket, _ = await open_rtp_socket("127.0.0.1", PORTS, reader)
    reader.close()
    reader.close()  # twice is harmless
    rtp_socket.close()  # and the socket still closes cleanly
    await asyncio.sleep(0.01)
    assert rtp_socket.transport.is_closing()
