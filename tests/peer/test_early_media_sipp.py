"""SIPp calls a flow that plays early media and then rejects: SIPp gets a 183 Session Progress
with our SDP answer (and, with ``Require: 100rel``, a reliable one it PRACKs), then the 480."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.bot_rig import EngineRig
from tests.helpers.peers import SippRunner
from tests.helpers.sipp_xml import scenario, sdp, send, uac_request

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]

FLOW = """\
flow: early
start: notice
nodes:
  notice:
    early_media: {tone: "440", duration: 1s}
    next: closed
  closed: {reject: 480}
"""

TO_US = "<sip:early@[remote_ip]:[remote_port]>"


def _uac(reliable: bool) -> str:
    headers = ["Max-Forwards: 70", "Contact: <sip:sipp@[local_ip]:[local_port]>"]
    if reliable:
        headers += ["Supported: 100rel", "Require: 100rel"]
    prack = ""
    if reliable:  # our 180 comes first (reliable too): PRACK it, then the 183 follows
        prack = ('  <recv response="180" rrs="true">\n    <action>\n'
                 '      <ereg regexp="RSeq: *([0-9]+)" search_in="msg" check_it="true" assign_to="line180,rseq180"/>\n'
                 '      <log message="[$line180]"/>\n    </action>\n  </recv>\n'
                 + send(uac_request("PRACK [next_url] SIP/2.0", "2 PRACK", to=TO_US + "[peer_tag_param]",
                                    headers=("Max-Forwards: 70", "RAck: [$rseq180] 1 INVITE")), retrans=True)
                 + '  <recv response="200"/>\n'
                 + '  <recv response="183" rrs="true">\n    <action>\n'
                 '      <ereg regexp="RSeq: *([0-9]+)" search_in="msg" check_it="true" assign_to="rseqline,rseq"/>\n'
                 '      <ereg regexp="m=audio [0-9]+ RTP/AVP" search_in="body" check_it="true" assign_to="m"/>\n'
                 '      <log message="[$rseqline] [$m]"/>\n'
                 '    </action>\n  </recv>\n'
                 + send(uac_request("PRACK [next_url] SIP/2.0", "3 PRACK", to=TO_US + "[peer_tag_param]",
                                    headers=("Max-Forwards: 70", "RAck: [$rseq] 1 INVITE")), retrans=True)
                 + '  <recv response="200"/>\n')
    else:
        prack = ('  <recv response="180" optional="true"/>\n  <recv response="183">\n    <action>\n'
                 '      <ereg regexp="m=audio [0-9]+ RTP/AVP" search_in="body" check_it="true" assign_to="m"/>\n'
                 '      <log message="[$m]"/>\n    </action>\n  </recv>\n')
    return scenario(
        "uac early media",
        send(uac_request("INVITE sip:early@[remote_ip]:[remote_port] SIP/2.0", "1 INVITE", to=TO_US,
                         headers=tuple(headers), body=sdp()), retrans=True),
        '  <recv response="100" optional="true"/>\n',
        prack,
        '  <recv response="480"/>\n',
        send(uac_request("ACK sip:early@[remote_ip]:[remote_port] SIP/2.0", "1 ACK", to=TO_US + "[peer_tag_param]")),
    )


@pytest.mark.parametrize("reliable", [False, True])
async def test_sipp_gets_early_media_then_the_rejection(tmp_path: Path, reliable: bool) -> None:
    scenario_file = tmp_path / "uac_early.xml"
    scenario_file.write_text(_uac(reliable))
    async with EngineRig(tmp_path, FLOW) as rig:
        port = rig.engine.endpoint.local_address[1]
        with SippRunner(tmp_path / "sipp", scenario_file, remote=("127.0.0.1", port)) as sipp:
            assert await sipp.wait_async(15) == 0, sipp.log()
        await rig.wait_call_ended()
    messages = sipp.messages()
    assert "SIP/2.0 183 Session Progress" in messages and "SIP/2.0 480" in messages
    assert ("RSeq:" in messages) is reliable
