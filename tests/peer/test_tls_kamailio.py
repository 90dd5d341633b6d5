"""SIP over TLS through Kamailio with its tls module (Debian kamailio-tls-modules): we register
over TLS (digest auth), a caller on UDP reaches us through Kamailio over that TLS connection, and
our call over TLS is dispatched by Kamailio to a UDP user agent; BYE from each side; baresip
calling us through Kamailio, its DTMF, and our transfer (REFER, NOTIFY) over the TLS leg. Kamailio's
certificate comes from a test CA (tests/helpers/certs.py) that we verify; a Kamailio whose
certificate we do not trust fails registration at once, naming the TLS problem."""

from __future__ import annotations

import asyncio
import time

import pytest

from simplesip import Call, CallState, ConnectionError, Endpoint, EndpointConfig
from tests.helpers.certs import CertSet, make_test_pki
from tests.helpers.net import free_port
from tests.helpers.peers import BaresipRunner, KamailioRunner

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertSet:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory, pki: CertSet):
    dispatch_port = free_port()
    runner = KamailioRunner(tmp_path_factory.mktemp("kamailio"), dispatch_to=[("127.0.0.1", dispatch_port)],
                            tls=(pki.cert("server"), pki.key("server")))
    runner.dispatch_port = dispatch_port  # type: ignore[attr-defined]
    yield runner
    runner.stop()


def _tls_endpoint(pki: CertSet, kamailio: KamailioRunner, **kw) -> Endpoint:
    kw.setdefault("tls_ca_file", pki.ca)
    return Endpoint(EndpointConfig(
        sip_port=0, transports=("udp", "tls"), transport="tls", server="127.0.0.1",
        server_port=kamailio.tls_port, rtp_port_range=(40000, 49000), **kw))


async def _answer_into(sink: list[Call], call: Call) -> None:
    sink.append(call)
    await call.answer()


async def test_register_over_tls_and_take_a_call_through_kamailio(pki: CertSet, kamailio: KamailioRunner):
    ours = _tls_endpoint(pki, kamailio, username="alice", password="secret")
    caller = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000)))
    incoming: list[Call] = []
    ours.on_incoming_call = lambda call: _answer_into(incoming, call)
    async with ours, caller:
        await ours.register()
        bindings = kamailio.registrations()
        assert "transport=tls" in bindings and "alice" in bindings, bindings

        # UDP caller -> Kamailio -> our TLS connection; our BYE goes back the same way
        call = await caller.call(f"sip:alice@127.0.0.1:{kamailio.port}", timeout=10)
        (remote,) = incoming
        assert remote.headers.get("Via").startswith(f"SIP/2.0/TLS 127.0.0.1:{kamailio.tls_port}")
        await asyncio.sleep(0.3)
        await remote.hangup()
        await asyncio.wait_for(call.ended.wait(), 5)
        assert call.end_reason == "remote_bye"

        # a second call, which the UDP caller ends
        call = await caller.call(f"sip:alice@127.0.0.1:{kamailio.port}", timeout=10)
        await asyncio.sleep(0.3)
        await call.hangup()
        await asyncio.wait_for(incoming[1].ended.wait(), 5)
        assert incoming[1].end_reason == "remote_bye"
        await ours.unregister()
        assert ours.tls_handshake_failures == {"inbound": 0, "outbound": 0}


async def test_call_over_tls_dispatched_by_kamailio(pki: CertSet, kamailio: KamailioRunner):
    ours = _tls_endpoint(pki, kamailio)
    ivr = Endpoint(EndpointConfig(sip_port=kamailio.dispatch_port, rtp_port_range=(40000, 49000)))
    incoming: list[Call] = []
    ivr.on_incoming_call = lambda call: _answer_into(incoming, call)
    async with ours, ivr:
        call = await ours.call(f"sip:ivr@127.0.0.1:{kamailio.tls_port};transport=tls", timeout=10)
        (remote,) = incoming
        await asyncio.sleep(0.3)
        await call.hangup()  # over TLS to Kamailio, then UDP to the dispatched user agent
        await asyncio.wait_for(remote.ended.wait(), 5)
        assert remote.end_reason == "remote_bye"
        assert ours._transport.tls_connection_count == 1


async def test_registration_to_an_untrusted_kamailio_fails_at_once(tmp_path, kamailio: KamailioRunner):
    stranger_ca = make_test_pki(tmp_path / "other-ca")  # Kamailio's CA is not this one
    ours = _tls_endpoint(stranger_ca, kamailio, username="alice", password="secret")
    async with ours:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="TLS: certificate verification failed"):
            await ours.register()
        assert time.monotonic() - started < 3
        assert ours.tls_handshake_failures["outbound"] == 1


async def test_baresip_through_kamailio_to_us_over_tls_dtmf_and_transfer(tmp_path, pki: CertSet,
                                                                        kamailio: KamailioRunner):
    """baresip (UDP) calls alice at Kamailio, which reaches us over our TLS registration; its
    RFC 4733 digit reaches us; we transfer it (REFER over TLS through Kamailio) to user ivr,
    which Kamailio dispatches to another agent; baresip's NOTIFY 200 comes back the same way."""
    ours = _tls_endpoint(pki, kamailio, username="alice", password="secret")
    sales = Endpoint(EndpointConfig(sip_port=kamailio.dispatch_port, rtp_port_range=(40000, 49000)))
    incoming: list[Call] = []
    transferred: list[Call] = []
    digits: list[str] = []

    async def on_call(call: Call) -> None:
        incoming.append(call)
        call.on_dtmf = lambda digit, source, ms: digits.append(digit)
        await call.answer()

    ours.on_incoming_call = on_call
    sales.on_incoming_call = lambda call: _answer_into(transferred, call)
    async with ours, sales:
        await ours.register()
        baresip = BaresipRunner(tmp_path / "baresip", commands=[f"/dial sip:alice@127.0.0.1:{kamailio.port}"])
        with baresip:
            deadline = time.monotonic() + 10
            while not incoming or incoming[0].state not in (CallState.CONNECTED, CallState.STREAMING):
                assert time.monotonic() < deadline, baresip.log()
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(baresip.command, "sndcode", "4")
            deadline = time.monotonic() + 3
            while not digits:
                assert time.monotonic() < deadline, baresip.log()
                await asyncio.sleep(0.05)
            assert digits == ["4"]
            status = await incoming[0].refer(f"sip:ivr@127.0.0.1:{kamailio.port}", timeout=10)
            assert status == 200, baresip.log()
            assert transferred and transferred[0].from_user == "caller"
            await transferred[0].hangup()


async def test_kamailio_answers_our_keepalives_over_tls(pki: CertSet, kamailio: KamailioRunner):
    ours = _tls_endpoint(pki, kamailio, username="alice", password="secret", keepalive_interval=0.3)
    async with ours:
        await ours.register()
        deadline = time.monotonic() + 5
        while ours.keepalive_pongs < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert ours.keepalive_pongs >= 3, kamailio.log()[-2000:]
        assert ours._transport.tls_connection_count == 1  # the pings went down the TLS connection
