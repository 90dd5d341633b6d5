"""UserAgentCore against real SIP software (SIPp, Kamailio) over loopback UDP.

The asyncio shell is not involved: a few lines of blocking socket code feed the sans-IO core, so a
failure here points at the core's messages, not at the transport.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable

import pytest

from simplesip.core.config import UAConfig
from simplesip.core.events import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    Event,
    IncomingCall,
    RegistrationSucceeded,
)
from simplesip.core.useragent import UserAgentCore
from tests.helpers.net import free_port
from tests.helpers.peers import KamailioRunner, SippRunner

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class UdpDriver:
    """One core on one UDP socket, driven with the wall clock until a wanted event shows up."""

    def __init__(self, **config: object) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.settimeout(0.01)
        self.core = UserAgentCore(UAConfig(local_port=self.sock.getsockname()[1], **config))
        self.events: list[Event] = []

    def step(self) -> None:
        for data, addr, _transport in self.core.datagrams_to_send():
            self.sock.sendto(data, addr)
        try:
            data, addr = self.sock.recvfrom(65535)
            self.core.receive(data, addr, time.monotonic())
        except (socket.timeout, ConnectionRefusedError):
            pass
        self.core.handle_timer(time.monotonic())
        while (event := self.core.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, IncomingCall):
                self.core.answer(event.call_id, SDP, time.monotonic())
        for data, addr, _transport in self.core.datagrams_to_send():
            self.sock.sendto(data, addr)

    def close(self) -> None:
        self.sock.close()


def run_until(drivers: list[UdpDriver], done: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, [d.events for d in drivers]
        for driver in drivers:
            driver.step()


def has(driver: UdpDriver, kind: type) -> Callable[[], bool]:
    return lambda: any(isinstance(e, kind) for e in driver.events)


@pytest.fixture
def driver():
    d = UdpDriver(username="ivr")
    yield d
    d.close()


def test_outgoing_call_to_sipp_uas(tmp_path: Path, driver: UdpDriver):
    with SippRunner(tmp_path, "uas") as sipp:
        call_id = driver.core.invite(f"sip:service@127.0.0.1:{sipp.port}", SDP, time.monotonic())
        run_until([driver], has(driver, CallAnswered))
        driver.core.bye(call_id, time.monotonic())
        run_until([driver], lambda: sipp.proc.poll() is not None)
        assert sipp.wait(5) == 0, sipp.log()


def test_incoming_call_from_sipp_uac(tmp_path: Path, driver: UdpDriver):
    with SippRunner(tmp_path, "uac", remote=("127.0.0.1", driver.core.config.local_port)) as sipp:
        run_until([driver], lambda: sipp.proc.poll() is not None)
        assert sipp.wait(5) == 0, sipp.log()
    assert [type(e) for e in driver.events if not isinstance(e, IncomingCall)] == [
        CallConfirmed, CallEnded]
    assert driver.events[-1].reason == "remote_bye"


def test_register_and_call_through_kamailio(tmp_path: Path):
    with KamailioRunner(tmp_path) as kamailio:
        server = {"domain": "127.0.0.1", "server": kamailio.address}
        alice = UdpDriver(username="alice", password="secret", register_expires=60, **server)
        bob = UdpDriver(username="bob", **server)
        try:
            alice.core.register(time.monotonic())
            run_until([alice], has(alice, RegistrationSucceeded))
            assert f"sip:alice@127.0.0.1:{alice.core.config.local_port}" in kamailio.registrations()
            call_id = bob.core.invite("alice", SDP, time.monotonic())  # Kamailio looks alice up
            run_until([alice, bob], has(alice, CallConfirmed))
            alice.core.bye(call_id, time.monotonic())  # along bob's Record-Route'd path
            run_until([alice, bob], has(bob, CallEnded))
            assert bob.events[-1] == CallEnded(call_id, "remote_bye", None)
            alice.core.unregister(time.monotonic())
            run_until([alice], lambda: alice.events[-1] == RegistrationSucceeded(0))
        finally:
            alice.close()
            bob.close()
