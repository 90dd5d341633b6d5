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

__all__ = ["FlowStore", "flow_files"]

log = logging.getLogger(__name__)


def flow_files(paths: Iterable[str | Path]) -> list[Path]:
    """The flow files ``paths`` name: a file as it is, a folder as its ``*.yaml`` / ``*.yml``
    files (sorted; a missing path is kept, so that whoever reads it reports it)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            files.append(path)
    return files


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
        #: Why each file that is not served is not: one line per problem (a missing file, or the
        #: ``file:line:col: message`` errors of an invalid one). A fixed file leaves it.
        self.problems: dict[Path, list[str]] = {}
        self._last_check = float("-inf")
        self.refresh()

    def _files(self) -> list[Path]:
        return flow_files([self._source] if isinstance(self._source, (str, Path)) else self._source)

    def refresh(self) -> None:
        """Check every file now (``get`` calls this at most once a second)."""
        self._last_check = self._clock()
        for path in self._files():
            current = self._by_path.get(path)
            try:
                mtime = path.stat().st_mtime
            except OSError as exc:  # a file being replaced keeps serving its old version
                if current is None:
                    self.problems[path] = [f"{path}: {exc.strerror or exc}"]
                continue
            if current is not None and not self._changed(current):
                continue
            if self._refused.get(path) == mtime:
                continue
            flow, diagnostics = check_file(path, self._actions)
            if flow is None:
                self._refused[path] = mtime
                lines = [str(d) for d in diagnostics if d.severity == "error"]
                errors = "; ".join(lines)
                if current is None:
                    self.problems[path] = lines
                    log.error("flow %s refused: %s", path, errors)
                else:
                    log.error("flow %s changed but is invalid; still serving the previous version: %s",
                              path, errors)
                continue
            self._refused.pop(path, None)
            self.problems.pop(path, None)
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
        """The names of every flow currently served (a file fixed on disk joins them)."""
        if self._clock() - self._last_check >= self._interval:
            self.refresh()
        return sorted(flow.name for flow in self._by_path.values())
