"""Our hold and resume against SIPp: it receives our re-INVITE with ``a=sendonly``, answers
``a=recvonly`` and keeps hearing our audio (music on hold), then the ``a=sendrecv`` re-INVITE."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplesip import Endpoint, EndpointConfig
from tests.helpers.peers import SippRunner
from tests.helpers.sipp_xml import UAS_CONTACT, response, scenario, sdp, send

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]


def _check_direction(direction: str, variable: str) -> str:
    """Receive a re-INVITE whose SDP must say ``a=<direction>`` (SIPp fails the call if not)."""
    return ('  <recv request="INVITE">\n    <action>\n'
            f'      <ereg regexp="a={direction}" search_in="body" check_it="true" assign_to="{variable}"/>\n'
            f'      <log message="re-INVITE: [${variable}]"/>\n    </action>\n  </recv>\n')


#: SIPp answers our call, then our hold (sendonly -> recvonly) and resume (sendrecv), then BYE.
UAS_HELD = scenario(
    "uas held and resumed",
    '  <recv request="INVITE"/>\n',
    send(response("200 OK", to_tag=True, headers=(UAS_CONTACT,), body=sdp()), retrans=True),
    '  <recv request="ACK"/>\n',
    _check_direction("sendonly", "hold"),
    send(response("200 OK", headers=(UAS_CONTACT,), body=sdp("m=audio [media_port] RTP/AVP 0\n"
                                                             "a=rtpmap:0 PCMU/8000\na=recvonly\n", version=2))),
    '  <recv request="ACK"/>\n',
    _check_direction("sendrecv", "resume"),
    send(response("200 OK", headers=(UAS_CONTACT,), body=sdp(version=3))),
    '  <recv request="ACK"/>\n',
    '  <recv request="BYE"/>\n',
    send(response("200 OK")),
)


async def test_we_hold_and_resume_sipp(tmp_path: Path) -> None:
    scenario_file = tmp_path / "uas_held.xml"
    scenario_file.write_text(UAS_HELD)
    async with Endpoint(EndpointConfig(sip_port=0, transports=("udp",), rtp_port_range=(40000, 49000))) as endpoint:
        with SippRunner(tmp_path, scenario_file) as sipp:
            call = await endpoint.call(f"sip:service@127.0.0.1:{sipp.port}")
            assert await call.hold() == 200
            assert call.held and not call.on_hold  # sendonly: our audio still goes out
            assert await call.resume() == 200
            assert not call.held and not call.on_hold
            await call.hangup()
            assert await sipp.wait_async(5) == 0, sipp.log()
        messages = sipp.messages()
    assert messages.count("INVITE sip:") == 3 and "a=recvonly" in messages
