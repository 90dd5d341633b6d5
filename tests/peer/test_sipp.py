"""Signalling against SIPp: it calls us, we call it, registration with digest auth, CANCEL, 486,
and the 49 RFC 4475 torture messages thrown at a running Endpoint."""

from __future__ import annotations

import asyncio
import builtins
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from simplesip import (
    AuthenticationError,
    Call,
    CallError,
    CallState,
    ConnectionError,
    Endpoint,
    EndpointConfig,
    SimpleSIPClient,
)
from tests.helpers.net import free_port
from tests.helpers.paths import DATA
from tests.helpers.peers import PEER_DATA, SippRunner
from tests.helpers.sipp_xml import (
    UAS_CONTACT,
    UAS_TO_TAG,
    response,
    scenario,
    sdp,
    send,
    uac_request,
)

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

RFC4475 = DATA / "rfc4475"

# SIPp UAS that rings and waits: CANCEL is answered 200 and the INVITE 487, then the ACK.
UAS_RING_THEN_CANCEL = scenario(
    "uas ring then cancel",
    '  <recv request="INVITE"/>\n',
    send(response("180 Ringing", to_tag=True)),
    '  <recv request="CANCEL"/>\n',
    send(response("200 OK", to_tag=True)),
    send(response("487 Request Terminated", to_tag=True, cseq="CSeq: [cseq] INVITE")),
    '  <recv request="ACK"/>\n',
)

# SIPp UAS that answers 486 Busy Here and insists on the ACK.
UAS_BUSY = scenario(
    "uas busy",
    '  <recv request="INVITE"/>\n',
    send(response("486 Busy Here", to_tag=True), retrans=True),
    '  <recv request="ACK"/>\n',
)


def _client(sipp: SippRunner, **kw) -> SimpleSIPClient:
    return SimpleSIPClient("alice", kw.pop("password", "secret"), "127.0.0.1", sipp.port,
                           local_host="127.0.0.1", rtp_port_range=(40000, 49000), **kw)


async def _answering_endpoint() -> tuple[Endpoint, list[Call]]:
    endpoint = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000)))
    answered: list[Call] = []

    async def on_call(call: Call) -> None:
        answered.append(call)
        await call.answer()

    endpoint.on_incoming_call = on_call
    await endpoint.start()
    return endpoint, answered


async def test_sipp_uac_calls_endpoint(tmp_path: Path):
    endpoint, answered = await _answering_endpoint()
    try:
        sipp = SippRunner(tmp_path, "uac", remote=endpoint.local_address)
        with sipp:
            assert await sipp.wait_async(12) == 0, sipp.log()
        assert len(answered) == 1 and answered[0].end_reason == "remote_bye"
        assert not endpoint.calls
    finally:
        await endpoint.stop()


async def test_sipp_uac_calls_endpoint_over_tcp(tmp_path: Path):
    endpoint, answered = await _answering_endpoint()
    try:
        sipp = SippRunner(tmp_path, "uac", remote=endpoint.local_address, extra=["-t", "t1"])
        with sipp:
            assert await sipp.wait_async(12) == 0, sipp.log()
        assert len(answered) == 1 and answered[0].end_reason == "remote_bye"
    finally:
        await endpoint.stop()


def test_client_calls_sipp_uas_then_hangs_up(tmp_path: Path):
    with SippRunner(tmp_path, "uas") as sipp:
        client = _client(sipp)
        try:
            assert client.connect(register=False)
            assert client.make_call(f"sip:service@127.0.0.1:{sipp.port}")
            assert client.call_state is CallState.CONNECTED
            status = client.get_call_status()
            assert status["state"] == "connected" and status["local_rtp_port"]
            client.end_call()
            assert client.call_state is CallState.IDLE
            assert sipp.wait(5) == 0, sipp.log()
        finally:
            client.disconnect()
        assert not client.running


def test_client_calls_sipp_uas_over_tcp(tmp_path: Path):
    with SippRunner(tmp_path, "uas", extra=["-t", "t1"]) as sipp:
        client = _client(sipp, transport="tcp")
        try:
            client.connect(register=False)
            assert client.make_call(f"sip:service@127.0.0.1:{sipp.port};transport=tcp")
            client.end_call()
            assert sipp.wait(5) == 0, sipp.log()
            assert "Via: SIP/2.0/TCP" in sipp.messages()
        finally:
            client.disconnect()


def test_register_against_sipp_digest_registrar(tmp_path: Path):
    with SippRunner(tmp_path, PEER_DATA / "registrar_auth.xml") as sipp:
        client = _client(sipp)
        try:
            assert client.connect() is True
            assert client.running
            assert sipp.wait(5) == 0, sipp.log()
            assert "valid=[true]" in sipp.messages() or "Authorization:" in sipp.messages()
        finally:
            client.disconnect()


def test_register_wrong_password_raises_authentication_error(tmp_path: Path):
    with SippRunner(tmp_path, PEER_DATA / "registrar_auth.xml") as sipp:
        client = _client(sipp, password="wrong")
        with pytest.raises(AuthenticationError):
            client.connect()
        assert not client.running
        assert sipp.wait(5) == 0, sipp.log()


def test_connect_to_dead_server_raises_connection_error_quickly():
    client = SimpleSIPClient("alice", "secret", "127.0.0.1", free_port(), local_host="127.0.0.1")
    started = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        client.connect()
    assert isinstance(err.value, builtins.ConnectionError)
    assert time.monotonic() - started < 3  # ICMP port unreachable, not Timer F
    assert not client.running


def test_cancel_before_answer_gets_487(tmp_path: Path):
    scenario = tmp_path / "uas_cancel.xml"
    scenario.write_text(UAS_RING_THEN_CANCEL)
    with SippRunner(tmp_path, scenario) as sipp:
        client = _client(sipp)
        client.connect(register=False)
        outcome: list[BaseException] = []

        def dial() -> None:
            try:
                client.make_call(f"sip:service@127.0.0.1:{sipp.port}")
            except BaseException as exc:  # collected for the assertion below
                outcome.append(exc)

        dialler = threading.Thread(target=dial)
        dialler.start()
        try:
            deadline = time.monotonic() + 5
            while client.call_state is not CallState.RINGING and time.monotonic() < deadline:
                time.sleep(0.02)
            assert client.call_state is CallState.RINGING
            client.end_call()
            dialler.join(5)
            assert isinstance(outcome[0], CallError) and outcome[0].status == 487
            assert client.call_state is CallState.IDLE
            assert sipp.wait(5) == 0, sipp.log()
        finally:
            client.disconnect()


def test_busy_486_is_acked_and_raises_call_error(tmp_path: Path):
    scenario = tmp_path / "uas_busy.xml"
    scenario.write_text(UAS_BUSY)
    with SippRunner(tmp_path, scenario) as sipp:
        client = _client(sipp)
        client.connect(register=False)
        try:
            started = time.monotonic()
            with pytest.raises(CallError) as err:
                client.make_call(f"sip:service@127.0.0.1:{sipp.port}")
            assert err.value.status == 486 and time.monotonic() - started < 3
            assert client.call_state is CallState.IDLE
            assert sipp.wait(5) == 0, sipp.log()  # SIPp got its ACK
        finally:
            client.disconnect()


def _torture_messages() -> list[tuple[str, str, bytes]]:
    """(file name, expected behaviour from manifest_extended.tsv, bytes) of all 49 messages."""
    rows = []
    for line in (RFC4475 / "manifest_extended.tsv").read_text().splitlines()[1:]:
        fields = line.split("\t")
        rows.append((fields[0], fields[5], (RFC4475 / fields[0]).read_bytes()))
    return rows


_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)


def _call_id(message: bytes) -> bytes | None:
    match = _CALL_ID.search(message.split(b"\r\n\r\n", 1)[0])
    return match.group(1).strip() if match else None


async def test_rfc4475_torture_messages_then_a_normal_call(tmp_path: Path):
    endpoint, answered = await _answering_endpoint()
    endpoint.on_incoming_call = lambda call: asyncio.ensure_future(call.reject(486))
    sent: list[bytes] = []
    real_send = endpoint._transport.send
    # Responses to the torture messages go to the hosts in their Via (192.0.2.x, ...): record
    # them instead of sending them anywhere.
    endpoint._transport.send = lambda data, addr, transport="udp": sent.append(data)
    messages = _torture_messages()
    assert len(messages) == 49
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _name, _expected, data in messages:
                sock.sendto(data, endpoint.local_address)
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        # Group what we sent by Call-ID (retransmissions of earlier answers interleave in time).
        status_lines: dict[str, list[bytes]] = {}
        for name, _expected, data in messages:
            call_id = _call_id(data)
            status_lines[name] = [a.split(b"\r\n", 1)[0] for a in sent
                                  if call_id is not None and _call_id(a) == call_id]
        for name, expected, data in messages:
            lines = status_lines[name]
            if data.startswith(b"SIP/2.0"):
                assert lines == [], (name, lines)  # a response is never answered
            elif expected.startswith(("reject (", "respond 400", "respond with error")):
                # the RFC says refuse: error responses only (400, 505 ...), never a call
                assert lines and all(line[8:9] in (b"4", b"5") for line in lines), (name, lines)
        expected_status = {"badvers.dat": b"505", "ncl.dat": b"400", "multi01.dat": b"400",
                           "unkscm.dat": b"416", "bext01.dat": b"420", "invut.dat": b"415"}
        for name, status in expected_status.items():
            assert status_lines[name][0][8:11] == status, (name, status_lines[name])
        # insuf.dat has no Call-ID, From or To: it must not break anything (RFC 4475 3.3.1)

        endpoint._transport.send = real_send
        endpoint.on_incoming_call = lambda call: asyncio.ensure_future(call.answer())
        with SippRunner(tmp_path, "uac", remote=endpoint.local_address) as sipp:
            assert await sipp.wait_async(12) == 0, sipp.log()
    finally:
        endpoint._transport.send = real_send
        await endpoint.stop()


# SIPp UAS that answers, accepts our REFER (202) and reports the transfer's outcome in a NOTIFY.
UAS_ACCEPT_REFER = scenario(
    "uas refer",
    '  <recv request="INVITE" rrs="true">\n'
    '    <action><ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/></action>\n'
    '  </recv>\n',
    send(response("200 OK", to_tag=True, headers=(UAS_CONTACT,), body=sdp()), retrans=True),
    '  <recv request="ACK"/>\n  <recv request="REFER"/>\n',
    send(response("202 Accepted")),
    send("NOTIFY [next_url] SIP/2.0\n"
         "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
         f"From: <sip:service@[local_ip]:[local_port]>{UAS_TO_TAG}\n"
         "To: [$remote_from]\nCall-ID: [call_id]\nCSeq: 1 NOTIFY\nContact: <sip:[local_ip]:[local_port]>\n"
         "Max-Forwards: 70\nEvent: refer\nSubscription-State: terminated;reason=noresource\n"
         "Content-Type: message/sipfrag\nContent-Length: [len]\n\nSIP/2.0 200 OK\n", retrans=True),
    '  <recv response="200"/>\n  <recv request="BYE"/>\n',
    send(response("200 OK")),
)


async def test_refer_returns_the_final_notify_status(tmp_path: Path):
    scenario = tmp_path / "uas_refer.xml"
    scenario.write_text(UAS_ACCEPT_REFER)
    endpoint = Endpoint(EndpointConfig(sip_port=0, rtp_port_range=(40000, 49000)))
    async with endpoint:
        with SippRunner(tmp_path, scenario) as sipp:
            call = await endpoint.call(f"sip:service@127.0.0.1:{sipp.port}")
            assert await asyncio.wait_for(call.refer("sip:carol@127.0.0.1"), 5) == 200
            await call.hangup()
            assert await sipp.wait_async(5) == 0, sipp.log()
            assert "Refer-To: <sip:carol@127.0.0.1>" in sipp.messages() or \
                "Refer-To: sip:carol@127.0.0.1" in sipp.messages()


#: A SIPp caller offering only G.729: 100 Trying, then 488 at once. A 180 before it would be an
#: unexpected message (SIPp fails the call): a caller is not told we ring when we cannot answer.
UAC_G729_ONLY = scenario(
    "uac g729 only",
    send(uac_request("INVITE sip:ivr@[remote_ip]:[remote_port] SIP/2.0", "1 INVITE",
                     to="<sip:ivr@[remote_ip]:[remote_port]>",
                     headers=("Max-Forwards: 70", "Contact: <sip:sipp@[local_ip]:[local_port]>"),
                     body=sdp("m=audio [media_port] RTP/AVP 18\na=rtpmap:18 G729/8000\n")), retrans=True),
    '  <recv response="100" optional="true"/>\n',
    '  <recv response="488"/>\n',
    send(uac_request("ACK sip:ivr@[remote_ip]:[remote_port] SIP/2.0", "1 ACK",
                     to="<sip:ivr@[remote_ip]:[remote_port]>[peer_tag_param]")),
)


async def test_an_offer_we_cannot_answer_gets_488_before_any_ringing(tmp_path: Path):
    endpoint, answered = await _answering_endpoint()
    try:
        scenario_file = tmp_path / "uac_g729.xml"
        scenario_file.write_text(UAC_G729_ONLY)
        with SippRunner(tmp_path, scenario_file, remote=endpoint.local_address) as sipp:
            assert await sipp.wait_async(12) == 0, sipp.log()
        assert answered == [] and not endpoint.calls  # the application never saw the call
    finally:
        await endpoint.stop()
