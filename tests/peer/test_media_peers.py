"""Media against SIPp: its pcap audio and RFC 4733 DTMF reach us intact, and what we send comes
back sample-identical through SIPp's RTP echo (audio and DTMF)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from simplesip import Call, CallState, Endpoint, EndpointConfig, SimpleSIPClient
from simplesip.wire import g711
from tests.helpers.peers import (
    SIPP_PCAPS,
    SippRunner,
    dump_sipp_scenario,
    pcap_rtp_packets,
)
from tests.helpers.sipp_xml import (
    PCMU,
    UAS_CONTACT,
    response,
    scenario,
    sdp,
    send,
    uac_request,
)

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

DTMF_ORDER = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "star", "pound", "0"]  # rising seq numbers

# SIPp UAS answering PCMU + telephone-event, for -rtp_echo (the built-in uas offers PCMU only).
UAS_ECHO_WITH_DTMF = scenario(
    "uas echo with telephone-event",
    '  <recv request="INVITE"/>\n',
    send(response("200 OK", to_tag=True, headers=(UAS_CONTACT,), body=sdp(
        "m=audio [media_port] RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\n"
        "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n")), retrans=True),
    '  <recv request="ACK"/>\n  <recv request="BYE"/>\n',
    send(response("200 OK")),
)


def _find(haystack: np.ndarray, needle: np.ndarray) -> list[int]:
    windows = np.lib.stride_tricks.sliding_window_view(haystack, len(needle))
    return [int(i) for i in np.flatnonzero((windows == needle).all(axis=1))]


async def _recording_endpoint(**options) -> tuple[Endpoint, list[Call], list[bytes], list[tuple]]:
    endpoint = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000), **options))
    calls: list[Call] = []
    audio: list[bytes] = []
    digits: list[tuple] = []

    async def on_call(call: Call) -> None:
        calls.append(call)
        call.on_audio = audio.append
        call.on_dtmf = lambda d, src, ms: digits.append((d, src, ms))
        await call.answer()

    endpoint.on_incoming_call = on_call
    await endpoint.start()
    return endpoint, calls, audio, digits


async def test_sipp_pcap_audio_arrives_without_gaps(tmp_path: Path):
    # SIPp paces the pcap by its capture timestamps; a deeper jitter buffer than the default keeps
    # a busy test machine's scheduling hiccups (other suites run alongside) from showing as loss.
    endpoint, calls, audio, digits = await _recording_endpoint(jitter_target_ms=120)
    try:
        with SippRunner(tmp_path, "uac_pcap", remote=endpoint.local_address) as sipp:
            assert await sipp.wait_async(16) == 0, sipp.log()
        assert calls[0].codec == "PCMA" and calls[0].end_reason == "remote_bye"
        packets = [p for p in pcap_rtp_packets(SIPP_PCAPS / "g711a.pcap") if p[0] == 8]
        expected = g711.decode(np.frombuffer(b"".join(p[3] for p in packets), np.uint8), "PCMA")
        assert len(expected) > 7 * 8000 - 2000  # ~7 s of audio in 30 ms packets
        received = np.frombuffer(b"".join(audio), dtype="<i2")
        # Locate a loud stretch, then demand the whole recording, sample for sample, around it.
        loud = int(np.argmax(np.abs(expected) > 2000))
        (where,) = _find(received, expected[loud:loud + 240])
        start = where - loud
        assert start >= 0
        got = received[start:start + len(expected)]
        stats = calls[0].stats()
        assert len(got) == len(expected) and np.array_equal(got, expected), (
            f"{int(np.sum(got != expected[:len(got)]))} samples differ; rtp stats {stats}")
        # and the built-in scenario's trailing DTMF '1' arrived once
        assert [d for d, *_ in digits] == ["1"]
    finally:
        await endpoint.stop()


async def test_each_sipp_dtmf_pcap_arrives_exactly_once(tmp_path: Path):
    xml = dump_sipp_scenario("uac_pcap")
    # Swap the audio + DTMF '1' section of the built-in scenario for the twelve DTMF pcaps.
    first = xml.rindex("<nop>", 0, xml.index("pcap/g711a.pcap"))
    last = xml.index('<pause milliseconds="1000"/>') + len('<pause milliseconds="1000"/>')
    plays = "".join(f'<nop><action><exec play_pcap_audio="pcap/dtmf_2833_{name}.pcap"/></action>'
                    f'</nop><pause milliseconds="250"/>' for name in DTMF_ORDER)
    scenario = tmp_path / "uac_dtmf.xml"
    scenario.write_text(xml[:first] + plays + xml[last:])
    endpoint, calls, audio, digits = await _recording_endpoint()
    try:
        with SippRunner(tmp_path, scenario, remote=endpoint.local_address) as sipp:
            assert await sipp.wait_async(12) == 0, sipp.log()
        names = {"star": "*", "pound": "#"}
        assert [d for d, *_ in digits] == [names.get(n, n) for n in DTMF_ORDER]
        assert all(src == "rfc4733" for _, src, _ in digits)
    finally:
        await endpoint.stop()


def _echo_client(tmp_path: Path, scenario: str | Path, extra=()) -> tuple[SippRunner, SimpleSIPClient]:
    sipp = SippRunner(tmp_path, scenario, extra=["-rtp_echo", *extra])
    client = SimpleSIPClient("alice", "secret", "127.0.0.1", sipp.port, local_host="127.0.0.1",
                             rtp_port_range=(40000, 49000))
    client.connect(register=False)
    return sipp, client


def test_audio_sent_comes_back_sample_identical_through_sipp_rtp_echo(tmp_path: Path):
    sipp, client = _echo_client(tmp_path, "uas")
    received: list[bytes] = []
    lock = threading.Lock()

    def on_audio(data: bytes, fmt: str) -> None:
        assert fmt == "pcm"
        with lock:
            received.append(data)

    try:
        client.set_audio_callback(on_audio, format="pcm")
        client.make_call(f"sip:service@127.0.0.1:{sipp.port}")
        noise = np.random.default_rng(7).integers(-12000, 12000, 8000).astype(np.int16)
        ulaw = g711.encode(noise, "PCMU").tobytes()
        client.send_audio(ulaw)
        time.sleep(1.6)
        assert client.call_state is CallState.STREAMING
        status = client.get_call_status()
        assert status["audio_buffer_size"] == 0 and status["packets_in"] >= 50
        with lock:
            pcm = np.frombuffer(b"".join(received), dtype="<i2")
        expected = g711.decode(np.frombuffer(ulaw, np.uint8), "PCMU")
        (where,) = _find(pcm, expected[:160])
        np.testing.assert_array_equal(pcm[where:where + len(expected)], expected)
        client.end_call()
        assert sipp.wait(5) == 0, sipp.log()
    finally:
        client.disconnect()
        sipp.stop()


def test_dtmf_sent_comes_back_through_sipp_rtp_echo(tmp_path: Path):
    scenario = tmp_path / "uas_echo_dtmf.xml"
    scenario.write_text(UAS_ECHO_WITH_DTMF)
    sipp, client = _echo_client(tmp_path, scenario)
    got: list[str] = []
    try:
        client.set_dtmf_callback(got.append)
        client.make_call(f"sip:service@127.0.0.1:{sipp.port}")
        client.send_dtmf("14#9", duration_ms=80)
        deadline = time.monotonic() + 4
        while len(got) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert got == ["1", "4", "#", "9"]
        client.end_call()
        assert sipp.wait(5) == 0, sipp.log()
    finally:
        client.disconnect()
        sipp.stop()


# SIPp UAC that calls, puts us on hold with a re-INVITE (a=sendonly), waits, resumes, hangs up.
_TO_SIPP_SERVICE = "<sip:[service]@[remote_ip]:[remote_port]>"
_IN_DIALOG = _TO_SIPP_SERVICE + "[peer_tag_param]"
_CONTACT = "Contact: <sip:sipp@[local_ip]:[local_port]>"
UAC_HOLD_RESUME = scenario(
    "uac hold and resume",
    send(uac_request("INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0", "1 INVITE",
                     to=_TO_SIPP_SERVICE, headers=(_CONTACT, "Max-Forwards: 70"), body=sdp()),
         retrans=True),
    '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n'
    '  <recv response="200" rrs="true"/>\n',
    send(uac_request("ACK [next_url] SIP/2.0", "1 ACK", to=_IN_DIALOG)),
    '  <pause milliseconds="600"/>\n',
    send(uac_request("INVITE [next_url] SIP/2.0", "2 INVITE", to=_IN_DIALOG,
                     headers=(_CONTACT, "Max-Forwards: 70"), body=sdp(PCMU + "a=sendonly\n", version=2)),
         retrans=True),
    '  <recv response="200">\n'
    '    <action><ereg regexp="a=recvonly" search_in="body" check_it="true" assign_to="held"/></action>\n'
    '  </recv>\n',
    send(uac_request("ACK [next_url] SIP/2.0", "2 ACK", to=_IN_DIALOG)),
    '  <pause milliseconds="1000"/>\n',
    send(uac_request("BYE [next_url] SIP/2.0", "3 BYE", to=_IN_DIALOG), retrans=True),
    '  <recv response="200"/>\n  <Reference variables="held"/>\n',
)


async def test_held_call_answers_recvonly_and_stops_sending(tmp_path: Path):
    scenario = tmp_path / "uac_hold.xml"
    scenario.write_text(UAC_HOLD_RESUME)
    endpoint, calls, audio, digits = await _recording_endpoint()
    sent_while_held: list[int] = []
    try:
        with SippRunner(tmp_path, scenario, remote=endpoint.local_address) as sipp:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 6
            while loop.time() < deadline and sipp.proc.poll() is None:
                if calls and calls[0].on_hold and calls[0].rtp is not None:
                    sent_while_held.append(calls[0].rtp.packets_out)
                await asyncio.sleep(0.05)
            assert await sipp.wait_async(5) == 0, sipp.log()
        assert len(sent_while_held) > 10  # we saw the hold (SIPp checked our a=recvonly)
        assert sent_while_held[-1] == sent_while_held[0]  # and sent nothing while held
        assert calls[0].end_reason == "remote_bye"
    finally:
        await endpoint.stop()
