"""Against Kamailio: digest registration, and calls routed through it (Record-Route, location
lookup and dispatcher) with BYE from each side."""

from __future__ import annotations

import asyncio

import pytest

from simplesip import (
    AuthenticationError,
    Call,
    Endpoint,
    EndpointConfig,
    SimpleSIPClient,
)
from tests.helpers.net import free_port
from tests.helpers.peers import KamailioRunner

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory):
    """One Kamailio for the module; INVITEs to user ``ivr`` are dispatched to ``dispatch_port``."""
    dispatch_port = free_port()
    runner = KamailioRunner(tmp_path_factory.mktemp("kamailio"),
                            dispatch_to=[("127.0.0.1", dispatch_port)])
    runner.dispatch_port = dispatch_port  # type: ignore[attr-defined]
    yield runner
    runner.stop()


def test_client_registers_with_digest_auth_and_unregisters(kamailio: KamailioRunner):
    client = SimpleSIPClient("alice", "secret", "127.0.0.1", kamailio.port, local_host="127.0.0.1")
    try:
        assert client.connect() is True
        port = client.local_address[1]
        assert f"127.0.0.1:{port}" in kamailio.registrations()
    finally:
        client.disconnect()
    assert f"127.0.0.1:{port}" not in kamailio.registrations()


def test_wrong_password_is_refused(kamailio: KamailioRunner):
    client = SimpleSIPClient("ivr", "not-ivrpass", "127.0.0.1", kamailio.port, local_host="127.0.0.1")
    with pytest.raises(AuthenticationError):
        client.connect()
    assert not client.running


def _endpoint(port: int = 0, **kw) -> Endpoint:
    return Endpoint(EndpointConfig(sip_port=port, rtp_port_range=(40000, 49000), **kw))


async def _answer_into(sink: list[Call], call: Call) -> None:
    sink.append(call)
    await call.answer()


async def test_calls_through_kamailio_with_record_route_bye_from_each_side(kamailio: KamailioRunner):
    callee = _endpoint(username="alice", password="secret", server="127.0.0.1",
                       server_port=kamailio.port)
    caller = _endpoint()
    answered: list[Call] = []
    callee.on_incoming_call = lambda call: _answer_into(answered, call)
    async with callee, caller:
        await callee.register()
        target = f"sip:alice@127.0.0.1:{kamailio.port}"

        # 1. caller hangs up: its BYE must follow the route set through Kamailio
        call = await caller.call(target)
        assert "Record-Route" in answered[0].headers
        assert f"127.0.0.1:{kamailio.port}" in answered[0].headers.get("Record-Route")
        await asyncio.sleep(0.2)
        await call.hangup()
        await asyncio.wait_for(answered[0].ended.wait(), 3)
        assert call.end_reason == "local_bye" and call.end_status in (None, 200)
        assert answered[0].end_reason == "remote_bye"

        # 2. callee hangs up
        call = await caller.call(target)
        await asyncio.sleep(0.2)
        await answered[1].hangup()
        await asyncio.wait_for(call.ended.wait(), 3)
        assert call.end_reason == "remote_bye" and answered[1].end_reason == "local_bye"
        await callee.unregister()


async def test_call_dispatched_to_ivr_instance(kamailio: KamailioRunner):
    instance = _endpoint(port=kamailio.dispatch_port)  # type: ignore[attr-defined]
    caller = _endpoint()
    answered: list[Call] = []
    instance.on_incoming_call = lambda call: _answer_into(answered, call)
    async with instance, caller:
        call = await caller.call(f"sip:ivr@127.0.0.1:{kamailio.port}")
        assert answered and answered[0].to_user == "ivr"
        await call.hangup()
        await asyncio.wait_for(answered[0].ended.wait(), 3)
        assert answered[0].end_reason == "remote_bye"
