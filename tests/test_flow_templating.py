"""Templating sandbox, file name sanitising and path confinement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ivr.flows import FlowRuntimeError, run_simulation
from ivr.flows.paths import PathEscapeError, resolve_inside
from ivr.flows.templating import render, sanitize_path_component

CONTEXT = {
    "call": {"id": "c1", "from": "1001", "to": "ivr"},
    "vars": {"n": 2, "name": "Bob"},
    "config": {"pbx": "127.0.0.1"},
}


def test_renders_call_vars_and_config() -> None:
    text = "{{ call.from }}>{{ call.to }} {{ call.id }} {{ vars.n + 1 }} {{ config.pbx }}"
    assert render(text, CONTEXT) == "1001>ivr c1 3 127.0.0.1"
    assert render("{{ config.missing | default('sip:x@127.0.0.1') }}", CONTEXT) == "sip:x@127.0.0.1"
    assert render(5, CONTEXT) == 5  # non-strings pass through


@pytest.mark.parametrize(
    "source",
    [
        "{{ call.__class__ }}",
        "{{ vars.__class__.__mro__ }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "{{ config.items.__globals__ }}",
        "{{ vars.update.__self__ }}",
    ],
)
def test_sandbox_refuses_internals(source: str) -> None:
    with pytest.raises(FlowRuntimeError):
        render(source, CONTEXT)


def test_sandbox_refuses_mutating_the_variables() -> None:
    with pytest.raises(FlowRuntimeError, match="template"):
        render("{{ vars.update({'n': 99}) }}", CONTEXT)
    assert CONTEXT["vars"]["n"] == 2


def test_undefined_names_are_a_clear_error() -> None:
    with pytest.raises(FlowRuntimeError, match="has no attribute 'nope'"):
        render("{{ vars.nope }}", CONTEXT)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("../../etc/passwd", "____etc_passwd"), ("/abs", "_abs"), ("a b;c", "a_b_c"), ("..", "_"), ("", "_")],
)
def test_call_data_in_file_names_is_sanitised(value: str, expected: str) -> None:
    assert sanitize_path_component(value) == expected
    rendered = render("rec/{{ v }}.wav", {"v": value}, for_path=True)
    assert rendered == f"rec/{expected}.wav"


def test_resolve_inside_refuses_every_way_out(tmp_path: Path) -> None:
    base = tmp_path / "flows"
    (base / "prompts").mkdir(parents=True)
    (tmp_path / "secret.wav").write_bytes(b"x")
    os.symlink(tmp_path / "secret.wav", base / "prompts" / "link.wav")
    assert resolve_inside(base, "prompts/../prompts/a.wav") == (base / "prompts" / "a.wav").resolve()
    for bad in ("../secret.wav", "/etc/passwd", "prompts/link.wav", "~/x.wav", ""):
        with pytest.raises(PathEscapeError):
            resolve_inside(base, bad)


def test_symlinked_prompt_is_refused_at_check_time(tmp_path: Path) -> None:
    from ivr.flows import check_file

    (tmp_path / "outside.wav").write_bytes(b"x")
    flows = tmp_path / "flows"
    flows.mkdir()
    os.symlink(tmp_path / "outside.wav", flows / "p.wav")
    (flows / "f.yaml").write_text("start: a\nnodes:\n  a: {play: p.wav}\n")
    flow, diagnostics = check_file(flows / "f.yaml")
    assert flow is None and "escapes the folder" in diagnostics[0].message
    assert (diagnostics[0].line, diagnostics[0].col) == (3, 13)


def test_templated_prompt_path_escape_is_refused_at_run_time(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(
        "start: a\non_error: failed\nnodes:\n"
        "  a: {play: \"/{{ config.where }}\", next: b}\n"  # absolute once rendered
        "  b: {hangup: }\n  failed: {hangup: }\n"
    )
    result = run_simulation(tmp_path / "f.yaml", config={"where": "etc/passwd"})
    assert "absolute paths are not allowed" in result.vars["error"]
    assert [e.node for e in result.trace if e.event == "enter"] == ["a", "failed"]


def test_undefined_variable_at_run_time_goes_to_on_error(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(
        "start: a\non_error: failed\nnodes:\n  a: {play: {say: \"{{ vars.nobody }}\"}}\n  failed: {hangup: }\n"
    )
    result = run_simulation(tmp_path / "f.yaml")
    assert "'nobody'" in result.vars["error"]
    assert result.outcome == "hangup"
