"""The README's serve command: ``make serve`` (``.venv/bin/ivr serve --config
examples/first-run.yaml``), run from the project root, is the auto-attendant
(``flows/attendant.yaml``) on 127.0.0.1:5060 with the office open whatever the time. It is called
by ``ivr call``, by SIPp and by baresip set up as the README says: the digit reaches the flow (the
engine logs it, and the flow acts on it: the prompt playing is cut and the next one starts at
once) and the prompts the README promises reach the caller.

The port is the README's, not a free one: when 5060 is taken the test fails and says by what.
The calls end before the voicemail would start recording, so nothing is written in the tree.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.helpers.e2e_audio import RATE, locate, tone_share
from tests.helpers.paths import DATA, PROJECT
from tests.helpers.peers import BaresipRunner, SippRunner
from tests.helpers.robust_server import IvrServeProcess

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]

PROMPTS = PROJECT / "flows" / "prompts"
E2E_DATA = DATA / "e2e"
README_PORT = 5060
#: (first prompt, the prompt that follows a '1' pressed during it) for each hours branch
BRANCHES = {"open": ("welcome.wav", "transferring.wav"), "closed": ("closed.wav", "vm_greeting.wav"),
            "holiday": ("holiday.wav", "vm_greeting.wav")}


def _port_user(port: int) -> str:
    """Who holds ``port`` (ss output), for the failure message."""
    result = subprocess.run(["ss", "-Hlunpt", f"sport = :{port}"], capture_output=True, text=True)
    return result.stdout.strip() or "(ss shows nothing)"


def _require_free(port: int) -> None:
    for kind, name in ((socket.SOCK_DGRAM, "UDP"), (socket.SOCK_STREAM, "TCP")):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                pytest.fail(f"127.0.0.1:{port}/{name} is busy ({exc.strerror}); the README's `ivr serve` "
                            f"needs it. Held by: {_port_user(port)}", pytrace=False)


class DefaultServe:
    """``.venv/bin/ivr serve`` from the project root, its output in ``log_path``."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        executable = Path(sys.executable).with_name("ivr")
        self.proc = subprocess.Popen([str(executable), "serve", "--config", "examples/first-run.yaml"], cwd=PROJECT, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while "ivr serving on" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"`ivr serve` did not start:\n{self.log()}", pytrace=False)
            time.sleep(0.05)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def call_events(self) -> dict[str, list[str]]:
        """Per call id, the ``ivr.calls`` events in order, e.g. ``dtmf digit=1 source=rfc4733``."""
        calls: dict[str, list[str]] = {}
        for match in re.finditer(r"ivr\.calls: call (\S+) (.*?)(?: \[call=.*\])?$", self.log(), re.M):
            calls.setdefault(match.group(1), []).append(match.group(2).strip())
        return calls

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(3)
        self._log.close()


@pytest.fixture(scope="module")
def default_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DefaultServe]:
    _require_free(README_PORT)
    server = DefaultServe(tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        assert "127.0.0.1:5060 (udp+tcp), flows: attendant" in server.log(), server.log()
        yield server
    finally:
        server.stop()


def _new_call(server: DefaultServe, known: set[str], timeout: float = 5.0) -> tuple[str, list[str]]:
    """The one call that appeared since ``known``, once it has finished."""
    deadline = time.monotonic() + timeout
    while True:
        fresh = {cid: ev for cid, ev in server.call_events().items() if cid not in known}
        if len(fresh) == 1 and any(e.startswith("finished") for e in next(iter(fresh.values()))):
            return next(iter(fresh.items()))
        assert time.monotonic() < deadline, f"no single finished new call: {fresh}\n{server.log()[-3000:]}"
        time.sleep(0.05)


def _prompt(name: str) -> np.ndarray:
    with wave.open(str(PROMPTS / name)) as wav:
        assert wav.getframerate() == RATE
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


def test_ivr_call_digit_reaches_the_attendant_and_its_prompts_reach_the_caller(default_serve, tmp_path):
    known = set(default_serve.call_events())
    heard_path = tmp_path / "heard.wav"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ivr")), "call", f"sip:attendant@127.0.0.1:{README_PORT}",
         "--dtmf", "+1s 1", "--record", str(heard_path), "--duration", "4.5"],
        capture_output=True, text=True, timeout=15, cwd=tmp_path)
    assert result.returncode == 0 and "sent 1" in result.stdout, result.stdout + result.stderr
    _, events = _new_call(default_serve, known)
    assert events[:2] == ["incoming", "answered"] and "dtmf digit=1 source=rfc4733" in events, events

    with wave.open(str(heard_path)) as wav:
        heard = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    # The call opens with one branch's first prompt ...
    scores = {branch: locate(_prompt(first)[: RATE // 2], heard[: 2 * RATE])
              for branch, (first, _) in BRANCHES.items()}
    branch, opening = max(scores.items(), key=lambda item: item[1].correlation)
    assert branch == "open", scores  # the README: the office is open under `make serve`
    assert opening.correlation > 0.9 and opening.seconds < 0.5, scores
    # ... cut by the key pressed at 1 s, and that branch's next prompt follows at once (it would
    # start only after the whole first prompt, 2.4 s or more, had the digit not reached the flow).
    first, following = BRANCHES[branch]
    after = locate(_prompt(following)[: RATE // 2], heard)
    assert after.correlation > 0.9, (branch, after)
    assert 1.0 < after.seconds < 1.8 < len(_prompt(first)) / RATE, (branch, after)


def test_sipp_digit_reaches_the_attendant(default_serve, tmp_path):
    known = set(default_serve.call_events())
    scenario = tmp_path / "uac_key.xml"
    scenario.write_text((E2E_DATA / "uac_key_then_bye.xml").read_text()
                        .replace("KEY_PCAP", "pcap/dtmf_2833_1.pcap"))
    with SippRunner(tmp_path / "sipp", scenario, remote=("127.0.0.1", README_PORT), service="attendant",
                    extra=["-timeout", "10s", "-timeout_error"]) as sipp:
        assert sipp.wait(12) == 0, sipp.log()[-3000:]
        messages = sipp.messages()
    call_id, events = _new_call(default_serve, known)
    assert f"Call-ID: {call_id}" in messages
    assert events[:2] == ["incoming", "answered"], events
    assert [e for e in events if e.startswith("dtmf")] == ["dtmf digit=1 source=rfc4733"], events
    assert "ended reason=remote_hangup" in events, events



def test_baresip_set_up_as_the_readme_says_hears_the_welcome(default_serve, tmp_path):
    """examples/baresip: its account (no registration) dials the attendant at once, and its
    config keeps 5060 free for the IVR. The sound card lines are the only ones swapped (the test
    has none): the microphone plays silence, what baresip hears is recorded."""
    example = PROJECT / "examples" / "baresip"
    account = next(line for line in (example / "accounts").read_text().splitlines()
                   if line.startswith("<sip:"))
    config = (example / "config").read_text()
    settings = [line for line in config.splitlines() if line and not line.startswith("#")]
    assert "sip_listen\t\t127.0.0.1:5070" in settings and not any("5060" in line for line in settings)
    for module in re.findall(r"^module\w*\s+(\S+)", config, re.M):
        assert (Path("/usr/lib/baresip/modules") / module).exists(), module
    known = set(default_serve.call_events())
    with BaresipRunner(tmp_path / "baresip", account=account, run_seconds=15,
                       commands=[f"/dial sip:attendant@127.0.0.1:{README_PORT}"]) as baresip:
        deadline = time.monotonic() + 8
        while not any("answered" in events for cid, events in default_serve.call_events().items()
                      if cid not in known):
            assert time.monotonic() < deadline, baresip.log()[-3000:] + default_serve.log()[-2000:]
            time.sleep(0.1)
        time.sleep(2.5)  # the welcome plays
        baresip.command("hangup")
        _, events = _new_call(default_serve, known, timeout=8)
        time.sleep(0.5)  # baresip closes its recording when the call ends
        (recording,) = baresip.recordings("dec")
    with wave.open(str(recording)) as wav:
        heard = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert events[:2] == ["incoming", "answered"], events
    welcome = locate(_prompt("welcome.wav")[: RATE // 2], heard[: 3 * RATE])
    assert welcome.correlation > 0.8, welcome

# -- SIGHUP: a configured server picks up a changed flow set ------------------------------------

GREETING = """\
flow: greeting
start: hello
nodes:
  hello: {{play: {{tone: "{hz}", duration: 1s}}, next: bye}}
  bye: {{hangup: }}
"""


def _call_and_hear(server: IvrServeProcess, path: Path) -> np.ndarray:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ivr")), "call", f"sip:greeting@127.0.0.1:{server.port}",
         "--record", str(path), "--duration", "4"], capture_output=True, text=True, timeout=12)
    assert result.returncode == 0 and "remote_hangup" in result.stdout, \
        result.stdout + result.stderr + server.log()[-3000:]
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


def test_sighup_switches_to_the_changed_flow(tmp_path: Path) -> None:
    with IvrServeProcess(tmp_path / "ivr", GREETING.format(hz=440), transports="[udp]") as server:
        # a new version of the flow in a new file, named by the new configuration
        (tmp_path / "ivr" / "greeting_v2.yaml").write_text(GREETING.format(hz=880))
        config = server.config_path.read_text()
        assert "flows: [flow.yaml]" in config
        server.config_path.write_text(config.replace("flows: [flow.yaml]", "flows: [greeting_v2.yaml]"))
        before = _call_and_hear(server, tmp_path / "before.wav")  # not re-read without SIGHUP
        server.signal(1)  # SIGHUP
        deadline = time.monotonic() + 5
        while "configuration and flows reloaded" not in server.log():
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.05)
        after = _call_and_hear(server, tmp_path / "after.wav")
        assert server.alive()
    assert tone_share(before, 440) > 0.8 and tone_share(before, 880) < 0.01
    assert tone_share(after, 880) > 0.8 and tone_share(after, 440) < 0.01
