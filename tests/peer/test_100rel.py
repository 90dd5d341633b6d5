"""Reliable provisional responses (RFC 3262) against SIPp, both directions: SIPp requires 100rel
and PRACKs our reliable 180 (our 200 waits for that PRACK), and SIPp rings reliably and gets our
PRACK."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplesip import Call, Endpoint, EndpointConfig
from tests.helpers.peers import SippRunner
from tests.helpers.sipp_xml import (
    UAS_CONTACT,
    response,
    scenario,
    sdp,
    send,
    uac_request,
)

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

TO_US = "<sip:ivr@[remote_ip]:[remote_port]>"
CONTACT = "Contact: <sip:sipp@[local_ip]:[local_port]>"

def _recv_200_to(method: str, variable: str) -> str:
    """Receive a 200 that must answer ``method`` (SIPp matches responses by status alone)."""
    return ('  <recv response="200" rrs="true">\n    <action>\n'
            f'      <ereg regexp="{method}" search_in="hdr" header="CSeq:" check_it="true" '
            f'assign_to="{variable}"/>\n      <log message="[${variable}]"/>\n    </action>\n  </recv>\n')


#: SIPp calls us requiring 100rel: our 180 must carry Require: 100rel and an RSeq, which SIPp's
#: PRACK acknowledges (RAck); only then the 200 to the INVITE (a 200 before the PRACK's 200
#: would be an unexpected message).
UAC_REQUIRES_100REL = scenario(
    "uac 100rel",
    send(uac_request("INVITE sip:ivr@[remote_ip]:[remote_port] SIP/2.0", "1 INVITE", to=TO_US,
                     headers=("Max-Forwards: 70", CONTACT, "Require: 100rel", "Supported: 100rel"),
                     body=sdp()), retrans=True),
    '  <recv response="100" optional="true"/>\n',
    '  <recv response="180" rrs="true">\n    <action>\n'
    '      <ereg regexp="[0-9]+" search_in="hdr" header="RSeq:" check_it="true" assign_to="rseq"/>\n'
    '      <ereg regexp="100rel" search_in="hdr" header="Require:" check_it="true" assign_to="req"/>\n'
    '      <log message="RSeq [$rseq] Require [$req]"/>\n    </action>\n  </recv>\n',
    send(uac_request("PRACK [next_url] SIP/2.0", "2 PRACK", to=TO_US + "[peer_tag_param]",
                     headers=("Max-Forwards: 70", CONTACT, "RAck: [$rseq] 1 INVITE")), retrans=True),
    _recv_200_to("PRACK", "prack_ok"),
    _recv_200_to("INVITE", "invite_ok"),
    send(uac_request("ACK [next_url] SIP/2.0", "1 ACK", to=TO_US + "[peer_tag_param]")),
    '  <pause milliseconds="200"/>\n',
    send(uac_request("BYE [next_url] SIP/2.0", "3 BYE", to=TO_US + "[peer_tag_param]",
                     headers=("Max-Forwards: 70", CONTACT)), retrans=True),
    '  <recv response="200"/>\n',
)

#: SIPp answers our INVITE with a reliable 180 (RSeq 1), retransmitted until our PRACK, whose
#: RAck it checks; then 200 to the PRACK, and 200 to the INVITE (with the INVITE's own Via).
UAS_RELIABLE_180 = scenario(
    "uas 100rel",
    '  <recv request="INVITE">\n    <action>\n'
    '      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="invite_via"/>\n'
    '      <ereg regexp="100rel" search_in="hdr" header="Supported:" check_it="true" assign_to="sup"/>\n'
    '      <log message="Supported [$sup]"/>\n    </action>\n  </recv>\n',
    send(response("180 Ringing", to_tag=True, headers=(UAS_CONTACT, "Require: 100rel", "RSeq: 1")),
         retrans=True),
    '  <recv request="PRACK">\n    <action>\n'
    '      <ereg regexp="^ *1 1 INVITE" search_in="hdr" header="RAck:" check_it="true" assign_to="rack"/>\n'
    '      <log message="RAck [$rack]"/>\n    </action>\n  </recv>\n',
    send(response("200 OK")),
    send("SIP/2.0 200 OK\nVia:[$invite_via]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n"
         f"CSeq: 1 INVITE\n{UAS_CONTACT}\nContent-Type: application/sdp\nContent-Length: [len]\n\n"
         + sdp(), retrans=True),
    '  <recv request="ACK"/>\n',
    '  <recv request="BYE"/>\n',
    send(response("200 OK")),
)


async def test_sipp_requiring_100rel_gets_a_reliable_180_and_the_200_after_its_prack(tmp_path: Path):
    endpoint = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000)))
    answered: list[Call] = []

    async def on_call(call: Call) -> None:
        answered.append(call)
        await call.answer()

    endpoint.on_incoming_call = on_call
    async with endpoint:
        scenario_file = tmp_path / "uac_100rel.xml"
        scenario_file.write_text(UAC_REQUIRES_100REL)
        with SippRunner(tmp_path, scenario_file, remote=endpoint.local_address) as sipp:
            assert await sipp.wait_async(15) == 0, sipp.log()
    assert len(answered) == 1 and answered[0].end_reason == "remote_bye"


async def test_we_prack_a_reliable_180_from_sipp(tmp_path: Path):
    scenario_file = tmp_path / "uas_100rel.xml"
    scenario_file.write_text(UAS_RELIABLE_180)
    async with Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000))) as endpoint:
        with SippRunner(tmp_path, scenario_file) as sipp:
            call = await endpoint.call(f"sip:service@127.0.0.1:{sipp.port}")
            await call.hangup()
            assert await sipp.wait_async(5) == 0, sipp.log()
        assert "RAck: 1 1 INVITE" in sipp.messages()
