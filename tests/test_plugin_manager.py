"""The plugin manager: built-ins by name, entry points, IVR_PLUGINS / IVR_DISABLE_PLUGINS,
tracing, and naming the plugin that raised."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ivr import hookimpl
from ivr.call import AudioBatch, CallContext
from ivr.plugins import (
    BUILTIN_PLUGINS,
    HookCallError,
    MediaHookDispatcher,
    call_hook,
    make_plugin_manager,
)

PLUGIN_SOURCE = textwrap.dedent(
    """
    from ivr import hookimpl

    @hookimpl
    def ivr_tts(text, options):
        return "/tmp/{name}-" + text + ".wav"
    """
)


@pytest.fixture
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two third-party plugins installed as distributions with ``ivr`` entry points."""
    for name in ("greeter", "shouter"):
        (tmp_path / f"ivrtest_{name}.py").write_text(PLUGIN_SOURCE.format(name=name))
        dist = tmp_path / f"ivrtest_{name}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ivrtest-{name}\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(f"[ivr]\n{name} = ivrtest_{name}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("greeter", "shouter"):
        sys.modules.pop(f"ivrtest_{name}", None)


def test_entry_point_plugins_are_loaded_by_name(installed_plugins):
    pm = make_plugin_manager(builtins=False, environ={})
    assert pm.has_plugin("greeter") and pm.has_plugin("shouter")
    # both implement the firstresult ivr_tts; the one registered last answers first
    assert pm.hook.ivr_tts(text="hi", options={}) in ("/tmp/greeter-hi.wav", "/tmp/shouter-hi.wav")


def test_ivr_plugins_restricts_and_blocked_plugins_are_not_imported(installed_plugins):
    pm = make_plugin_manager(builtins=False, environ={"IVR_PLUGINS": "greeter"})
    assert pm.has_plugin("greeter") and not pm.has_plugin("shouter")
    assert pm.is_blocked("shouter") and "ivrtest_shouter" not in sys.modules
    assert pm.hook.ivr_tts(text="x", options={}) == "/tmp/greeter-x.wav"


def test_ivr_disable_plugins_blocks_named_plugins(installed_plugins):
    pm = make_plugin_manager(builtins=False, environ={"IVR_DISABLE_PLUGINS": "greeter"})
    assert pm.has_plugin("shouter") and not pm.has_plugin("greeter")


def test_builtins_are_registered_by_module_name_and_short_names_match():
    pm = make_plugin_manager(entry_points=False, environ={"IVR_PLUGINS": "vad,ivr_plugins.dtmf"})
    for name in BUILTIN_PLUGINS:
        wanted = name in ("ivr_plugins.vad", "ivr_plugins.dtmf")
        assert pm.is_blocked(name) is not wanted
    importable = [n for n in ("ivr_plugins.vad", "ivr_plugins.dtmf") if _importable(n)]
    registered = [n for n, p in pm.list_name_plugin() if p is not None and n.startswith("ivr_plugins.")]
    assert sorted(registered) == sorted(importable)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_extra_plugins_by_module_name(installed_plugins):
    pm = make_plugin_manager(builtins=False, entry_points=False, environ={},
                             extra_plugins=["ivrtest_greeter", "no_such_module_xyz"])
    assert pm.has_plugin("ivrtest_greeter") and not pm.has_plugin("no_such_module_xyz")


def test_trace_hooks_logs_hook_calls(installed_plugins, caplog):
    caplog.set_level(logging.DEBUG, logger="ivr.plugins")
    pm = make_plugin_manager(builtins=False, environ={"IVR_TRACE_HOOKS": "1"})
    pm.hook.ivr_tts(text="traced", options={})
    traces = [r.getMessage() for r in caplog.records if "hook trace" in r.getMessage()]
    assert any("ivr_tts" in t and "traced" in t for t in traces)
    quiet = make_plugin_manager(builtins=False, environ={})
    caplog.clear()
    quiet.hook.ivr_tts(text="untraced", options={})
    assert not [r for r in caplog.records if "hook trace" in r.getMessage()]


class Faulty:
    @hookimpl
    def ivr_call_started(self, call):
        raise KeyError("missing")


class Fine:
    @hookimpl
    def ivr_call_started(self, call):
        call.vars["fine"] = True


def test_call_hook_names_the_plugin_that_raised(caplog):
    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})
    pm.register(Fine(), name="fine")
    pm.register(Faulty(), name="faulty")
    call = CallContext("c1", pm.hook)
    with pytest.raises(HookCallError) as info:
        call_hook(pm, "ivr_call_started", call=call)
    assert info.value.plugin == "faulty" and isinstance(info.value.__cause__, KeyError)
    assert any("faulty" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_media_dispatcher_follows_registration_changes_and_pluggy_order():
    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})
    order: list[str] = []

    def plugin(label: str, **opts):
        class P:
            @hookimpl(**opts)
            def ivr_audio_out(self, batch):
                order.append(label)
        return P()

    dispatcher = MediaHookDispatcher(pm, "ivr_audio_out")
    batch = AudioBatch([CallContext("c", pm.hook)], np.zeros((1, 160), np.int16), 0.0, 1)
    assert dispatcher.dispatch(batch) == [] and order == []
    pm.register(plugin("last", trylast=True), name="last")
    pm.register(plugin("a"), name="a")
    pm.register(plugin("b"), name="b")
    dispatcher.dispatch(batch)
    assert order == ["b", "a", "last"]  # what pm.hook would do: LIFO, trylast at the end
    assert dispatcher.plugin_names == ["b", "a", "last"]
    pm.unregister(name="a")
    order.clear()
    dispatcher.dispatch(batch)
    assert order == ["b", "last"]


def test_media_dispatcher_isolates_the_guilty_call():
    pm = make_plugin_manager(builtins=False, entry_points=False, environ={})

    class PicksOnOdd:
        @hookimpl
        def ivr_audio_in(self, batch):
            for call in batch.calls:
                if int(call.id) % 2:
                    raise ValueError(call.id)

    class OnlyBatches:
        @hookimpl
        def ivr_audio_in(self, batch):
            if len(batch.calls) > 1:
                raise RuntimeError("cannot handle batches")

    pm.register(PicksOnOdd(), name="picky")
    dispatcher = MediaHookDispatcher(pm, "ivr_audio_in")
    calls = [CallContext(str(i), pm.hook) for i in range(6)]
    batch = AudioBatch(calls, np.zeros((6, 160), np.int16), 0.0, 1)
    failures = dispatcher.dispatch(batch)
    assert [(f.index, f.plugin) for f in failures] == [(1, "picky"), (3, "picky"), (5, "picky")]
    pm.unregister(name="picky")
    pm.register(OnlyBatches(), name="batchless")
    assert dispatcher.dispatch(batch) == [] and dispatcher.batch_errors == 1
