"""Late offer against SIPp: its INVITE carries no SDP, our 200 offers, its ACK answers; media then
runs to the address in the ACK (SIPp echoes it back, so we hear exactly what we sent)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from peers import SippRunner
from simplesip import Call, Endpoint, EndpointConfig, g711

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

# SIPp UAC: INVITE without a body, the SDP answer (PCMA only, SIPp's echo port) in the ACK.
UAC_LATE_OFFER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac late offer">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: [service] <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP" search_in="body" check_it="true" assign_to="offer"/>
    </action>
  </recv>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8
a=rtpmap:8 PCMA/8000
]]></send>
  <pause milliseconds="1500"/>
  <send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
  <Reference variables="offer"/>
</scenario>
"""


async def test_sipp_late_offer_gets_our_offer_and_media_follows_the_ack(tmp_path: Path):
    endpoint = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000)))
    calls: list[Call] = []
    heard: list[bytes] = []
    noise = np.random.default_rng(11).integers(-12000, 12000, 4000).astype(np.int16)

    async def on_call(call: Call) -> None:
        calls.append(call)
        call.on_audio = heard.append
        await call.answer()
        call.queue_pcm(noise.tobytes())

    endpoint.on_incoming_call = on_call
    await endpoint.start()
    scenario = tmp_path / "uac_late_offer.xml"
    scenario.write_text(UAC_LATE_OFFER)
    try:
        with SippRunner(tmp_path, scenario, remote=endpoint.local_address,
                        extra=["-rtp_echo"]) as sipp:
            assert await sipp.wait_async(10) == 0, sipp.log()
            messages = sipp.messages()
        [call] = calls
        assert call.end_reason == "remote_bye"
        assert call.codec == "PCMA"  # chosen by the answer in the ACK, not our preference
        assert call.remote_sdp is not None and b"RTP/AVP 8" in call.remote_sdp
        assert f"m=audio {call.local_rtp_port} RTP/AVP" in messages  # our offer in the 200
        # SIPp echoes what reaches its port from the ACK: we hear our own noise, A-law coded.
        expected = g711.decode(g711.encode(noise, "PCMA"), "PCMA")
        received = np.frombuffer(b"".join(heard), dtype="<i2")
        assert len(received) > 160, ({k: v for k, v in call.stats().items() if k.startswith(("packets", "rej", "mal"))}, call.remote_rtp, sipp.media_port, sipp.log()[-2500:])
        windows = np.lib.stride_tricks.sliding_window_view(received, 160)
        hits = [k for k in range(0, len(expected) - 160, 160) if (windows == expected[k:k + 160]).all(axis=1).any()]
        assert len(hits) > 15, (hits, call.stats(), np.abs(received).max(), np.abs(received).mean())
    finally:
        await endpoint.stop()
        await asyncio.sleep(0)
