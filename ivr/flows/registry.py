"""The action registry: every action a flow may name, built-in or added by a plugin."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from ivr.flows.session import FlowSession

log = logging.getLogger(__name__)

ActionHandler = Callable[["FlowSession", Any], Awaitable[str]]


@dataclass(frozen=True)
class ActionSpec:
    """How the executor runs one action.

    ``outcomes`` are the outcomes the action may return (``ivr check`` warns about ``on:`` keys
    outside them; empty means "any"). ``routes`` maps the action's own parameters to outcome
    targets (a menu's ``options``, a ``goto``'s node); ``enters`` lists nodes the action runs
    itself (a ``sub``'s node), for the checker. ``needs_media``: the executor answers the
    call before running it. ``renders_params``: the executor renders every string of the
    parameters as a template before calling the handler (built-ins render their own fields).
    """

    name: str
    handler: ActionHandler
    schema: dict[str, Any] | None = None
    outcomes: tuple[str, ...] = ()
    routes: Callable[[Any], dict[str, str]] | None = None
    enters: Callable[[Any], list[str]] | None = None
    needs_media: bool = True
    renders_params: bool = True
    builtin: bool = False


@dataclass
class ActionRegistry:
    """Name -> :class:`ActionSpec`. Built once per process and shared by every call."""

    _specs: dict[str, ActionSpec] = field(default_factory=dict)

    @classmethod
    def with_builtins(cls) -> "ActionRegistry":
        """A registry holding every built-in action (play, menu, collect, record, ...)."""
        from ivr.flows.actions import builtin_specs

        registry = cls()
        for spec in builtin_specs():
            registry._specs[spec.name] = spec
        return registry

    def register(
        self,
        name: str,
        handler: ActionHandler,
        schema: dict[str, Any] | None = None,
        outcomes: Iterable[str] = (),
    ) -> None:
        """Add a plugin action (the ``register`` callable of ``ivr_register_actions``).

        ``handler`` is ``async def handler(session, params) -> str``; it receives the node's
        parameters with every string rendered as a template. A plugin may not replace a built-in.
        """
        if not name or not name.replace("_", "a").isalnum():
            raise ValueError(f"bad action name {name!r}")
        existing = self._specs.get(name)
        if existing is not None and existing.builtin:
            raise ValueError(f"action {name!r} is built in and cannot be replaced")
        if existing is not None:
            log.warning("action %r registered twice; the later registration wins", name)
        self._specs[name] = ActionSpec(name, handler, schema, tuple(outcomes))

    def add(self, spec: ActionSpec) -> None:
        """Add a fully described action (used for the built-ins)."""
        self._specs[spec.name] = spec

    def get(self, name: str) -> ActionSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[ActionSpec]:
        return [self._specs[name] for name in sorted(self._specs)]
