"""Fixtures shared by every test. Helpers (ports, paths, peers, fakes) are in tests/helpers/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.paths import DATA
from tests.helpers.sipmem import Network


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def net() -> Network:
    """An in-memory network of sans-IO user agents with a virtual clock (tests/helpers/sipmem.py)."""
    return Network()
