"""3xx recursion against SIPp: one SIPp answers 302 naming another (and a worse-q third that
must not be tried); the call is answered by the one the 302 named, with the same Call-ID."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplesip import CallError, Endpoint, EndpointConfig
from tests.helpers.net import free_port
from tests.helpers.peers import SippRunner
from tests.helpers.sipp_xml import response, scenario, send

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]


def _redirector(*contacts: str) -> str:
    return scenario(
        "uas 302",
        '  <recv request="INVITE"/>\n',
        send(response("302 Moved Temporarily", to_tag=True,
                      headers=tuple(f"Contact: {c}" for c in contacts)), retrans=True),
        '  <recv request="ACK"/>\n',
    )


async def test_a_302_is_followed_to_the_contact_it_names(tmp_path: Path):
    final_port, unused_port = free_port(), free_port()
    redirector = tmp_path / "redirect.xml"
    redirector.write_text(_redirector(f"<sip:service@127.0.0.1:{unused_port}>;q=0.2",
                                      f"<sip:service@127.0.0.1:{final_port}>;q=0.8"))
    async with Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000))) as endpoint:
        with SippRunner(tmp_path / "a", redirector, name="redirector") as first, \
                SippRunner(tmp_path / "b", "uas", port=final_port, name="final") as final:
            call = await endpoint.call(f"sip:service@127.0.0.1:{first.port}")
            await call.hangup()
            assert await first.wait_async(5) == 0, first.log()
            assert await final.wait_async(5) == 0, final.log()
            assert f"Call-ID: {call.id}" in final.messages()
            assert f"INVITE sip:service@127.0.0.1:{final_port} SIP/2.0" in final.messages()


async def test_a_302_back_to_itself_is_not_followed_forever(tmp_path: Path):
    port = free_port()
    redirector = tmp_path / "loop.xml"
    redirector.write_text(_redirector(f"<sip:service@127.0.0.1:{port};loop=1>"))
    async with Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000))) as endpoint:
        with SippRunner(tmp_path, redirector, port=port) as sipp:
            with pytest.raises(CallError) as failed:
                await endpoint.call(f"sip:service@127.0.0.1:{port}", timeout=5)
            assert failed.value.status == 302
            assert await sipp.wait_async(5) == 0, sipp.log()
            assert sipp.messages().count("INVITE sip:") == 1
