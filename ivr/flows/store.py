"""Hot reload: :class:`FlowStore` keeps the latest valid version of every flow file."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterable

from ivr.flows.actions import collect_actions
from ivr.flows.checker import check_file
from ivr.flows.model import Flow
from ivr.flows.registry import ActionRegistry

log = logging.getLogger(__name__)


class FlowStore:
    """Flows by name, reloaded when their files change.

    ``FlowStore(folder)`` serves every ``*.yaml`` / ``*.yml`` in the folder; ``FlowStore([paths])``
    those files. :meth:`get` looks at file times at most once per ``check_interval`` seconds;
    a changed file is checked again and, if valid, new calls get the new version (calls in
    progress hold their own :class:`Flow`). An invalid new version is refused with a log line
    and the previous one keeps serving.
    """

    def __init__(
        self,
        source: str | Path | Iterable[str | Path],
        actions: ActionRegistry | None = None,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._actions = actions or collect_actions()
        self._interval = check_interval
        self._clock = clock
        self._by_path: dict[Path, Flow] = {}
        self._refused: dict[Path, float] = {}  # path -> mtime of a version already refused
        self._last_check = float("-inf")
        self.refresh()

    def _files(self) -> list[Path]:
        if isinstance(self._source, (str, Path)):
            source = Path(self._source)
            if source.is_dir():
                return sorted(p for p in source.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            return [source]
        return [Path(p) for p in self._source]

    def refresh(self) -> None:
        """Check every file now (``get`` calls this at most once a second)."""
        self._last_check = self._clock()
        for path in self._files():
            current = self._by_path.get(path)
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue  # a file being replaced; the old version keeps serving
            if current is not None and not self._changed(current):
                continue
            if self._refused.get(path) == mtime:
                continue
            flow, diagnostics = check_file(path, self._actions)
            if flow is None:
                self._refused[path] = mtime
                errors = "; ".join(str(d) for d in diagnostics if d.severity == "error")
                if current is None:
                    log.error("flow %s refused: %s", path, errors)
                else:
                    log.error("flow %s changed but is invalid; still serving the previous version: %s",
                              path, errors)
                continue
            self._refused.pop(path, None)
            if current is not None:
                log.info("flow %s reloaded", path)
            self._by_path[path] = flow

    @staticmethod
    def _changed(flow: Flow) -> bool:
        for path, mtime in flow.mtimes.items():
            try:
                if path.stat().st_mtime != mtime:
                    return True
            except OSError:
                return False
        return False

    def get(self, name: str) -> Flow:
        """The current version of the flow called ``name`` (its ``flow:`` name or file stem).

        Raises ``KeyError`` when no valid flow has that name.
        """
        if self._clock() - self._last_check >= self._interval:
            self.refresh()
        for path, flow in self._by_path.items():
            if flow.name == name or path.stem == name:
                return flow
        raise KeyError(f"no flow named {name!r}")

    def names(self) -> list[str]:
        """The names of every flow currently served."""
        return sorted(flow.name for flow in self._by_path.values())
