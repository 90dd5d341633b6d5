"""Late offer against SIPp: its INVITE carries no SDP, our 200 offers, its ACK answers; media then
runs to the address in the ACK (a socket of the test's own, named in SIPp's ACK)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from simplesip import Call, Endpoint, EndpointConfig
from simplesip.wire import g711
from simplesip.wire.rtp import RtpPacket
from tests.helpers.peers import SippRunner
from tests.helpers.sipp_xml import scenario, sdp, send, uac_request

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

# SIPp UAC: INVITE without a body, the SDP answer (PCMA only, the test's RTP port) in the ACK.
_TO_SIPP_SERVICE = "[service] <sip:[service]@[remote_ip]:[remote_port]>"
_IN_DIALOG = _TO_SIPP_SERVICE + "[peer_tag_param]"
_HEADERS = ("Contact: sip:sipp@[local_ip]:[local_port]", "Max-Forwards: 70")
_REQUEST_URI = "sip:[service]@[remote_ip]:[remote_port]"
UAC_LATE_OFFER = scenario(
    "uac late offer",
    send(uac_request(f"INVITE {_REQUEST_URI} SIP/2.0", "1 INVITE", to=_TO_SIPP_SERVICE, tag="09",
                     headers=_HEADERS), retrans=True),
    '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n'
    '  <recv response="200" rtd="true">\n    <action>\n'
    '      <ereg regexp="m=audio [0-9]+ RTP/AVP" search_in="body" check_it="true" assign_to="offer"/>\n'
    '    </action>\n  </recv>\n',
    send(uac_request(f"ACK {_REQUEST_URI} SIP/2.0", "1 ACK", to=_IN_DIALOG, tag="09", headers=_HEADERS,
                     body=sdp("m=audio @RTP_PORT@ RTP/AVP 8\na=rtpmap:8 PCMA/8000\n", connection="127.0.0.1"))),
    '  <pause milliseconds="1500"/>\n',
    send(uac_request(f"BYE {_REQUEST_URI} SIP/2.0", "2 BYE", to=_IN_DIALOG, tag="09", headers=_HEADERS),
         retrans=True),
    '  <recv response="200"/>\n  <Reference variables="offer"/>\n',
)


class RtpSink(asyncio.DatagramProtocol):
    """Where the ACK's SDP sends our media: keeps every datagram."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(data)


async def test_sipp_late_offer_gets_our_offer_and_media_follows_the_ack(tmp_path: Path):
    loop = asyncio.get_running_loop()
    rtp_transport, sink = await loop.create_datagram_endpoint(RtpSink, local_addr=("127.0.0.1", 0))
    rtp_port = rtp_transport.get_extra_info("sockname")[1]
    endpoint = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000)))
    calls: list[Call] = []
    noise = np.random.default_rng(11).integers(-12000, 12000, 4000).astype(np.int16)

    async def on_call(call: Call) -> None:
        calls.append(call)
        await call.answer()
        call.queue_pcm(noise.tobytes())

    endpoint.on_incoming_call = on_call
    await endpoint.start()
    scenario = tmp_path / "uac_late_offer.xml"
    scenario.write_text(UAC_LATE_OFFER.replace("@RTP_PORT@", str(rtp_port)))
    try:
        with SippRunner(tmp_path, scenario, remote=endpoint.local_address) as sipp:
            assert await sipp.wait_async(10) == 0, sipp.log()
            messages = sipp.messages()
        [call] = calls
        assert call.end_reason == "remote_bye"
        assert call.codec == "PCMA"  # chosen by the answer in the ACK, not our PCMU preference
        assert call.remote_sdp is not None and b"RTP/AVP 8" in call.remote_sdp
        assert f"m=audio {call.local_rtp_port} RTP/AVP" in messages  # our offer in the 200
        packets = [RtpPacket.parse(data) for data in sink.packets]
        assert len(packets) >= 25 and {p.payload_type for p in packets} == {8}
        sent = np.concatenate([g711.decode(np.frombuffer(p.payload, np.uint8), "PCMA") for p in packets])
        expected = g711.decode(g711.encode(noise, "PCMA"), "PCMA")
        assert np.array_equal(sent[:len(expected)], expected)
    finally:
        await endpoint.stop()
        rtp_transport.close()
