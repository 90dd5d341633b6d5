"""RFC 3263 for sips: (RFC 5630) against a real DNS server (dnsmasq): NAPTR SIPS+D2T, SRV
``_sips._tcp``, the A record on port 5061; and a call to ``sips:bob@other.example`` whose TLS
server is verified against the domain asked for (RFC 5922), not the SRV target's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplesip import Call, CallError, Endpoint, EndpointConfig
from simplesip.aio.locator import ServerLocator
from simplesip.core.config import Target
from simplesip.errors import LocationError
from tests.helpers.certs import CertSet, make_test_pki
from tests.helpers.dnsmasq import DnsmasqRunner
from tests.helpers.net import free_port

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertSet:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _records(tls_port: int) -> list[str]:
    return [
        # other.example: TLS only, through NAPTR (and a UDP service that sips: must not use)
        "naptr-record=other.example,10,10,S,SIP+D2U,,_sip._udp.other.example",
        "naptr-record=other.example,20,10,S,SIPS+D2T,,_sips._tcp.other.example",
        "srv-host=_sip._udp.other.example,sip1.other.example,5999,10,50",
        f"srv-host=_sips._tcp.other.example,sip1.other.example,{tls_port},10,50",
        "host-record=sip1.other.example,127.0.0.1",
        # srvtls.example: a _sips._tcp SRV record, no NAPTR
        f"srv-host=_sips._tcp.srvtls.example,sip1.other.example,{tls_port},10,0",
        # plain.example: an A record only: 5061 for sips:
        "host-record=plain.example,127.0.0.3",
    ]


async def test_locator_finds_tls_servers_for_sips(tmp_path: Path):
    port = free_port()
    with DnsmasqRunner(tmp_path, _records(port)) as dns:
        locator = ServerLocator([dns.nameserver], transports=("udp", "tcp", "tls"))
        assert await locator.locate("sips:bob@other.example") == [Target("127.0.0.1", port, "tls")]
        # a sip: URI may use any of the domain's services, in NAPTR order
        assert await locator.locate("sip:bob@other.example") == [
            Target("127.0.0.1", 5999, "udp"), Target("127.0.0.1", port, "tls")]
        assert await locator.locate("sip:bob@srvtls.example;transport=tls") == [Target("127.0.0.1", port, "tls")]
        assert await locator.locate("sips:srvtls.example") == [Target("127.0.0.1", port, "tls")]
        assert await locator.locate("sips:plain.example") == [Target("127.0.0.3", 5061, "tls")]
        assert await locator.locate("sips:127.0.0.1") == [Target("127.0.0.1", 5061, "tls")]
        assert await locator.locate("sip:127.0.0.1;transport=tls") == [Target("127.0.0.1", 5061, "tls")]
        with pytest.raises(LocationError, match="needs TLS"):
            await ServerLocator([dns.nameserver]).locate("sips:bob@other.example")


def _callee(pki: CertSet, port: int, cert: str) -> Endpoint:
    return Endpoint(EndpointConfig(sip_port=0, tls_port=port, transports=("udp", "tls"),
                                   tls_cert_file=pki.cert(cert), tls_key_file=pki.key(cert),
                                   rtp_port_range=(40000, 49000)))


async def test_sips_call_is_verified_against_the_domain(tmp_path: Path, pki: CertSet):
    port = free_port()
    with DnsmasqRunner(tmp_path, _records(port)) as dns:
        caller = Endpoint(EndpointConfig(sip_port=0, transports=("udp", "tls"), tls_ca_file=pki.ca,
                                         dns_nameservers=(dns.nameserver,), rtp_port_range=(40000, 49000)))
        async with caller:
            # other.example's certificate names other.example: verified, though we connect to
            # 127.0.0.1 found through sip1.other.example
            callee = _callee(pki, port, "other")
            answered: list[Call] = []

            async def answer(call: Call) -> None:
                answered.append(call)
                await call.answer()

            callee.on_incoming_call = answer
            async with callee:
                call = await caller.call("sips:bob@other.example", timeout=5)
                await call.hangup()
            assert answered
            # a server whose certificate names localhost / 127.0.0.1 only is refused for other.example
            async with _callee(pki, port, "server"):
                with pytest.raises(CallError, match="TLS: host name mismatch.*other.example"):
                    await caller.call("sips:bob@other.example", timeout=5)
