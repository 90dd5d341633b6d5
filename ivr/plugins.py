"""The plugin manager of the ``ivr`` engine, and fault-isolating calls into plugins.

:func:`make_plugin_manager` builds the ``pluggy.PluginManager("ivr")``: hookspecs added, the
built-ins of ``ivr_plugins/`` registered by module name exactly as a third-party plugin would be,
then third-party plugins from the ``ivr`` entry-point group. Three environment variables steer it:

``IVR_PLUGINS``
    Comma-separated plugin names to load; every other built-in or entry-point plugin is blocked.
    A name matches a plugin's full name (``ivr_plugins.vad``) or its last dotted part (``vad``).
``IVR_DISABLE_PLUGINS``
    Comma-separated names to block (same matching), applied after ``IVR_PLUGINS``.
``IVR_TRACE_HOOKS=1``
    Log every hook call made through ``pm.hook`` (pluggy tracing) at DEBUG on this module's logger.

A plugin with a mistake that would make a hook never run, or fail on every call, is refused at
load time with one line in ``pm.problems`` (the caller reports them): a ``@hookimpl`` whose name is no hook
("did you mean ivr_audio_in?"), an argument the hook does not pass, a module that cannot be
imported. ``ivr serve`` and ``ivr check`` then stop before any call; the other tools go on
without it.

An exception raised by a plugin must fail only what it was working on: :func:`call_hook` fails
the one hook call and names the plugin in the log; :class:`MediaHookDispatcher` calls the batched
media hooks implementation by implementation and, when one raises, re-runs it call by call to
find the call(s) that made it raise, so only those calls are failed. :class:`MediaPipeline` is
one engine tick: both media hooks over one batch.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import os
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pluggy

from ivr import hookspecs
from ivr.audio import FRAME_SAMPLES
from ivr.call import AudioBatch

if TYPE_CHECKING:  # pragma: no cover
    from ivr.call import CallContext

log = logging.getLogger(__name__)

PROJECT_NAME = "ivr"
ENTRY_POINT_GROUP = "ivr"

#: The built-in plugins, registered by module name (in this order: later ones run first, pluggy
#: calls implementations last-registered-first unless tryfirst/trylast say otherwise).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "ivr_plugins.bot",
    "ivr_plugins.stt",
    "ivr_plugins.recording",
    "ivr_plugins.tts",
    "ivr_plugins.playback",
    "ivr_plugins.dtmf",
    "ivr_plugins.vad",
)

MEDIA_HOOKS = ("ivr_audio_in", "ivr_audio_out")


class IvrPluginManager(pluggy.PluginManager):
    """A ``pluggy.PluginManager`` that counts registrations, so hot paths that cache hook
    implementations (the media dispatcher) know when to refresh their cache."""

    def __init__(self, project_name: str = PROJECT_NAME) -> None:
        super().__init__(project_name)
        #: Incremented on every register/unregister.
        self.generation = 0
        #: One line per plugin refused at load time (see :func:`hook_mistakes`).
        self.problems: list[str] = []

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        self.generation += 1
        return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        self.generation += 1
        return removed


def _names(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


def _matches(plugin_name: str, wanted: set[str]) -> bool:
    return plugin_name in wanted or plugin_name.rsplit(".", 1)[-1] in wanted


def make_plugin_manager(
    builtins: bool = True,
    *,
    entry_points: bool = True,
    environ: Mapping[str, str] | None = None,
    extra_plugins: Iterable[str] = (),
) -> IvrPluginManager:
    """Build the engine's plugin manager.

    ``builtins`` registers the modules of :data:`BUILTIN_PLUGINS`; ``entry_points`` loads the
    ``ivr`` entry-point group; ``extra_plugins`` are more module names to import and register
    (from the configuration's ``plugins.load`` list). ``environ`` defaults to ``os.environ``.
    A built-in or extra module that cannot be imported is logged and skipped.
    """
    env = os.environ if environ is None else environ
    pm = IvrPluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)

    only = _names(env.get("IVR_PLUGINS"))
    disabled = _names(env.get("IVR_DISABLE_PLUGINS"))

    def allowed(name: str) -> bool:
        if only and not _matches(name, only):
            return False
        return not _matches(name, disabled)

    module_names = list(BUILTIN_PLUGINS if builtins else ()) + list(extra_plugins)
    for module_name in module_names:
        if not allowed(module_name):
            pm.set_blocked(module_name)
            log.info("plugin %s not loaded (IVR_PLUGINS / IVR_DISABLE_PLUGINS)", module_name)
            continue
        if not pm.has_plugin(module_name):
            _import_and_register(pm, module_name)

    if entry_points:
        # Names the environment excludes are not even imported.
        loaded = 0
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if not allowed(ep.name):
                pm.set_blocked(ep.name)
                log.info("plugin %s not loaded (IVR_PLUGINS / IVR_DISABLE_PLUGINS)", ep.name)
            elif not pm.has_plugin(ep.name) and not pm.is_blocked(ep.name):
                try:
                    plugin = ep.load()
                except Exception as exc:  # a third party's import-time error: refuse that plugin
                    _refuse(pm, ep.name, f"cannot be loaded ({ep.value}): {type(exc).__name__}: {exc}")
                    continue
                loaded += register_checked(pm, plugin, ep.name)
        if loaded:
            log.info("loaded %d plugin(s) from the %r entry-point group", loaded, ENTRY_POINT_GROUP)

    if env.get("IVR_TRACE_HOOKS", "").strip() not in ("", "0", "false", "no"):
        enable_hook_tracing(pm)
    log.debug("plugins: %s", ", ".join(sorted(name for name, _ in pm.list_name_plugin())))
    return pm


def sync_extra_plugins(pm: pluggy.PluginManager, loaded: Sequence[str],
                       wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """Make the extra plugins (``plugins.load``) of ``pm`` go from ``loaded`` to ``wanted``, as on
    a configuration reload: modules newly named are imported and registered (pluggy replays the
    historic ``ivr_configure`` calls to them), modules no longer named are unregistered. Built-ins
    and names the environment blocks are left alone; a module that cannot be imported is logged
    and skipped (named again, it is tried again at the next reload). Returns ``(added, removed)``.
    """
    added: list[str] = []
    removed: list[str] = []
    for name in loaded:
        if name not in wanted and name not in BUILTIN_PLUGINS and pm.has_plugin(name):
            pm.unregister(name=name)
            removed.append(name)
    for name in wanted:
        if not pm.has_plugin(name) and not pm.is_blocked(name) and _import_and_register(pm, name):
            added.append(name)
    return added, removed


def _import_and_register(pm: pluggy.PluginManager, module_name: str) -> bool:
    """Import ``module_name`` and register it under that name; refuse it (one line in
    ``pm.problems``) when it cannot be imported or has a mistake."""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        _refuse(pm, module_name, f"cannot be imported: {type(exc).__name__}: {exc}")
        return False
    return register_checked(pm, module, module_name)


def register_checked(pm: pluggy.PluginManager, plugin: object, name: str) -> bool:
    """Register ``plugin`` as ``name`` unless :func:`hook_mistakes` finds a mistake in it, in
    which case it is refused: one line per mistake in ``pm.problems``."""
    mistakes = hook_mistakes(pm, plugin)
    if not mistakes:
        try:
            pm.register(plugin, name=name)
            return True
        except (ValueError, pluggy.PluginValidationError) as exc:
            mistakes = [str(exc).splitlines()[0]]
    for mistake in mistakes:
        _refuse(pm, name, mistake)
    return False


def hook_mistakes(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """What would make a hook of ``plugin`` never run or fail on every call, one line each:
    a ``@hookimpl`` whose name is no hook of ``pm``, an argument its hook does not pass, and a
    function named like a hook but not marked ``@hookimpl``."""
    mistakes = []
    hooks = {name for name in dir(pm.hook) if not name.startswith("_")}
    for attr in dir(plugin):
        try:
            function = getattr(plugin, attr)
        except Exception:  # a property that raises is nothing pluggy would call
            continue
        if not callable(function):
            continue
        marked = pm.parse_hookimpl_opts(plugin, attr) is not None
        if not marked:
            if attr in hooks and attr.startswith(f"{PROJECT_NAME}_") and inspect.isfunction(function):
                mistakes.append(f"{attr} is not marked @hookimpl, so it is never called "
                                f"(add `from ivr import hookimpl` and `@hookimpl`)")
            continue
        if attr not in hooks:
            close = difflib.get_close_matches(attr, sorted(hooks), n=1)
            hint = f" (did you mean {close[0]}?)" if close else " (hooks: ivr/hookspecs.py)"
            mistakes.append(f"{attr} is no hook{hint}")
            continue
        spec = getattr(pm.hook, attr).spec
        passed = list(spec.argnames) if spec is not None else []
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            continue
        unknown = [p.name for p in parameters
                   if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                   and p.name not in passed]
        if unknown:
            mistakes.append(f"{attr}() takes {', '.join(repr(n) for n in unknown)}, which the hook does not "
                            f"pass (it passes: {', '.join(passed) or 'nothing'})")
    return mistakes


def _refuse(pm: pluggy.PluginManager, name: str, mistake: str) -> None:
    line = f"plugin {name}: {mistake}; not loaded"
    log.debug("%s", line)  # the caller reports pm.problems
    problems = getattr(pm, "problems", None)
    if problems is not None:
        problems.append(line)


def enable_hook_tracing(pm: pluggy.PluginManager) -> None:
    """Log every hook call through ``pm.hook`` (arguments and result) at DEBUG."""
    pm.trace.root.setwriter(lambda message: log.debug("hook trace: %s", message.rstrip()))
    pm.enable_tracing()


# -- fault isolation ----------------------------------------------------------------------


def plugin_of_exception(pm: pluggy.PluginManager, hook_name: str, exc: BaseException) -> str:
    """The name of the plugin whose implementation of ``hook_name`` raised ``exc``.

    Found by matching the traceback's frames against each implementation's code object, so it
    costs nothing unless something has already failed.
    """
    codes = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        codes[getattr(impl.function, "__code__", None)] = impl.plugin_name
    tb: TracebackType | None = exc.__traceback__
    for frame, _ in traceback.walk_tb(tb):
        name = codes.get(frame.f_code)
        if name is not None:
            return name
    return "<unknown plugin>"


class HookCallError(RuntimeError):
    """A plugin raised inside a hook call; ``plugin`` names it and ``__cause__`` is the error."""

    def __init__(self, hook_name: str, plugin: str, exc: BaseException) -> None:
        super().__init__(f"plugin {plugin} failed in {hook_name}: {exc!r}")
        self.hook_name = hook_name
        self.plugin = plugin


def call_hook(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> Any:
    """Call ``pm.hook.<hook_name>(**kwargs)``; on an exception log it with the plugin's name and
    raise :class:`HookCallError` (the caller fails the one call concerned)."""
    try:
        return getattr(pm.hook, hook_name)(**kwargs)
    except Exception as exc:
        plugin = plugin_of_exception(pm, hook_name, exc)
        log.error("plugin %s raised in %s: %r", plugin, hook_name, exc, exc_info=exc)
        raise HookCallError(hook_name, plugin, exc) from exc


@dataclass(frozen=True)
class MediaFailure:
    """One call failed by a media hook implementation during one tick."""

    index: int  # row of the batch
    plugin: str
    hook_name: str
    error: BaseException


class MediaHookDispatcher:
    """Calls one batched media hook (``ivr_audio_in`` / ``ivr_audio_out``) every tick.

    Implementations are called directly (no pluggy hook call per tick): the list is cached and
    refreshed when the plugin manager's ``generation`` changes. Order is pluggy's (tryfirst first,
    then last-registered first, trylast last). Wrappers are not supported on media hooks and are
    skipped with a warning.
    """

    def __init__(self, pm: pluggy.PluginManager, hook_name: str) -> None:
        if hook_name not in MEDIA_HOOKS:
            raise ValueError(f"{hook_name} is not a batched media hook")
        self.pm = pm
        self.hook_name = hook_name
        self._generation: int | None = None
        self._impls: list[tuple[str, Any, bool]] = []  # (plugin name, function, wants batch)
        #: Times an implementation raised on a whole batch but on no call alone.
        self.batch_errors = 0

    def _refresh(self) -> None:
        generation = getattr(self.pm, "generation", None)
        if generation is not None and generation == self._generation:
            return
        impls = []
        for impl in reversed(getattr(self.pm.hook, self.hook_name).get_hookimpls()):
            if impl.wrapper or impl.hookwrapper:
                log.warning("plugin %s: wrappers are not supported on %s; skipped",
                            impl.plugin_name, self.hook_name)
                continue
            impls.append((impl.plugin_name, impl.function, "batch" in impl.argnames))
        self._impls = impls
        self._generation = generation

    @property
    def plugin_names(self) -> list[str]:
        """Names of the plugins called, in call order."""
        self._refresh()
        return [name for name, _, _ in self._impls]

    def dispatch(self, batch: AudioBatch) -> list[MediaFailure]:
        """Run every implementation on ``batch``; return the calls that failed this tick.

        When an implementation raises on the whole batch it is re-run on one-call batches (sharing
        memory with ``batch``) so only the calls that raise again are reported; every other
        implementation still sees the whole batch.
        """
        self._refresh()
        failures: list[MediaFailure] = []
        if not batch.calls:
            return failures
        for plugin, function, wants_batch in self._impls:
            try:
                if wants_batch:
                    function(batch=batch)
                else:
                    function()
            except Exception as batch_exc:
                log.debug("plugin %s raised on the batch in %s (%r); isolating the call",
                          plugin, self.hook_name, batch_exc)
                found = False
                for index in range(len(batch.calls)):
                    try:
                        if wants_batch:
                            function(batch=batch.subset(index))
                        else:
                            function()
                    except Exception as exc:
                        failures.append(MediaFailure(index, plugin, self.hook_name, exc))
                        found = True
                if not found:
                    # It raised only on the whole batch (a shape assumption, say): no call is
                    # guilty, so none is failed; the calls lost this plugin's work this tick.
                    self.batch_errors += 1
                    log.error("plugin %s raised in %s on a batch of %d calls but on none alone: %r",
                              plugin, self.hook_name, len(batch.calls), batch_exc)
        return failures


class MediaPipeline:
    """One media tick over a batch of calls: ``ivr_audio_in`` on the caller frames (handed over
    read-only), then ``ivr_audio_out`` on a silent ``(N, 160)`` array that becomes the outbound
    frames. Failed calls' outbound rows are silenced; the caller decides what failing means."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.audio_in = MediaHookDispatcher(pm, "ivr_audio_in")
        self.audio_out = MediaHookDispatcher(pm, "ivr_audio_out")

    def run(self, calls: Sequence[CallContext], inbound: np.ndarray, now: float,
            tick: int, send: bool = True) -> tuple[np.ndarray, list[MediaFailure]]:
        """The outbound frames of ``calls`` and the calls that failed this tick (``send``: see
        :class:`~ivr.call.AudioBatch`)."""
        inbound = inbound.view()
        inbound.flags.writeable = False
        failures = self.audio_in.dispatch(AudioBatch(list(calls), inbound, now, tick, send))
        outbound = np.zeros((len(calls), FRAME_SAMPLES), dtype=np.int16)
        out_failures = self.audio_out.dispatch(AudioBatch(list(calls), outbound, now, tick, send))
        for failure in out_failures:
            outbound[failure.index] = 0  # never send half-written audio of a failed call
        return outbound, failures + out_failures
