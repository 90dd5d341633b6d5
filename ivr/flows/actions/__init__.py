"""The built-in actions. Each module exposes ``SPECS``: the :class:`ActionSpec` list it adds."""

from __future__ import annotations

from ivr.flows.registry import ActionSpec


def builtin_specs() -> list[ActionSpec]:
    """Every built-in action, as registered by :meth:`ActionRegistry.with_builtins`."""
    from ivr.flows.actions import control, digits, http, listen, media

    return [*media.SPECS, *digits.SPECS, *listen.SPECS, *control.SPECS, *http.SPECS]
