"""Meta-tests of ivr/hookspecs.py: every hook is documented, every hook is exercised by a test,
and an end-to-end engine run (real endpoint, real built-in plugins, a real flow, our own caller)
delivers every engine-driven hook to a plugin that records what it receives."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import threading
from pathlib import Path

from ivr import hookimpl, hookspecs
from ivr.audio import read_wav
from ivr.cli import place_call
from ivr.config import parse_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.plugins import make_plugin_manager

TESTS = Path(__file__).parent
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("ivr_"))

#: Hooks the engine run below cannot drive (no built-in flow action asks for them); each must be
#: exercised by another test file, which test_every_hook_is_exercised_by_some_test checks.
NOT_IN_ENGINE_RUN = {"ivr_stt", "ivr_bot_start", "ivr_bot_message", "ivr_bot_ended"}

FLOW = """\
flow: meta
start: hello
nodes:
  hello:
    play: {say: "Hello."}
    next: ask
  ask:
    collect: {prompt: {tone: "440", duration: 4s}, max_digits: 2, terminator: "#", timeout: 5s}
    on: {ok: message, timeout: message, invalid: message}
  message:
    record: {to: "meta.wav", beep: false, max_length: 30s, silence_timeout: 30s}
    next: bye
  bye: {hangup: {}}
"""


class HookRecorder:
    """Implements every hook, returns None (so firstresult hooks go on to the real plugins) and
    records the name of each hook it receives (some arrive on TTS worker threads)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def _saw(self, name: str) -> None:
        with self.lock:
            self.seen.add(name)


def _recording_impl(name: str):
    spec = getattr(hookspecs, name)
    params = list(inspect.signature(spec).parameters)

    def impl(self, **kwargs):
        self._saw(name)

    impl.__name__ = name
    impl.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params])
    return hookimpl(impl)


for _name in HOOKS:
    setattr(HookRecorder, _name, _recording_impl(_name))


def test_every_hook_has_a_docstring_and_the_ivr_prefix():
    assert len(HOOKS) >= 16
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 40, f"{name} needs a docstring saying when it is called and what it returns"
    spec_names = {n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction)} - {"hookspec", "hookimpl"}
    assert all(n.startswith("ivr_") for n in spec_names if not n.startswith("_"))


def test_every_hook_is_exercised_by_some_test():
    sources = {str(p.relative_to(TESTS)): p.read_text() for p in TESTS.rglob("test_*.py") if p.name != Path(__file__).name}
    for name in NOT_IN_ENGINE_RUN:
        users = [file for file, text in sources.items() if name in text]
        assert users, f"{name} is not exercised by any test"


async def test_end_to_end_run_delivers_every_engine_hook(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "meta.yaml").write_text(FLOW)
    speech = tmp_path / "caller.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "one two three four five six seven"], check=True)
    config = parse_config(
        f"listen: {{port: 0, transports: [udp]}}\nflows: [flows]\nrecordings: {tmp_path / 'rec'}\n",
        base_dir=tmp_path)
    pm = make_plugin_manager(entry_points=False, environ={})
    recorder = HookRecorder()
    pm.register(recorder, name="hook-recorder")  # registered last: called first
    engine = Engine(config, pm, flows=FlowStoreRunner(config, pm))
    await engine.start()
    port = engine.endpoint.local_address[1]
    caller = asyncio.create_task(place_call(f"sip:meta@127.0.0.1:{port}", dtmf="+2s 5#",
                                            play=str(speech), duration=14))
    try:
        for _ in range(200):  # until the flow is recording the caller
            if "ivr_start_recording" in recorder.seen and "ivr_speech" in recorder.seen:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    finally:
        await engine.stop(drain_timeout=0)  # BYE, recording finalised with reason "shutdown"
    report = await asyncio.wait_for(caller, 5)
    assert report.answered and report.end_reason == "remote_hangup"
    missing = set(HOOKS) - NOT_IN_ENGINE_RUN - recorder.seen
    assert not missing, f"hooks never delivered in the end-to-end run: {sorted(missing)}"
    assert len(read_wav(tmp_path / "rec" / "meta.wav")) > 0
