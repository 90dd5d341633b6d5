"""The engine's flows as configured: :class:`FlowStoreRunner`."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any, Callable

import pluggy

from ivr.call import CallContext
from ivr.config import IvrConfig
from ivr.flows.actions import collect_actions
from ivr.flows.registry import ActionRegistry

__all__ = ["FlowStoreRunner"]

log = logging.getLogger(__name__)


class FlowStoreRunner:
    """The engine's flows: an :class:`ivr.flows.FlowStore` over the configured files and folders
    (a changed file is picked up by new calls; calls in progress keep their version), with the
    built-in actions plus those plugins register through ``ivr_register_actions``."""

    def __init__(self, config: IvrConfig, pm: pluggy.PluginManager, actions: ActionRegistry | None = None) -> None:
        self.pm = pm
        self.actions = actions if actions is not None else self._collect_actions()
        self._paths: list[Path] = []
        self.store: Any = None
        self._variables: dict[str, Any] = {}
        #: What ``hours`` reads: the configuration's ``clock`` when set, else the real time.
        self.wall_clock: Callable[[], dt.datetime] | None = None
        self.reload(config)

    def _collect_actions(self) -> Any:
        return collect_actions(self.pm)

    def refresh_actions(self) -> None:
        """Collect the plugins' actions again (plugins were added or removed); the flows are
        re-checked against them at the next :meth:`reload`."""
        self.actions = self._collect_actions()
        self.store = None

    def reload(self, config: IvrConfig) -> None:
        """Take the flows, template variables and clock of ``config`` (SIGHUP): the same files are
        re-checked (an invalid edit keeps the previous version); a new list is loaded afresh."""
        from ivr.flows import FlowStore

        self.wall_clock = config.clock.now if config.clock is not None else None
        paths = [Path(p) for p in config.flows]
        if self.store is not None and paths == self._paths:
            self.store.refresh()
        else:
            self.store = FlowStore(paths, self.actions)
            self._paths = paths
        self._variables = config.flow_config()

    def problems(self) -> list[str]:
        """One line per problem of a flow that is not served (see ``FlowStore.problems``)."""
        return [line for lines in self.store.problems.values() for line in lines]

    def flow_names(self) -> list[str]:
        """Names of the flows served."""
        return list(self.store.names())

    async def run(self, name: str, call: CallContext) -> str:
        """Run flow ``name`` on ``call`` (the version current now) to its end; its outcome."""
        from ivr.flows import run_flow
        from ivr.flows.trace_file import path_recorder

        try:
            flow = self.store.get(name)
        except KeyError:
            raise LookupError(f"no flow named {name!r} (serving: {', '.join(self.flow_names())})") from None
        # The steps through the flow, for the CDR's "path" (ivr graph --trace-file draws them).
        steps = call.data["flow_path"] = []
        return await run_flow(flow, call, self._variables, self.actions, wall_clock=self.wall_clock,
                              trace=path_recorder(steps))
