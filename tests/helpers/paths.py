"""Where things are, for tests wherever they sit in the tests/ tree."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DATA", "FLOWS", "PROJECT", "TESTS"]

TESTS = Path(__file__).resolve().parent.parent
PROJECT = TESTS.parent
#: Test vectors and peer configurations (tests/data/README.md says where each came from).
DATA = TESTS / "data"
#: The example flows users start from (flows/ at the top of the project).
FLOWS = PROJECT / "flows"
