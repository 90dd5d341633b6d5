"""``ivr serve`` listening on the IPv6 loopback and on the wildcard addresses (0.0.0.0, ::),
called by SIPp: its audio and RFC 4733 digit reach the flow and the CDR has the call; IPv6 hosts
are bracketed, and a wildcard is never what peers are told to send to (Contact, SDP c=); one
dual-stack listener on ``[::]`` serves SIPp over IPv4 and baresip over IPv6."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from simplesip import Call, Endpoint, EndpointConfig
from simplesip.aio.addresses import advertised_for, is_wildcard
from simplesip.wire.grammar import format_host
from tests.helpers.net import free_port
from tests.helpers.peers import BaresipRunner, KamailioRunner, SippRunner
from tests.helpers.robust_server import serving
from tests.helpers.waiting import wait_for_sync

ROOT = Path(__file__).resolve().parents[2]

FLOW = """\
flow: sipp
start: ask
nodes:
  ask:
    collect:
      prompt: {tone: "440", duration: 2s}
      max_digits: 3            # SIPp hangs up 1 s after its digit, before the inter-digit timeout
      timeout: 20s
    on: {ok: thanks, timeout: bye, invalid: bye}
  thanks: {play: {tone: "880", duration: 500ms}, next: bye}
  bye: {hangup: {}}
"""


@pytest.mark.parametrize("listen, caller", [("[::1]", "::1"), ("0.0.0.0", "127.0.0.1"), ("[::]", "::1")])
def test_sipp_calls_ivr_serve(tmp_path: Path, listen: str, caller: str) -> None:
    (tmp_path / "sipp.yaml").write_text(FLOW)
    port = free_port()
    args = ("--listen", f"{listen}:{port}", "--set", "cdr=cdr.jsonl", "--set", "listen.transports=[udp]", "sipp.yaml")
    with serving(*args, cwd=tmp_path) as server_log:
        # SIPp's built-in uac_pcap: 8 s of PCMA audio, an RFC 4733 '1', 1 s pause, BYE
        with SippRunner(tmp_path / "sipp", "uac_pcap", remote=(caller, port), service="sipp", host=caller,
                        extra=["-timeout", "13s", "-timeout_error"]) as sipp:
            status = sipp.wait(15)
        assert status == 0, sipp.log()[-3000:] + server_log()
        messages = sipp.messages()
    # A wildcard listener tells the caller the address of ours its packets reach (our source
    # on the route to it: here the loopback), not the default route's.
    advertised = advertised_for(listen.strip("[]"), caller)
    assert not is_wildcard(advertised) and advertised == caller
    assert f"Contact: <sip:{format_host(advertised, port)}>" in messages
    family = 6 if ":" in advertised else 4
    assert re.search(rf"^c=IN IP{family} {re.escape(advertised)}\s*$", messages, re.MULTILINE), messages
    [record] = [json.loads(line) for line in (tmp_path / "cdr.jsonl").read_text().splitlines()]
    assert record["flow"] == "sipp" and record["digits"] == "1" and record["outcome"] == "remote_hangup"


def test_baresip_calls_ivr_serve_over_ipv6(tmp_path: Path) -> None:
    (tmp_path / "sipp.yaml").write_text(FLOW)
    port = free_port()
    cdr = tmp_path / "cdr.jsonl"
    with serving("--listen", f"[::1]:{port}", "--set", "cdr=cdr.jsonl", "sipp.yaml", cwd=tmp_path) as server_log:
        with BaresipRunner(tmp_path / "baresip", host="::1", commands=[f"/dial sip:sipp@[::1]:{port}"]) as baresip:
            baresip.wait_ready()
            wait_for_sync(lambda: "Call established" in baresip.log(), timeout=10,
                          message=lambda: baresip.log() + server_log())
            time.sleep(1.0)  # into the prompt, then the key and the caller's BYE
            baresip.command("sndcode", "7")
            time.sleep(0.5)
            baresip.command("hangup")
            wait_for_sync(lambda: cdr.exists() and cdr.read_text().strip(), timeout=10,
                          message=lambda: baresip.log() + server_log())
            log = baresip.log()
    [record] = [json.loads(line) for line in cdr.read_text().splitlines()]
    assert record["digits"] == "7" and record["outcome"] == "remote_hangup", (record, log)
    assert "[::1]" in record["from"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_one_dual_stack_listener_serves_sipp_over_ipv4_and_baresip_over_ipv6(tmp_path: Path, transport: str) -> None:
    """One ``ivr serve`` on ``[::]``: SIPp calls it from 127.0.0.1, then baresip from ::1, over the
    same port and transport. Each is told an address of ours in its own family (Contact, SDP
    ``c=``), each call's digit reaches the flow, and no IPv4-mapped address shows anywhere (the
    IVR's log, the CDR, what SIPp received)."""
    (tmp_path / "sipp.yaml").write_text(FLOW)
    port = free_port()
    cdr = tmp_path / "cdr.jsonl"
    args = ("--listen", f"[::]:{port}", "--set", "cdr=cdr.jsonl", "--set", f"listen.transports=[{transport}]",
            "--set", "logging.level=debug", "sipp.yaml")
    sipp_transport = ["-t", "t1"] if transport == "tcp" else []
    suffix = ";transport=tcp" if transport == "tcp" else ""
    with serving(*args, cwd=tmp_path) as server_log:
        with SippRunner(tmp_path / "sipp", "uac_pcap", remote=("127.0.0.1", port), service="sipp",
                        extra=["-timeout", "13s", "-timeout_error", *sipp_transport]) as sipp:
            status = sipp.wait(15)
        assert status == 0, sipp.log()[-3000:] + server_log()
        messages = sipp.messages()
        assert f"Contact: <sip:127.0.0.1:{port}{suffix}>" in messages, messages
        assert re.search(r"^c=IN IP4 127\.0\.0\.1\s*$", messages, re.MULTILINE), messages
        wait_for_sync(lambda: cdr.exists() and len(cdr.read_text().splitlines()) == 1, timeout=10,
                      message=server_log)
        with BaresipRunner(tmp_path / "baresip", host="::1",
                           commands=[f"/dial sip:sipp@[::1]:{port}{suffix}"]) as baresip:
            baresip.wait_ready()
            wait_for_sync(lambda: "Call established" in baresip.log(), timeout=10,
                          message=lambda: baresip.log() + server_log())
            time.sleep(1.0)  # into the prompt, then the key and the caller's BYE
            baresip.command("sndcode", "7")
            time.sleep(0.5)
            baresip.command("hangup")
            wait_for_sync(lambda: len(cdr.read_text().splitlines()) == 2, timeout=10,
                          message=lambda: baresip.log() + server_log())
            baresip_log = baresip.log()
        log = server_log()
    first, second = [json.loads(line) for line in cdr.read_text().splitlines()]
    assert first["digits"] == "1" and first["outcome"] == "remote_hangup", (first, log)
    assert "127.0.0.1" in first["from"]
    assert second["digits"] == "7" and second["outcome"] == "remote_hangup", (second, baresip_log, log)
    assert "[::1]" in second["from"]
    assert f"listening on [::]:{port}" in log
    assert "ffff" not in (log + cdr.read_text() + messages).lower()


async def test_a_dual_stack_endpoint_registers_to_kamailio_over_ipv4_and_takes_a_call(tmp_path: Path) -> None:
    """An Endpoint on ``::`` registers to Kamailio on 127.0.0.1: the binding Kamailio keeps is
    our IPv4 address (never a mapped or an IPv6 one it could not reach), and a call to the
    user reaches us through it."""
    with KamailioRunner(tmp_path / "kamailio") as kamailio:
        ours = Endpoint(EndpointConfig(local_host="::", sip_port=0, transports=("udp",), username="alice",
                                       password="secret", server="127.0.0.1", server_port=kamailio.port,
                                       rtp_port_range=(40000, 49000), dns_srv=False))
        caller = Endpoint(EndpointConfig(sip_port=0, transports=("udp",), rtp_port_range=(40000, 49000)))
        incoming: list[Call] = []

        async def on_call(call: Call) -> None:
            incoming.append(call)
            await call.answer()

        ours.on_incoming_call = on_call
        async with ours, caller:
            await ours.register()
            bindings = kamailio.registrations()
            assert f"sip:alice@127.0.0.1:{ours.local_address[1]}" in bindings, bindings
            assert "ffff" not in bindings.lower()
            call = await caller.call(f"sip:alice@127.0.0.1:{kamailio.port}", timeout=10)
            (remote,) = incoming
            assert remote.source is not None and remote.source[0] == "127.0.0.1"
            await call.hangup()
            await asyncio.wait_for(remote.ended.wait(), 5)
            await ours.unregister()
