"""The testing kit for plugin and flow authors: no phone, no network, no engine, same rules.

Two rigs, importable from an installed ``simplesip-ivr`` (docs/plugins.md, "Testing"):

:func:`simulate_call`
    Runs a flow on a virtual call with your plugins and configuration, exactly as ``ivr
    simulate --config ...`` does: your actions run, your hooks see the call's events
    (``ivr_call_started``, ``ivr_dtmf``, ``ivr_speech``, ``ivr_call_ended``), the clock is
    virtual, so a 30 s menu timeout takes no time and the trace is the same on every run.
    Returns a :class:`CallResult`.

:class:`AudioRig`
    Drives ``ivr_audio_in`` / ``ivr_audio_out`` tick by tick with a deterministic media clock,
    for plugins that work on audio.

Both load plugins the way the server does (:func:`make_setup`): a hook with a misspelt name or
argument, an action handler with the wrong signature, or a plugin refusing its configuration
raises :class:`ivr.loading.SetupError` with the same one-line messages ``ivr check`` prints.

With pytest, the fixtures ``ivr_simulate`` and ``ivr_audio_rig`` (``pytest -p ivr.testing``,
or ``pytest_plugins = ["ivr.testing"]`` in ``conftest.py``) are the two rigs.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import yaml

from ivr.audio import FRAME_SAMPLES, FRAME_SECONDS
from ivr.call import AudioBatch, CallContext, PlayItem, RecordingDone
from ivr.config import IvrConfig, load_config, parse_config
from ivr.flows.model import Flow
from ivr.flows.session import TraceEntry
from ivr.flows.simulate import SimulationResult, run_simulation
from ivr.loading import Setup, SetupError, load_setup
from ivr.plugins import ENTRY_POINT_GROUP, make_plugin_manager, register_checked

__all__ = ["AudioRig", "CallResult", "events", "frames", "make_setup", "plugin_name", "simulate_call"]

ConfigLike = IvrConfig | Mapping[str, Any] | str | Path | None


def make_setup(*plugins: object, config: ConfigLike = None, overrides: Sequence[str] = (),
               builtins: bool = False, entry_points: bool = False, strict: bool = True) -> Setup:
    """The configuration, plugins and actions a test runs with, loaded as ``ivr serve`` loads them.

    ``plugins`` are modules or objects with ``@hookimpl`` functions, registered under
    :func:`plugin_name` (or ``(name, plugin)`` pairs, to name one yourself: the name is its
    configuration section). ``config`` is a configuration mapping as the YAML file would
    hold it (``{"plugins": {"acme": {"table": "accounts.csv"}}, "variables": {...}}``), a path to
    such a file, or ``None``; ``overrides`` are ``--set KEY=VALUE`` items. ``builtins`` adds the
    built-in plugins (vad, dtmf, playback, ...), ``entry_points`` the installed ones (off by
    default: a test sees only what it names). With ``strict`` (the default) any problem raises
    :class:`ivr.loading.SetupError`.
    """
    pm = make_plugin_manager(builtins, entry_points=entry_points, environ={})
    for plugin in plugins:
        name, plugin = plugin if isinstance(plugin, tuple) else (plugin_name(plugin), plugin)
        if pm.is_registered(plugin):
            continue
        unique, number = name, 1
        while pm.has_plugin(unique):  # two objects of one class: both register
            number += 1
            unique = f"{name}#{number}"
        register_checked(pm, plugin, unique)
    setup = load_setup(_config(config, overrides), plugins=pm)
    if strict and setup.problems:
        raise SetupError(setup.problems)
    return setup


def plugin_name(plugin: object) -> str:
    """The name the server would register ``plugin`` under: its entry-point name when it is an
    installed plugin module (``example = "ivr_example_plugin"`` gives ``example``), else its
    module or class name."""
    module = getattr(plugin, "__name__", None)
    if isinstance(module, str):
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.value == module:
                return ep.name
        return module
    return type(plugin).__name__


def _config(config: ConfigLike, overrides: Sequence[str]) -> IvrConfig:
    if isinstance(config, IvrConfig):
        return config
    if config is None or isinstance(config, (str, Path)):
        return load_config(config, overrides)
    return parse_config(yaml.safe_dump(dict(config)), "<test config>", overrides=overrides)


@dataclass
class CallResult:
    """What a simulated call did.

    ``outcome``: how the flow ended (``hangup``, ``caller_hangup``, ``transferred``,
    ``rejected``, ``error``, or ``time_limit`` when it was still running at the limit).
    ``trace``: every step (:class:`ivr.flows.session.TraceEntry`: ``time``, ``node``,
    ``event``, ``detail``), as ``ivr simulate`` prints it. ``vars``: the flow variables at the
    end. ``signalling``: what the flow asked of the call, in order (``("answer", None)``,
    ``("transfer", "sip:...")``, ``("reject", 486)``, ``("hangup", None)``). ``prompts``: every
    :class:`ivr.call.PlayItem` queued (``kind`` file/say/tone/silence, ``value``).
    ``recordings``: the :class:`ivr.call.RecordingDone` of each recording. ``call``: the
    :class:`ivr.call.CallContext` (``call.data`` holds your plugin's per-call state if it kept
    it).
    """

    outcome: str
    trace: list[TraceEntry]
    vars: dict[str, Any]
    signalling: list[tuple[str, Any]]
    prompts: list[PlayItem]
    recordings: list[RecordingDone]
    call: CallContext

    @property
    def nodes(self) -> list[str]:
        """The nodes entered, in order."""
        return [entry.node for entry in self.trace if entry.event == "enter"]

    @property
    def said(self) -> list[str]:
        """The text of every ``say`` prompt, in order."""
        return [str(item.value) for item in self.prompts if item.kind == "say"]

    def events(self, kind: str) -> list[TraceEntry]:
        """The trace entries of one kind (``"dtmf"``, ``"error"``, ``"outcome"``, ...)."""
        return [entry for entry in self.trace if entry.event == kind]

    def __str__(self) -> str:
        return "\n".join(str(entry) for entry in self.trace)


def simulate_call(
    flow: Flow | str | Path,
    *plugins: object,
    config: ConfigLike = None,
    setup: Setup | None = None,
    dtmf: str = "",
    say: str = "",
    speech: str = "",
    speech_wav: str = "",
    at: dt.datetime | str | None = None,
    tz: str = "UTC",
    caller: str = "sip:1001@127.0.0.1",
    callee: str = "sip:ivr@127.0.0.1",
    transfer_result: str = "ok",
    outcomes: Mapping[str, str] | None = None,
    time_limit: float = 3600.0,
) -> CallResult:
    """Run ``flow`` (a file, or a loaded :class:`ivr.flows.Flow`) once on a virtual call.

    ``plugins`` and ``config`` as :func:`make_setup` (or pass a ready ``setup``). The caller's
    side is scripted as ``ivr simulate`` scripts it: ``dtmf="+2s 1 +1s 2#"``,
    ``say="support@2.0"`` (matched against the grammar), ``speech="start@1,end@2"`` (voice
    activity), ``speech_wav="file.wav@2"`` (through the real recogniser); ``at`` the date and
    time the call arrives (in ``tz``). ``transfer_result`` is what a transfer returns,
    ``outcomes`` what actions needing a real peer return (``{"bot": "failed"}``).
    """
    if setup is None:
        setup = make_setup(*plugins, config=config)
    elif plugins or config is not None:
        raise TypeError("give either setup, or plugins and config")
    result: SimulationResult = run_simulation(
        flow, dtmf=dtmf, speech=speech, say=say, speech_wav=speech_wav, at=at, tz=tz, caller=caller,
        callee=callee, config=setup.flow_config(), actions=setup.actions, plugins=setup.plugins,
        transfer_result=transfer_result, outcomes=outcomes, time_limit=time_limit,
    )
    return CallResult(result.outcome, result.trace, result.vars, result.controller_actions, result.prompts,
                      result.recordings, result.call)


# -- audio --------------------------------------------------------------------------------


def frames(signal: np.ndarray) -> np.ndarray:
    """``signal`` (int16, 8 kHz) cut into 20 ms frames ``(n, FRAME_SAMPLES)``, the last one
    padded with silence."""
    signal = np.asarray(signal, dtype=np.int16)
    count = -(-len(signal) // FRAME_SAMPLES)
    padded = np.zeros(count * FRAME_SAMPLES, dtype=np.int16)
    padded[: len(signal)] = signal
    return padded.reshape(count, FRAME_SAMPLES)


def events(call: CallContext) -> list[Any]:
    """Take every event waiting on ``call`` (``DtmfEvent``, ``SpeechEvent``, ``PlaybackDone``,
    ...), in order."""
    taken = []
    while not call.events.empty():
        taken.append(call.events.get_nowait())
    return taken


class AudioRig:
    """Plugins driven tick by tick on real audio, with a media clock you control.

    ``rig.now`` is the media clock (seconds; +20 ms a tick) that calls made with :meth:`call`
    read, so time-based logic (de-duplication windows, silence timeouts) is deterministic. Each
    tick runs ``ivr_audio_in`` on the caller's frames and ``ivr_audio_out`` on silent frames,
    as the engine does, for all the calls at once. Plugins and config as :func:`make_setup`;
    ``rig.pm`` is the plugin manager, ``rig.setup`` the whole setup.
    """

    def __init__(self, *plugins: object, config: ConfigLike = None, builtins: bool = False) -> None:
        self.setup = make_setup(*plugins, config=config, builtins=builtins)
        self.pm = self.setup.plugins
        self.now = 0.0
        self.tick = 0

    def call(self, call_id: str = "call-1", *, started: bool = True, **kwargs: Any) -> CallContext:
        """A call reading the rig's clock (``from_user=...`` and the other
        :class:`ivr.call.CallContext` keywords); with ``started`` the plugins'
        ``ivr_call_started`` has run for it."""
        call = CallContext(call_id, self.pm.hook, clock=lambda: self.now, **kwargs)
        if started:
            self.pm.hook.ivr_call_started(call=call)
        return call

    def end(self, call: CallContext, reason: str = "remote_hangup") -> None:
        """End ``call``: the plugins' ``ivr_call_ended``."""
        self.pm.hook.ivr_call_ended(call=call, reason=reason)

    def step(self, calls: Sequence[CallContext], inbound: np.ndarray | None = None,
             send: bool = True) -> np.ndarray:
        """One 20 ms tick: the callers' frames ``(N, FRAME_SAMPLES)`` in (silence when
        ``None``), what the plugins send them ``(N, FRAME_SAMPLES)`` out. ``send=False`` is a
        catch-up tick after a stall (:attr:`ivr.call.AudioBatch.send`)."""
        calls = list(calls)
        if inbound is None:
            inbound = np.zeros((len(calls), FRAME_SAMPLES), dtype=np.int16)
        inbound = np.asarray(inbound, dtype=np.int16).view()
        inbound.flags.writeable = False
        self.now = round(self.now + FRAME_SECONDS, 6)
        self.tick += 1
        self.pm.hook.ivr_audio_in(batch=AudioBatch(calls, inbound, self.now, self.tick, send))
        out = np.zeros((len(calls), FRAME_SAMPLES), dtype=np.int16)
        self.pm.hook.ivr_audio_out(batch=AudioBatch(calls, out, self.now, self.tick, send))
        return out

    def feed(self, call: CallContext, signal: np.ndarray) -> np.ndarray:
        """Play ``signal`` (int16, 8 kHz) as the caller of ``call``, a frame a tick; return
        what the plugins sent back, as long."""
        out = [self.step([call], frame[None, :])[0] for frame in frames(signal)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)

    def run(self, calls: Sequence[CallContext], seconds: float) -> Iterator[np.ndarray]:
        """Silent ticks for ``seconds``; yields each tick's outbound frames."""
        for _ in range(round(seconds / FRAME_SECONDS)):
            yield self.step(calls)


# -- pytest -------------------------------------------------------------------------------


def _fixture(function: Any) -> Any:
    try:
        import pytest
    except ImportError:  # the kit works without pytest; only the fixtures need it
        return function
    return pytest.fixture(function)


@_fixture
def ivr_simulate() -> Any:
    """The fixture form of :func:`simulate_call`."""
    return simulate_call


@_fixture
def ivr_audio_rig() -> Any:
    """A factory of :class:`AudioRig`: ``rig = ivr_audio_rig(my_plugin, config={...})``."""
    return AudioRig
