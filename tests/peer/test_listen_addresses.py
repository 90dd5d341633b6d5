"""``ivr serve`` listening on the IPv6 loopback and on the wildcard addresses (0.0.0.0, ::),
called by SIPp: its audio and RFC 4733 digit reach the flow and the CDR has the call; IPv6 hosts
are bracketed, and a wildcard is never what peers are told to send to (Contact, SDP c=)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from simplesip.aio.addresses import advertised_address, is_wildcard
from simplesip.wire.grammar import format_host
from tests.helpers.net import free_port
from tests.helpers.peers import BaresipRunner, SippRunner
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
    advertised = advertised_address(listen.strip("[]"))
    assert not is_wildcard(advertised)
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
