"""An example third-party IVR plugin: account look-up for flows, and the caller's loudness.

It shows what most plugins do, each the way docs/plugins.md describes:

* read its own configuration section (``plugins.example``) in ``ivr_configure``, refusing a
  section it cannot use with a ``ValueError`` (``ivr check`` and ``ivr serve`` report it in
  one line before any call);
* offer a flow action (``lookup_account``) through ``ivr_register_actions``; the look-up reads a
  CSV file, blocking work that goes through ``session.run_blocking`` so the other calls go on
  (and ``ivr simulate`` waits for it);
* keep per-call state in ``call.data["example"]``, created in ``ivr_call_started`` and released
  in ``ivr_call_ended``;
* work on audio in ``ivr_audio_in``: one numpy pass over the batch of all live calls measures
  each caller's loudness, published to the flow as ``vars.caller_level_dbfs``.

It imports nothing from the engine but :data:`ivr.hookimpl`, as every plugin should.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ivr import hookimpl

log = logging.getLogger(__name__)

NAME = "example"
#: Loudness of silence, in dBFS (the floor of the measure).
SILENCE_DBFS = -96.0

_settings: dict[str, Any] = {"accounts": None, "greeting": "Hello"}


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.example``: ``accounts`` (a CSV file with a header row ``number,name,balance``;
    relative to the working directory) and ``greeting``."""
    section = (config.get("plugins") or {}).get(NAME) or {}
    accounts = section.get("accounts")
    if accounts is not None and not Path(accounts).is_file():
        raise ValueError(f"accounts: {accounts} is not a file")
    _settings["accounts"] = accounts
    _settings["greeting"] = str(section.get("greeting", "Hello"))


def read_account(path: str | Path, number: str) -> dict[str, str] | None:
    """The row of ``number`` in the CSV file at ``path``, or ``None`` (blocking: file I/O)."""
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("number", "").strip() == number:
                return {key: (value or "").strip() for key, value in row.items()}
    return None


async def lookup_account(session: Any, params: dict[str, Any]) -> str:
    """Flow action ``lookup_account``: find ``number`` in the accounts file; outcome ``found``
    (the row in ``vars[save_as]``) or ``not_found``."""
    if _settings["accounts"] is None:
        raise RuntimeError("plugins.example.accounts is not configured")
    number = str(params["number"]).strip()
    row = await session.run_blocking(read_account, _settings["accounts"], number)
    session.vars[params.get("save_as", "account")] = row
    return "found" if row is not None else "not_found"


@hookimpl
def ivr_register_actions(register: Callable[..., None]) -> None:
    """Offer the ``lookup_account`` flow action."""
    register(
        "lookup_account",
        lookup_account,
        schema={
            "type": "object",
            "properties": {"number": {"type": "string"}, "save_as": {"type": "string"}},
            "required": ["number"],
            "additionalProperties": False,
        },
        outcomes=("found", "not_found"),
        needs_media=False,
    )


@hookimpl
def ivr_call_started(call: Any) -> None:
    """Greet the caller by number (``vars.greeting``) and start measuring."""
    call.vars["greeting"] = f"{_settings['greeting']}, {call.from_user or 'caller'}"
    call.data[NAME] = {"energy": 0.0, "samples": 0}


@hookimpl
def ivr_audio_in(batch: Any) -> None:
    """Each caller's loudness so far (mean power, dBFS) in ``vars.caller_level_dbfs``."""
    rows = [i for i, call in enumerate(batch.calls) if NAME in call.data]
    if not rows:
        return
    pcm = batch.pcm[rows].astype(np.float64) / 32768.0
    energy = np.einsum("ij,ij->i", pcm, pcm)  # one pass over the whole batch
    for row, value in zip(rows, energy):
        call = batch.calls[row]
        state = call.data[NAME]
        state["energy"] += float(value)
        state["samples"] += batch.pcm.shape[1]
        call.vars["caller_level_dbfs"] = level_dbfs(state["energy"], state["samples"])


def level_dbfs(energy: float, samples: int) -> float:
    """Mean power of ``samples`` samples summing to ``energy`` (full scale 1.0), in dBFS."""
    if samples == 0 or energy <= 0:
        return SILENCE_DBFS
    return round(max(SILENCE_DBFS, 10 * math.log10(energy / samples)), 1)


@hookimpl
def ivr_call_ended(call: Any, reason: str) -> None:
    """Log the caller's loudness and release the call's state."""
    state = call.data.pop(NAME, None)
    if state is not None:
        log.info("call %s ended (%s); caller level %.1f dBFS", call.id, reason,
                 level_dbfs(state["energy"], state["samples"]))
