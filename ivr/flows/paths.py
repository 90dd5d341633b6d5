"""File paths named in flows resolve inside a base folder and never leave it."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ivr.flows.diagnostics import FlowRuntimeError


class PathEscapeError(FlowRuntimeError):
    """A flow named a file outside the folder it is confined to."""


def resolve_inside(base: Path, relative: str) -> Path:
    """``base / relative``, refused when absolute, when ``..`` leaves ``base``, or when a
    symlink points outside it (the check is made on the fully resolved path)."""
    if not relative:
        raise PathEscapeError("empty file name")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or Path(relative).is_absolute() or relative.startswith("~"):
        raise PathEscapeError(f"{relative!r}: absolute paths are not allowed; name a file inside {base}")
    root = base.resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise PathEscapeError(f"{relative!r} escapes the folder {base}")
    return candidate
