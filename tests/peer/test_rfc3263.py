"""RFC 3263 against a real DNS server: dnsmasq on loopback publishes NAPTR, SRV and A records for
test.example; two SIPp instances are its SIP servers at SRV priorities 10 and 20. Registration
and calls go where SRV says, fail over when the first server is dead (ICMP) or answers 503, and
come back to it once it is up again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from simplesip import CallError, ConnectionError, Endpoint, EndpointConfig
from simplesip.aio.locator import ServerLocator
from simplesip.core.config import Target
from simplesip.errors import LocationError
from tests.helpers.dnsmasq import DnsmasqRunner
from tests.helpers.net import free_port
from tests.helpers.peers import SippRunner
from tests.helpers.sipp_xml import response, scenario, send

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]

#: A SIPp registrar without authentication: 200 with the binding for 60 s.
REGISTRAR = scenario(
    "registrar",
    '  <recv request="REGISTER"/>\n',
    send(response("200 OK", to_tag=True, headers=("[last_Contact:]", "Expires: 60"))),
)

#: A SIPp UAS that turns every call away with 503.
UAS_503 = scenario(
    "uas 503",
    '  <recv request="INVITE"/>\n',
    send(response("503 Service Unavailable", to_tag=True), retrans=True),
    '  <recv request="ACK"/>\n',
)


def _records(primary: int, backup: int, transport: str = "udp") -> list[str]:
    service = "SIP+D2U" if transport == "udp" else "SIP+D2T"
    return [
        f"naptr-record=test.example,10,10,S,{service},,_sip._{transport}.test.example",
        f"srv-host=_sip._{transport}.test.example,sip1.test.example,{primary},10,50",
        f"srv-host=_sip._{transport}.test.example,sip2.test.example,{backup},20,50",
        "host-record=sip1.test.example,127.0.0.1",
        "host-record=sip2.test.example,127.0.0.1",
        # plain.example: an A record only (no NAPTR, no SRV): port 5060 over UDP
        "host-record=plain.example,127.0.0.3",
        # srvonly.example: SRV without NAPTR, on TCP only
        "srv-host=_sip._tcp.srvonly.example,sip1.test.example,5999,10,0",
        # nosip.example exists (a TXT record) but has no SIP service and no address
        "txt-record=nosip.example,hello",
    ]


def _endpoint(dns: DnsmasqRunner, **options) -> Endpoint:
    return Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000),
                                   dns_nameservers=(dns.nameserver,), **options))


async def test_locator_follows_naptr_srv_a_and_says_what_is_missing(tmp_path: Path):
    primary, backup = free_port(), free_port()
    with DnsmasqRunner(tmp_path, _records(primary, backup)) as dns:
        locator = ServerLocator([dns.nameserver])
        assert await locator.locate("sip:test.example") == [
            Target("127.0.0.1", primary, "udp"), Target("127.0.0.1", backup, "udp")]
        assert dns.queries("test.example", "NAPTR") == 1
        # A port in the URI skips NAPTR and SRV: the A record on that port.
        assert await locator.locate("sip:sip2.test.example:7000") == [Target("127.0.0.1", 7000, "udp")]
        assert await locator.locate("sip:plain.example") == [Target("127.0.0.3", 5060, "udp")]
        assert await locator.locate("sip:srvonly.example") == [Target("127.0.0.1", 5999, "tcp")]
        with pytest.raises(LocationError, match="no such domain example.invalid"):
            await locator.locate("sip:bob@example.invalid")
        with pytest.raises(LocationError, match="no SIP service for nosip.example"):
            await locator.locate("sip:nosip.example")
        # Only UDP wanted: the TCP-only domain has nothing for us.
        with pytest.raises(LocationError, match="no SIP service for srvonly.example"):
            await ServerLocator([dns.nameserver], transports=("udp",)).locate("sip:srvonly.example")
        # A cached answer is used until its TTL runs out (60 s here): no second NAPTR query.
        await locator.locate("sip:test.example")
        assert dns.queries("test.example", "NAPTR") == 1


async def test_cache_expires_with_the_ttl(tmp_path: Path):
    with DnsmasqRunner(tmp_path, _records(free_port(), free_port()), ttl=1) as dns:
        locator = ServerLocator([dns.nameserver])
        await locator.locate("sip:test.example")
        await locator.locate("sip:test.example")
        assert dns.queries("test.example", "NAPTR") == 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while dns.queries("test.example", "NAPTR") < 2 and loop.time() < deadline:
            await asyncio.sleep(0.2)  # the 1 s TTL must pass before a new query goes out
            await locator.locate("sip:test.example")
        assert dns.queries("test.example", "NAPTR") == 2


async def test_registration_follows_srv_fails_over_and_comes_back(tmp_path: Path):
    primary, backup = free_port(), free_port()
    registrar = tmp_path / "registrar.xml"
    registrar.write_text(REGISTRAR)
    with DnsmasqRunner(tmp_path / "dns", _records(primary, backup)) as dns:
        endpoint = _endpoint(dns, username="alice", server="test.example")
        async with endpoint:
            # Both up: the priority 10 server gets it.
            with SippRunner(tmp_path / "a", registrar, port=primary, name="a") as first, \
                    SippRunner(tmp_path / "b", registrar, port=backup, name="b") as second:
                await endpoint.register()
                assert await first.wait_async(5) == 0, first.log()
                assert "REGISTER sip:test.example" in first.messages()
                assert "REGISTER" not in second.messages()
            # The first one dead (ICMP port unreachable): the second one, at once.
            with SippRunner(tmp_path / "b2", registrar, port=backup, name="b2") as second:
                started = asyncio.get_running_loop().time()
                await endpoint.register()
                assert asyncio.get_running_loop().time() - started < 3
                assert await second.wait_async(5) == 0, second.log()
            # The first one back: registration returns to it.
            with SippRunner(tmp_path / "a2", registrar, port=primary, name="a2") as first:
                await endpoint.register()
                assert await first.wait_async(5) == 0, first.log()
            # Both dead: a ConnectionError that names what failed.
            with pytest.raises(ConnectionError, match="unreachable"):
                await endpoint.register()


async def test_calls_follow_srv_and_fail_over_on_dead_server_and_503(tmp_path: Path):
    primary, backup = free_port(), free_port()
    busy = tmp_path / "uas_503.xml"
    busy.write_text(UAS_503)
    with DnsmasqRunner(tmp_path / "dns", _records(primary, backup)) as dns:
        async with _endpoint(dns) as endpoint:
            # The priority 10 server answers.
            with SippRunner(tmp_path / "a", "uas", port=primary, name="a") as first:
                call = await endpoint.call("sip:ivr@test.example")
                await call.hangup()
                assert await first.wait_async(5) == 0, first.log()
            # It is dead: the INVITE goes to the priority 20 one.
            with SippRunner(tmp_path / "b", "uas", port=backup, name="b") as second:
                call = await endpoint.call("sip:ivr@test.example")
                await call.hangup()
                assert await second.wait_async(5) == 0, second.log()
            # It answers 503: the INVITE goes on to the priority 20 one.
            with SippRunner(tmp_path / "a3", busy, port=primary, name="a3") as first, \
                    SippRunner(tmp_path / "b3", "uas", port=backup, name="b3") as second:
                call = await endpoint.call("sip:ivr@test.example")
                await call.hangup()
                assert await first.wait_async(5) == 0, first.log()
                assert await second.wait_async(5) == 0, second.log()
                assert "INVITE sip:ivr@test.example" in second.messages()
            # Neither there: 503 with the ICMP error, at once.
            with pytest.raises(CallError, match="nothing answers SIP") as failed:
                await endpoint.call("sip:ivr@test.example", timeout=5)
            assert failed.value.status == 503
            # A domain that does not exist: said at once, not "no answer".
            with pytest.raises(CallError, match="no such domain example.invalid") as missing:
                await endpoint.call("sip:ivr@example.invalid")
            assert missing.value.status == 404
