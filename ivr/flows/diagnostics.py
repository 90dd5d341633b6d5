"""Diagnostics: what ``ivr check`` prints and what :class:`FlowError` carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a flow file, at a 1-based line and column."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {prefix}{self.message}"


class FlowError(Exception):
    """A flow could not be loaded: ``diagnostics`` lists every problem (errors and warnings)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def lines(self) -> list[str]:
        """Every diagnostic as ``file:line:col: message``."""
        return [str(d) for d in self.diagnostics]


class FlowRuntimeError(Exception):
    """A flow failed while running a node (bad template, path escape, reject after answer...).

    The executor routes it to the node's ``on: {error: ...}`` target or the flow's ``on_error``.
    """
