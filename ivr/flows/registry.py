"""The action registry: every action a flow may name, built-in or added by a plugin."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

__all__ = ["ActionHandler", "ActionRegistry", "ActionSpec"]

log = logging.getLogger(__name__)

#: ``async def handler(session, params) -> str``: ``session`` is the call's
#: :class:`ivr.flows.session.FlowSession`, the result the outcome name.
ActionHandler = Callable[[Any, Any], Awaitable[str]]


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


@dataclass
class ActionRegistry:
    """Name -> :class:`ActionSpec`. Built once per process and shared by every call.

    Every action, built in or not, arrives through :meth:`register`, the ``register`` callable
    of the ``ivr_register_actions`` hook.
    """

    _specs: dict[str, ActionSpec] = field(default_factory=dict)
    _reserved: set[str] = field(default_factory=set)
    #: One line per action a plugin could not register (a bad name, a wrong handler signature).
    problems: list[str] = field(default_factory=list)

    def register(
        self,
        name: str,
        handler: ActionHandler,
        schema: dict[str, Any] | None = None,
        outcomes: Iterable[str] = (),
        *,
        routes: Callable[[Any], dict[str, str]] | None = None,
        enters: Callable[[Any], list[str]] | None = None,
        needs_media: bool = True,
        renders_params: bool = True,
    ) -> None:
        """Add an action (the ``register`` callable of ``ivr_register_actions``).

        ``handler`` is ``async def handler(session, params) -> str``; with ``renders_params``
        (the default) it receives the node's parameters with every string rendered as a
        template. ``schema`` is the JSON Schema of the parameters, ``outcomes`` the outcomes it
        may return; ``routes``, ``enters`` and ``needs_media`` are described on
        :class:`ActionSpec`. A reserved name (a built-in action) cannot be registered again.
        """
        if not name or not name.replace("_", "a").isalnum():
            raise ValueError(f"bad action name {name!r}")
        if name in self._reserved:
            raise ValueError(f"action {name!r} is built in and cannot be replaced")
        _check_handler(name, handler)
        if name in self._specs:
            log.warning("action %r registered twice; the later registration wins", name)
        self._specs[name] = ActionSpec(name, handler, schema, tuple(outcomes), routes, enters,
                                       needs_media, renders_params)

    def register_from(self, plugin: str, register_actions: Callable[..., Any]) -> None:
        """Run one plugin's ``ivr_register_actions`` implementation; an action it cannot register
        (or an exception) becomes one line in :attr:`problems` and its other actions still count."""

        def register(name: str, *args: Any, **kwargs: Any) -> None:
            try:
                self.register(name, *args, **kwargs)
            except (TypeError, ValueError) as exc:
                self._problem(plugin, str(exc))

        try:
            register_actions(register=register)
        except Exception as exc:
            self._problem(plugin, f"ivr_register_actions raised {type(exc).__name__}: {exc}")

    def _problem(self, plugin: str, message: str) -> None:
        line = f"plugin {plugin}: {message}"
        log.debug("%s", line)  # the caller reports the problems
        self.problems.append(line)

    def reserve(self) -> None:
        """Make every action registered so far permanent: registering one of their names again
        is an error (the engine reserves its built-in actions)."""
        self._reserved.update(self._specs)

    def get(self, name: str) -> ActionSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[ActionSpec]:
        return [self._specs[name] for name in sorted(self._specs)]


def _check_handler(name: str, handler: Any) -> None:
    """TypeError unless ``handler`` is an ``async def`` callable as ``handler(session, params)``."""
    expected = f"action {name!r}: the handler must be `async def handler(session, params) -> outcome`"
    if not callable(handler):
        raise TypeError(f"{expected}, not {handler!r}")
    label = getattr(handler, "__qualname__", type(handler).__qualname__)
    if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None))):
        raise TypeError(f"{expected}; {label} is not async")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise TypeError(f"{expected}; {label}{signature} cannot be called so") from None
