"""``ivr serve`` as a real process on free ports, called by ``ivr call`` and by SIPp: digits reach
the flow, the prompt reaches the caller, CDR and metrics, SIGTERM with a live call, SIGHUP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.net import free_port
from tests.helpers.peers import SippRunner
from tests.helpers.waiting import wait_for_sync

ROOT = Path(__file__).resolve().parent.parent
IVR = [sys.executable, "-m", "ivr"]

FLOW = """\
flow: e2e
start: ask
nodes:
  ask:
    collect:
      prompt: {tone: "440", duration: 2s}
      max_digits: 3
      terminator: "#"
      timeout: 6s
    on: {ok: thanks, timeout: bye, invalid: bye}
  thanks:
    play: {tone: "880", duration: 500ms}
    next: bye
  bye: {hangup: {}}
"""

VOICEMAIL = """\
flow: voicemail
start: record
nodes:
  record:
    record: {to: "msg.wav", beep: false, max_length: 30s, silence_timeout: 30s}
    next: bye
  bye: {hangup: {}}
"""


class ServeProcess:
    """``ivr serve --config`` in its own folder; stopped (and reaped) by the test fixture."""

    def __init__(self, folder: Path, extra_config: str = "") -> None:
        self.folder = folder
        self.port = free_port()
        self.metrics_port = free_port(__import__("socket").SOCK_STREAM)
        self.flows = folder / "flows"
        self.flows.mkdir()
        (self.flows / "e2e.yaml").write_text(FLOW)
        (self.flows / "voicemail.yaml").write_text(VOICEMAIL)
        # for SIPp's uac_pcap (8 s of audio, then the digit): a first-digit timeout past that
        (self.flows / "sipp.yaml").write_text(FLOW.replace("flow: e2e", "flow: sipp").replace("6s", "20s"))
        self.config = folder / "ivr.yaml"
        self.write_config(extra_config)
        self.log = (folder / "serve.log").open("w")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "ivr", "serve", "--config", str(self.config)], cwd=folder,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.wait_for_log("ivr serving on")

    def write_config(self, extra: str) -> None:
        self.config.write_text(
            f"listen: {{port: {self.port}, transports: [udp]}}\nflows: [flows]\nrecordings: rec\n"
            f"cdr: cdr.jsonl\nmetrics_port: {self.metrics_port}\n{extra}")

    def wait_for_log(self, text: str, timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the server log:\n{self.log_text()}")

    def log_text(self) -> str:
        return (self.folder / "serve.log").read_text()

    def cdr(self) -> list[dict]:
        path = self.folder / "cdr.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
            self.proc.wait(5)
            raise AssertionError(f"ivr serve did not exit after SIGTERM:\n{self.log_text()[-6000:]}") from None
        finally:
            self.log.close()


@pytest.fixture
def serve(tmp_path):
    servers: list[ServeProcess] = []

    def start(extra_config: str = "", name: str = "") -> ServeProcess:
        folder = tmp_path / name if name else tmp_path
        folder.mkdir(exist_ok=True)
        server = ServeProcess(folder, extra_config)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(5)


def ivr_call(*args: str, timeout: float = 40) -> subprocess.CompletedProcess:
    # The timeout only bounds a hang: the calls last 6-8 s, but on a loaded machine the CLI's own
    # start-up (numpy, the endpoint) and a failover through Kamailio add seconds to that.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*IVR, "call", *args], capture_output=True, text=True, timeout=timeout, env=env)


def tone_share(path: Path, hz: float) -> float:
    with wave.open(str(path)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    return float(spectrum[(freqs > hz - 40) & (freqs < hz + 40)].sum() / max(spectrum.sum(), 1e-9))


def test_ivr_call_digits_reach_flow_prompt_reaches_caller_cdr_and_metrics(serve, tmp_path):
    server = serve()
    heard = tmp_path / "heard.wav"
    result = ivr_call(f"sip:e2e@127.0.0.1:{server.port}", "--dtmf", "+1s 4 +1s 2#", "--record", str(heard),
                      "--duration", "10")
    assert result.returncode == 0, result.stderr + server.log_text()
    assert "remote_hangup" in result.stdout  # the flow hung up after '#'
    assert tone_share(heard, 440) > 0.3  # the prompt, heard by the caller
    server.wait_for_log(" ended ")
    metrics = server.metrics()
    assert server.stop() == 0
    [record] = server.cdr()
    assert record["flow"] == "e2e" and record["digits"] == "42#" and record["outcome"] == "local_hangup"
    assert record["flow_outcome"] == "hangup"
    assert record["answer"] is not None and record["to"].startswith("sip:e2e@")
    assert 'ivr_calls_total{outcome="local_hangup"} 1.0' in metrics
    assert 'ivr_dtmf_events_total{source="rfc4733"} 3.0' in metrics
    assert "ivr_rtp_jitter_ms_count 1.0" in metrics


def test_sigterm_with_live_call_sends_bye_and_finalises_recording(serve, tmp_path):
    server = serve("drain_timeout: 0.5\n")
    caller = subprocess.Popen([*IVR, "call", f"sip:voicemail@127.0.0.1:{server.port}", "--duration", "12"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    server.wait_for_log(" answered")
    recording = tmp_path / "rec" / "msg.wav"

    def recorded_frames() -> int:  # the header's sizes are rewritten every second
        try:
            with wave.open(str(recording)) as wav:
                return wav.getnframes()
        except (FileNotFoundError, EOFError, wave.Error):
            return 0

    wait_for_sync(lambda: recorded_frames() >= 8000, timeout=20, message="a second recorded")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    out, err = caller.communicate(timeout=10)
    assert caller.returncode == 0 and "remote_hangup" in out, out + err  # BYE from the server
    [record] = server.cdr()
    assert record["outcome"] == "shutdown"
    assert record["recordings"] == [str(recording)]
    with wave.open(str(recording)) as wav:  # a valid header: sizes match the data written
        assert wav.getframerate() == 8000 and wav.getnframes() >= 8000
        assert wav.getnframes() * 2 + 44 == recording.stat().st_size


def test_sighup_reloads_configuration(serve):
    server = serve('limits: {allow: ["10.0.0.0/8"]}\n')
    refused = ivr_call(f"sip:e2e@127.0.0.1:{server.port}", "--duration", "1", timeout=10)
    assert refused.returncode == 1 and "403" in refused.stderr
    server.write_config("")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_log("configuration and flows reloaded")
    accepted = ivr_call(f"sip:e2e@127.0.0.1:{server.port}", "--dtmf", "+1s 1#", "--duration", "6")
    assert accepted.returncode == 0, accepted.stderr
    assert server.stop() == 0
    assert [r["outcome"] for r in server.cdr()] == ["rejected_403", "local_hangup"]


@pytest.mark.peer
def test_sipp_call_with_audio_and_rfc4733_digit(serve, tmp_path):
    server = serve()
    # SIPp's built-in uac_pcap: 8 s of PCMA audio, an RFC 4733 '1', 1 s pause, BYE
    with SippRunner(tmp_path / "sipp", "uac_pcap", remote=("127.0.0.1", server.port), service="sipp",
                    extra=["-timeout", "13s", "-timeout_error"]) as sipp:
        status = sipp.wait(15)
    assert status == 0, sipp.log()[-2000:] + server.log_text()
    server.wait_for_log(" ended ")
    assert server.stop() == 0
    [record] = server.cdr()
    assert record["flow"] == "sipp" and record["digits"] == "1" and record["outcome"] == "remote_hangup"


@pytest.mark.peer
def test_registers_to_kamailio_and_answers_calls_routed_by_it(serve, tmp_path):
    from tests.helpers.peers import KamailioRunner

    with KamailioRunner(tmp_path / "kamailio") as kamailio:
        server = serve(f"accounts: [{{username: alice, password: secret, server: 127.0.0.1, "
                       f"port: {kamailio.port}}}]\nroutes: {{alice: e2e}}\n")
        deadline = time.monotonic() + 5
        while "alice" not in kamailio.registrations() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"127.0.0.1:{server.port}" in kamailio.registrations()
        result = ivr_call(f"sip:alice@127.0.0.1:{kamailio.port}", "--dtmf", "+1s 7#", "--duration", "8")
        assert result.returncode == 0 and "remote_hangup" in result.stdout, result.stderr + server.log_text()
        assert server.stop() == 0
    [record] = server.cdr()
    assert record["flow"] == "e2e" and record["digits"] == "7#"


@pytest.mark.peer
def test_dispatcher_fails_over_from_a_draining_instance(serve, tmp_path):
    from tests.helpers.peers import KamailioRunner

    first = serve("drain_timeout: 60\n", name="a")
    second = serve(name="b")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with KamailioRunner(tmp_path / "kamailio", dispatch_to=[("127.0.0.1", first.port),
                                                           ("127.0.0.1", second.port)]) as kamailio:
        # a live call keeps the first instance draining (503 to new INVITEs) after SIGTERM, for
        # longer than the two calls below take even on a loaded machine: an instance that has
        # already exited answers nothing, and that is not what this test is about
        live = subprocess.Popen([*IVR, "call", f"sip:voicemail@127.0.0.1:{first.port}", "--duration", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        first.wait_for_log(" answered")
        first.proc.send_signal(signal.SIGTERM)
        first.wait_for_log("stopping: no new calls")
        for _ in range(2):  # round robin: at least one of these is offered to the draining one
            result = ivr_call(f"sip:ivr@127.0.0.1:{kamailio.port}", "--dtmf", "+1s #", "--duration", "6")
            assert result.returncode == 0, result.stderr + kamailio.log()
        live.communicate(timeout=45)
        assert first.proc.wait(15) == 0
    assert second.stop() == 0
    assert [r["outcome"] for r in second.cdr()] == ["local_hangup", "local_hangup"]
    assert [r["outcome"] for r in first.cdr()].count("rejected_503") == 1
