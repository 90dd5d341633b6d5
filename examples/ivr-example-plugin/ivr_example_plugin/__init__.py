"""An example third-party IVR plugin: greets callers by name and counts their key presses.

It shows the three things most plugins do:

* read its own configuration section (``plugins.example``) in ``ivr_configure``;
* keep per-call state in ``call.data["example"]`` and release it in ``ivr_call_ended``;
* react to call events (``ivr_call_started``, ``ivr_dtmf``) and offer a flow action through
  ``ivr_register_actions``.

It imports nothing from the engine but :mod:`ivr.hookspecs` (for ``hookimpl``), as every plugin
should.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from ivr.hookspecs import hookimpl

log = logging.getLogger(__name__)

NAME = "example"
_settings: dict[str, Any] = {"greeting": "Hello"}


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.example.greeting``."""
    section = (config.get("plugins") or {}).get(NAME) or {}
    _settings["greeting"] = str(section.get("greeting", "Hello"))


@hookimpl
def ivr_call_started(call: Any) -> None:
    """Put a greeting for the caller in the flow's variables (``{{ vars.greeting }}``)."""
    who = call.from_user or "caller"
    call.vars["greeting"] = f"{_settings['greeting']}, {who}"
    call.data[NAME] = {"keys": 0}


@hookimpl
def ivr_dtmf(call: Any, digit: str, source: str) -> None:
    """Count the caller's key presses."""
    state = call.data.get(NAME)
    if state is not None:
        state["keys"] += 1


async def _key_count_action(session: Any, params: dict[str, Any]) -> str:
    """Flow action ``example_key_count``: outcome ``many`` once ``at_least`` keys were pressed."""
    state = session.call.data.get(NAME) or {"keys": 0}
    return "many" if state["keys"] >= int(params.get("at_least", 3)) else "few"


@hookimpl
def ivr_register_actions(register: Callable[..., None]) -> None:
    """Offer the ``example_key_count`` flow action."""
    register(
        "example_key_count",
        _key_count_action,
        schema={"type": "object", "properties": {"at_least": {"type": "integer", "minimum": 0}},
                "additionalProperties": False},
        outcomes=("many", "few"),
    )


@hookimpl
def ivr_call_ended(call: Any, reason: str) -> None:
    """Release the call's state."""
    state = call.data.pop(NAME, None)
    if state is not None:
        log.debug("call %s ended (%s) after %d key presses", call.id, reason, state["keys"])
