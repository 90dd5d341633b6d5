"""Session timers (RFC 4028) against SIPp, with a few seconds' intervals (``min_se`` lowered):
SIPp refreshes and we accept, we refresh (UPDATE, or re-INVITE when the peer does not allow
UPDATE) and SIPp sees it, a peer that stops refreshing gets our BYE, and 422 both ways."""

from __future__ import annotations

import asyncio
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

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]

TO_US = "<sip:ivr@[remote_ip]:[remote_port]>"
IN_DIALOG = TO_US + "[peer_tag_param]"
CONTACT = "Contact: <sip:sipp@[local_ip]:[local_port]>"


def _invite(session_expires: str) -> str:
    return send(uac_request(
        "INVITE sip:ivr@[remote_ip]:[remote_port] SIP/2.0", "1 INVITE", to=TO_US,
        headers=("Max-Forwards: 70", CONTACT, "Supported: timer",
                 f"Session-Expires: {session_expires}", "Min-SE: 1",
                 "Allow: INVITE, ACK, BYE, CANCEL, UPDATE"),
        body=sdp()), retrans=True)


def _in_dialog(method: str, cseq: int, *headers: str, body: str | None = None,
               retrans: bool = True) -> str:
    return send(uac_request(f"{method} [next_url] SIP/2.0", f"{cseq} {method}", to=IN_DIALOG,
                            headers=("Max-Forwards: 70", CONTACT, *headers), body=body),
                retrans=retrans)


def _expect_header(status: str, header: str, regexp: str, variable: str) -> str:
    """Receive ``status`` whose ``header`` must match ``regexp`` (SIPp fails the call if not)."""
    return (f'  <recv response="{status}" rrs="true">\n    <action>\n'
            f'      <ereg regexp="{regexp}" search_in="hdr" header="{header}:" check_it="true" '
            f'assign_to="{variable}"/>\n      <log message="{header}: [${variable}]"/>\n'
            '    </action>\n  </recv>\n')


#: SIPp calls us and refreshes every 1.5 s (UPDATE, then re-INVITE) a 4 s session, then BYE.
UAC_REFRESHING = scenario(
    "uac refresher",
    _invite("4;refresher=uac"),
    '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n',
    _expect_header("200", "Session-Expires", "4;refresher=uac", "se1"),
    _in_dialog("ACK", 1, retrans=False),
    '  <pause milliseconds="1500"/>\n',
    _in_dialog("UPDATE", 2, "Session-Expires: 4;refresher=uac", "Supported: timer"),
    _expect_header("200", "Session-Expires", "^ *4", "se2"),
    '  <pause milliseconds="1500"/>\n',
    _in_dialog("INVITE", 3, "Session-Expires: 4;refresher=uac", "Supported: timer",
               body=sdp(version=2)),
    '  <recv response="100" optional="true"/>\n',
    _expect_header("200", "Session-Expires", "^ *4", "se3"),
    _in_dialog("ACK", 3, retrans=False),
    '  <pause milliseconds="1500"/>\n',
    _in_dialog("BYE", 4),
    '  <recv response="200"/>\n',
)

#: SIPp calls us with a 2 s session it should refresh, and never does: our BYE must come.
UAC_SILENT = scenario(
    "uac silent refresher",
    _invite("2;refresher=uac"),
    '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n',
    '  <recv response="200" rrs="true"/>\n',
    _in_dialog("ACK", 1, retrans=False),
    '  <recv request="BYE" timeout="5000"/>\n',
    send(response("200 OK")),
)

#: SIPp asks for 1 s, below our Min-SE of 2: 422 with Min-SE 2, then the ACK.
UAC_TOO_SMALL = scenario(
    "uac too small",
    _invite("1"),
    '  <recv response="100" optional="true"/>\n',
    _expect_header("422", "Min-SE", "^ *2$", "minse"),
    _in_dialog("ACK", 1, retrans=False),
)


def _uas_we_refresh(method: str) -> str:
    """SIPp answers our call with a 4 s session that we (the UAC) refresh, twice, by ``method``
    (UPDATE when SIPp's Allow has it, else re-INVITE); then it waits for our BYE."""
    allow = "Allow: INVITE, ACK, BYE, CANCEL" + (", UPDATE" if method == "UPDATE" else "")
    answer = dict(to_tag=True, headers=(UAS_CONTACT, allow, "Require: timer",
                                        "Session-Expires: 4;refresher=uac"), body=sdp())
    refresh = ""
    for _ in range(2):
        refresh += f'  <recv request="{method}" timeout="4000"/>\n'
        refresh += send(response("200 OK", headers=(UAS_CONTACT, "Session-Expires: 4;refresher=uac"),
                                 body=sdp() if method == "INVITE" else None))
        if method == "INVITE":
            refresh += '  <recv request="ACK"/>\n'
    return scenario(
        f"uas refreshed by {method}",
        '  <recv request="INVITE"/>\n',
        send(response("200 OK", **answer), retrans=True),
        '  <recv request="ACK"/>\n',
        refresh,
        '  <recv request="BYE"/>\n',
        send(response("200 OK")),
    )


#: SIPp refuses our first INVITE (4 s) with 422 Min-SE 6; the retry must ask for 6.
UAS_422 = scenario(
    "uas 422",
    '  <recv request="INVITE"/>\n',
    send(response("422 Session Interval Too Small", to_tag=True, headers=("Min-SE: 6",))),
    '  <recv request="ACK"/>\n',
    '  <recv request="INVITE">\n    <action>\n'
    '      <ereg regexp="^ *6" search_in="hdr" header="Session-Expires:" check_it="true" assign_to="se"/>\n'
    '      <log message="Session-Expires: [$se]"/>\n    </action>\n  </recv>\n',
    send(response("200 OK", to_tag=True, headers=(UAS_CONTACT, "Session-Expires: 6;refresher=uas"),
                  body=sdp()), retrans=True),
    '  <recv request="ACK"/>\n',
    '  <recv request="BYE"/>\n',
    send(response("200 OK")),
)


def _config(**options) -> EndpointConfig:
    return EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000), session_expires=4, min_se=2,
                          **options)


async def _answering(config: EndpointConfig) -> tuple[Endpoint, list[Call]]:
    endpoint = Endpoint(config)
    answered: list[Call] = []

    async def on_call(call: Call) -> None:
        answered.append(call)
        await call.answer()

    endpoint.on_incoming_call = on_call
    await endpoint.start()
    return endpoint, answered


async def _run_uac(tmp_path: Path, xml: str) -> tuple[list[Call], SippRunner]:
    endpoint, answered = await _answering(_config())
    try:
        scenario_file = tmp_path / "uac.xml"
        scenario_file.write_text(xml)
        with SippRunner(tmp_path, scenario_file, remote=endpoint.local_address) as sipp:
            assert await sipp.wait_async(15) == 0, sipp.log()
        return answered, sipp
    finally:
        await endpoint.stop()


async def test_sipp_refreshes_and_the_call_outlives_the_interval(tmp_path: Path):
    answered, _ = await _run_uac(tmp_path, UAC_REFRESHING)
    assert len(answered) == 1 and answered[0].end_reason == "remote_bye"


async def test_a_peer_that_stops_refreshing_gets_bye(tmp_path: Path):
    answered, sipp = await _run_uac(tmp_path, UAC_SILENT)
    assert len(answered) == 1 and answered[0].end_reason == "session_expired"
    assert "BYE sip:" in sipp.messages()


async def test_too_small_an_interval_gets_422_with_our_min_se(tmp_path: Path):
    answered, _ = await _run_uac(tmp_path, UAC_TOO_SMALL)
    assert answered == []  # the application never saw the call


@pytest.mark.parametrize("method", ["UPDATE", "INVITE"])
async def test_we_refresh_when_we_are_the_refresher(tmp_path: Path, method: str):
    scenario_file = tmp_path / "uas.xml"
    scenario_file.write_text(_uas_we_refresh(method))
    async with Endpoint(_config()) as endpoint:
        with SippRunner(tmp_path, scenario_file) as sipp:
            call = await endpoint.call(f"sip:service@127.0.0.1:{sipp.port}")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 8
            wanted = 3 if method == "INVITE" else 2  # two refreshes (after the INVITE), 2 s apart
            while sipp.messages().count(f"{method} sip:") < wanted and loop.time() < deadline:
                await asyncio.sleep(0.1)
            assert not call.ended.is_set()
            await call.hangup()
            assert await sipp.wait_async(5) == 0, sipp.log()
        assert "Session-Expires: 4;refresher=uac" in sipp.messages()


async def test_a_422_to_our_invite_is_retried_with_the_min_se_it_names(tmp_path: Path):
    scenario_file = tmp_path / "uas422.xml"
    scenario_file.write_text(UAS_422)
    async with Endpoint(_config()) as endpoint:
        with SippRunner(tmp_path, scenario_file) as sipp:
            call = await endpoint.call(f"sip:service@127.0.0.1:{sipp.port}")
            await call.hangup()
            assert await sipp.wait_async(5) == 0, sipp.log()
