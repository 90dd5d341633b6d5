"""Property tests for the flow loader and for file names built from flows and call data.

A flow file is operator input, but it is parsed by YAML and checked by a JSON Schema plus our own
checker, so the loader is fuzzed like a wire parser: whatever bytes the file holds,
:func:`load_flow` returns a Flow or raises :class:`FlowError` with ``file:line:col`` diagnostics,
never anything else. Paths (prompts, sub-flows, recordings) must stay inside their folder whatever
the flow or the caller puts in them.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.flows import FlowError, load_flow, run_simulation
from ivr.flows.paths import PathEscapeError, resolve_inside
from ivr.flows.templating import render, sanitize_path_component

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROJECT = Path(__file__).resolve().parent.parent
SEED_FLOWS = sorted((PROJECT / "flows").glob("*.yaml")) + sorted((PROJECT / "tests" / "flows").glob("*.yaml"))
SEEDS = [path.read_bytes() for path in SEED_FLOWS]
ACTIONS = ["play", "say", "menu", "collect", "record", "transfer", "set", "switch", "hours", "goto",
           "sub", "return", "pause", "hangup", "reject", "http", "bogus"]
DIAGNOSTIC = re.compile(r"^.+:\d+:\d+: .+")

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.text(max_size=12),
                    st.sampled_from(["1s", "-1s", "{{ call.id }}", "{{", "../x", "/etc/passwd", "a", "b"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(ACTIONS + ["on", "next", "a", "b"]), inner,
                                                  max_size=4)), max_leaves=12)


@st.composite
def flow_documents(draw: st.DrawFn) -> bytes:
    """A flow-shaped YAML document: right top-level keys, random nodes, actions and values."""
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "start", "hangup"]), min_size=1, max_size=4,
                          unique=True))
    nodes = {}
    for name in names:
        node = {draw(st.sampled_from(ACTIONS)): draw(values)}
        if draw(st.booleans()):
            node["next"] = draw(st.sampled_from(names + ["nowhere", None]))
        if draw(st.booleans()):
            node["on"] = draw(st.dictionaries(st.text(max_size=6), st.sampled_from(names), max_size=3))
        nodes[name] = node
    document = {"flow": draw(st.sampled_from(["f", "", None, 3])), "start": draw(st.sampled_from(names + [7])),
                "nodes": nodes}
    if draw(st.booleans()):
        document["defaults"] = draw(st.dictionaries(st.sampled_from(["timeout", "barge_in", "x"]), scalars,
                                                    max_size=3))
    return yaml.safe_dump(document).encode()


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    """One of the project's flows with bytes replaced, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        if kind == "replace" and data:
            data[pos] = draw(st.sampled_from(b" :-\n\t{}[]&*!|>'\"#%@`\xff"))
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from([b"&a ", b"*a", b"!!python/object:os.system ", b"\t",
                                                  b"<<: *a\n", b"\x00", b"{{", b"../../"]))
        else:
            del data[pos:pos + draw(st.integers(1, 20))]
    return bytes(data)


def _load_bytes(content: bytes) -> None:
    """Write ``content`` as a flow beside copies of the real prompts and load it."""
    with tempfile.TemporaryDirectory(prefix="fuzz-flow-") as folder:
        path = Path(folder) / "flow.yaml"
        path.write_bytes(content)
        try:
            flow = load_flow(path)
        except FlowError as exc:
            assert exc.diagnostics, "a FlowError must say what is wrong"
            assert all(DIAGNOSTIC.match(line) for line in exc.lines), exc.lines
            return
        assert flow.start in flow.nodes


@FUZZ
@given(st.binary(max_size=400))
def test_loader_random_bytes_raise_only_flow_error(content: bytes) -> None:
    _load_bytes(content)


@FUZZ
@given(flow_documents())
def test_loader_flow_shaped_documents_raise_only_flow_error(content: bytes) -> None:
    _load_bytes(content)


@FUZZ
@given(mutated_seed())
def test_loader_mutated_real_flows_raise_only_flow_error(content: bytes) -> None:
    _load_bytes(content)


@pytest.mark.parametrize("target", ["../outside.yaml", "/etc/passwd", "sub/../../outside.yaml", "~root/x.yaml"])
def test_subflow_outside_the_folder_is_a_flow_error(tmp_path: Path, target: str) -> None:
    """``sub: {flow: ../x}`` must be refused with a diagnostic, like a prompt path is."""
    folder = tmp_path / "flows"
    folder.mkdir()
    (tmp_path / "outside.yaml").write_text("flow: outside\nstart: a\nnodes:\n  a: {hangup: }\n")
    path = folder / "main.yaml"
    path.write_text(f"flow: main\nstart: a\nnodes:\n  a:\n    sub: {{flow: {target!r}}}\n    next: b\n"
                    "  b: {hangup: }\n")
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert any("escape" in line or "absolute" in line for line in info.value.lines), info.value.lines


def test_prompt_paths_outside_the_folder_are_refused_with_positions() -> None:
    with pytest.raises(FlowError) as info:
        load_flow(PROJECT / "tests" / "flows" / "path_escape.yaml")
    lines = info.value.lines
    assert any(":5:" in line and "escapes" in line for line in lines), lines
    assert any("absolute" in line for line in lines), lines


def test_symlink_out_of_the_flow_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF")
    (folder / "prompt.wav").symlink_to(secret)
    with pytest.raises(PathEscapeError):
        resolve_inside(folder, "prompt.wav")


@FUZZ
@given(st.lists(st.sampled_from([".", "/", "\\", "~", "a", ":", "\x00", "%", "..", "../", "//"]), max_size=12)
       .map("".join))
def test_resolve_inside_never_returns_a_path_outside(relative: str) -> None:
    base = Path(tempfile.gettempdir()) / "fuzz-base"
    try:
        resolved = resolve_inside(base, relative)
    except (PathEscapeError, ValueError):
        return  # ValueError: an embedded NUL byte, refused by the OS layer
    root = base.resolve()
    assert resolved == root or root in resolved.parents


@FUZZ
@given(st.text(max_size=40))
def test_call_data_in_path_templates_is_sanitised(value: str) -> None:
    """Call-ID, From user and headers are attacker-chosen; in a path template they become one
    harmless file-name component, so ``voicemail/{{ call.id }}.wav`` stays in voicemail/."""
    component = sanitize_path_component(value)
    assert component and "/" not in component and "\\" not in component and ".." not in component
    assert component not in (".", "..") and "\x00" not in component
    rendered = render("voicemail/{{ call.id }}-{{ call.from_user }}.wav",
                      {"call": {"id": value, "from_user": value}}, for_path=True)
    assert rendered.startswith("voicemail/") and rendered.count("/") == 1


HOSTILE_FLOW = """\
flow: hostile
start: rec
nodes:
  rec:
    record: {to: "vm/{{ call.from_user }}/{{ call.id }}.wav", max_length: 1s, beep: false}
    next: bye
  bye: {hangup: }
"""


@pytest.mark.parametrize("caller", ["sip:..%2F..%2Fetc@127.0.0.1", "sip:../../etc@127.0.0.1",
                                    "sip:a/b/../../..@127.0.0.1", "sip:....@127.0.0.1"])
def test_recording_name_from_hostile_caller_stays_in_the_recordings_folder(tmp_path: Path, caller: str) -> None:
    flow_path = tmp_path / "hostile.yaml"
    flow_path.write_text(HOSTILE_FLOW)
    recordings = tmp_path / "recordings"
    result = run_simulation(flow_path, caller=caller, config={"recordings_dir": str(recordings)})
    assert result.recordings, result.trace
    root = recordings.resolve()
    for done in result.recordings:
        path = Path(done.path).resolve()
        assert root in path.parents, path
        assert path.relative_to(root).parts[0] == "vm"


# --- regressions found by the fuzzers above (see docs/security.md) --------------------------------


@pytest.mark.parametrize("content", [b"\x00", b"flow: x\x00\n", b"start: a\x07\n", b"\xef\xbf\xbe"])
def test_control_characters_in_a_flow_are_a_flow_error(tmp_path: Path, content: bytes) -> None:
    """YAML's reader refuses control characters while the loader is being built; that must come
    out as a diagnostic, not as a yaml.reader.ReaderError."""
    path = tmp_path / "ctl.yaml"
    path.write_bytes(content)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert info.value.lines and info.value.lines[0].startswith(f"{path}:1:")


@pytest.mark.parametrize("content", [b"", b" ", b"# only a comment\n", b"---\n", b"~\n"])
def test_empty_flow_file_says_why_it_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.yaml"
    path.write_bytes(content)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert info.value.diagnostics, "an empty flow file must get a diagnostic, not a bare FlowError"


@pytest.mark.parametrize("inner_on", ["true", "null", "[a]", "'x'"])
def test_non_mapping_on_inside_an_action_is_a_flow_error(tmp_path: Path, inner_on: str) -> None:
    """Found by test_loader_flow_shaped_documents_raise_only_flow_error: an ``on:`` inside an
    action's parameters that is not a mapping crashed the checker with AttributeError."""
    path = tmp_path / "inner_on.yaml"
    path.write_text(f"flow: f\nstart: a\nnodes:\n  a:\n    set:\n      'on': {inner_on}\n    next: b\n"
                    "  b: {hangup: }\n")
    try:
        load_flow(path)
    except FlowError as exc:
        assert exc.lines
