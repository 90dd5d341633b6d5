"""The built-in actions, registered through ``ivr_register_actions`` as a plugin's are.

Each module exposes ``SPECS``, the :class:`ActionSpec` list it adds; :func:`collect_actions`
builds the registry a process uses.
"""

from __future__ import annotations

from typing import Callable

import pluggy

from ivr import hookimpl
from ivr.flows.actions import control, digits, http, listen, media
from ivr.flows.registry import ActionRegistry

__all__ = ["collect_actions", "ivr_register_actions"]


@hookimpl
def ivr_register_actions(register: Callable[..., None]) -> None:
    """Register every built-in action (play, menu, collect, record, sub, transfer, ...)."""
    for spec in (*media.SPECS, *digits.SPECS, *listen.SPECS, *control.SPECS, *http.SPECS):
        register(spec.name, spec.handler, spec.schema, spec.outcomes, routes=spec.routes,
                 enters=spec.enters, needs_media=spec.needs_media, renders_params=spec.renders_params)


def collect_actions(pm: pluggy.PluginManager | None = None) -> ActionRegistry:
    """The built-in actions (reserved: a plugin cannot replace one), then every action the
    plugins of ``pm`` register through ``ivr_register_actions`` (a registration that fails is
    one line in the registry's ``problems``)."""
    registry = ActionRegistry()
    ivr_register_actions(registry.register)
    registry.reserve()
    if pm is not None:
        # one implementation at a time: a mistake in one plugin costs only that plugin's action
        for impl in reversed(pm.hook.ivr_register_actions.get_hookimpls()):
            registry.register_from(impl.plugin_name, impl.function)
    return registry

