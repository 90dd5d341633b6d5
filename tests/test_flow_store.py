"""Hot reload with FlowStore: new calls get a valid new version, running calls keep theirs,
an invalid new version is refused and the previous one keeps serving."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from ivr.flows import FlowStore

V1 = "flow: greet\nstart: a\nnodes:\n  a: {play: {say: 'version one'}, next: b}\n  b: {hangup: }\n"
V2 = V1.replace("version one", "version two")
BROKEN = "flow: greet\nstart: a\nnodes:\n  a: {play: {say: 'oops'}, next: nowhere}\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rewrite(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))  # distinct times even on coarse file systems


def say_text(flow) -> str:
    return flow.nodes["a"].params["say"]


def test_reload_on_change_keeps_old_for_running_calls(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "greet.yaml"
    rewrite(path, V1, 1_000_000)
    clock = FakeClock()
    store = FlowStore(tmp_path, clock=clock)
    running = store.get("greet")
    assert say_text(running) == "version one"

    rewrite(path, V2, 1_000_010)
    clock.now += 0.5
    assert say_text(store.get("greet")) == "version one"  # checked at most once a second
    clock.now += 0.6
    new = store.get("greet")
    assert say_text(new) == "version two"
    assert say_text(running) == "version one"  # the call in progress holds its own Flow

    rewrite(path, BROKEN, 1_000_020)
    clock.now += 1.1
    with caplog.at_level(logging.ERROR, logger="ivr.flows.store"):
        assert store.get("greet") is new
    assert "still serving the previous version" in caplog.text
    assert "unknown node 'nowhere'" in caplog.text

    caplog.clear()
    clock.now += 1.1
    with caplog.at_level(logging.ERROR, logger="ivr.flows.store"):
        assert store.get("greet") is new
    assert caplog.text == ""  # the same refused version is not checked (nor logged) again


def test_changed_subflow_reloads_its_parent(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    rewrite(child, "start: c\nnodes:\n  c: {return: one}\n", 1_000_000)
    parent = tmp_path / "parent.yaml"
    rewrite(parent, "start: s\nnodes:\n  s: {sub: {flow: child.yaml}}\n", 1_000_000)
    clock = FakeClock()
    store = FlowStore([parent], clock=clock)
    first = store.get("parent")
    rewrite(child, "start: c\nnodes:\n  c: {return: two}\n", 1_000_050)
    clock.now += 2
    second = store.get("parent")
    assert second is not first
    assert second.subflows["child.yaml"].nodes["c"].params == "two"


def test_unknown_and_invalid_first_versions(tmp_path: Path) -> None:
    rewrite(tmp_path / "bad.yaml", BROKEN.replace("greet", "bad"), 1_000_000)
    store = FlowStore(tmp_path)
    assert store.names() == []
    with pytest.raises(KeyError):
        store.get("bad")
