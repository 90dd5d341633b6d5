"""Every test in tests/peer/ talks to a real third-party peer: mark it ``peer``, so that
``pytest -m peer`` and ``pytest tests/peer`` select the same tests."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.peer)
