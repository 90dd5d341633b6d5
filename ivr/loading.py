"""What a process runs flows with: the configuration, the plugins and their actions, checked.

``ivr serve``, ``ivr check``, ``ivr simulate``, ``ivr schema`` and :mod:`ivr.testing` all start
from :func:`load_setup`, so a flow is checked and simulated with the configuration and plugins
it will be served with. Every mistake found on the way (a plugin refused at load time, a plugin
refusing its configuration section, a ``plugins.NAME`` section no plugin reads, an action that
cannot be registered) is one line in :attr:`Setup.problems`; ``serve`` and ``check`` stop on
them before any call, the other tools print them and go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pluggy

from ivr.config import ConfigError, IvrConfig, did_you_mean, load_config
from ivr.flows.actions import collect_actions
from ivr.flows.registry import ActionRegistry
from ivr.plugins import make_plugin_manager

__all__ = ["Setup", "SetupError", "configure_plugins", "load_setup", "plugin_names", "plugins_to_load"]

log = logging.getLogger(__name__)


class SetupError(Exception):
    """The process cannot start as configured; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Setup:
    """The configuration, the plugin manager (configured) and the actions, with the problems."""

    config: IvrConfig
    plugins: pluggy.PluginManager
    actions: ActionRegistry
    problems: list[str] = field(default_factory=list)

    def flow_config(self) -> dict[str, Any]:
        """What flows read as ``{{ config.x }}``."""
        return self.config.flow_config()


def plugins_to_load(config: IvrConfig) -> list[str]:
    """``plugins.load``: module names of extra plugins (a single name is accepted too)."""
    names = config.plugins.get("load") or []
    return [names] if isinstance(names, str) else [str(name) for name in names]


def load_setup(config: IvrConfig | str | Path | None = None, overrides: Sequence[str] = (), *,
               plugins: pluggy.PluginManager | None = None) -> Setup:
    """Load the configuration (a file, or an :class:`IvrConfig` already parsed; ``overrides``
    are ``--set KEY=VALUE`` items), build the plugin manager as ``ivr serve`` does (or take
    ``plugins``), hand every plugin its configuration and collect the actions.

    Raises :class:`ivr.config.ConfigError` for a configuration that cannot be read or a
    ``--set plugins.NAME...`` naming no plugin; every other mistake is a line in
    :attr:`Setup.problems`.
    """
    if not isinstance(config, IvrConfig):
        config = load_config(config, overrides)
    pm = plugins if plugins is not None else make_plugin_manager(extra_plugins=plugins_to_load(config))
    names = plugin_names(pm)
    for item in overrides:  # a --set for a plugin that is not there is a typo: stop at once
        path = item.partition("=")[0].split(".")
        if path[0] == "plugins" and len(path) > 2 and path[1] not in names:
            raise ConfigError(f"--set {item}", None, f"no plugin named {path[1]!r} is loaded"
                                                     f"{did_you_mean(path[1], names)}")
    problems = list(getattr(pm, "problems", []))
    problems += configure_plugins(pm, config)
    actions = collect_actions(pm)
    problems += actions.problems
    return Setup(config, pm, actions, problems)


def plugin_names(pm: pluggy.PluginManager) -> set[str]:
    """The names a ``plugins.NAME`` section may use: every plugin's name and its last dotted
    part, blocked plugins included (their sections are not typos)."""
    names: set[str] = set()
    for name, _ in pm.list_name_plugin():
        names.update((name, name.rsplit(".", 1)[-1]))
    return names


def configure_plugins(pm: pluggy.PluginManager, config: IvrConfig) -> list[str]:
    """Call every plugin's ``ivr_configure`` with ``config``, one at a time; return one line per
    plugin that refused its section (raised) and per ``plugins.NAME`` section that names no
    plugin. (The engine makes the historic call, for plugins registered later, when it starts.)"""
    problems = []
    names = plugin_names(pm)
    for section in config.plugins:
        if section != "load" and section not in names:
            problems.append(f"{config.source}: plugins.{section}: no plugin of that name is loaded"
                            f"{did_you_mean(section, names)}")
    failed: dict[str, BaseException] = {}
    for impl in pm.hook.ivr_configure.get_hookimpls():
        try:
            impl.function(config=config.raw)
        except Exception as exc:
            failed[impl.plugin_name] = exc
    for plugin, exc in failed.items():
        problems.append(f"plugin {plugin}: refuses its configuration: {exc}")
    return problems
