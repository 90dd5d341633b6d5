"""Read a flow file: YAML with the line and column of every key and value kept.

PyYAML forgets positions once it has built Python objects. :class:`MarkedMap` and
:class:`MarkedList` keep them, so any later check (JSON Schema or semantic) can point at the
exact ``file:line:col`` of the offending key or value.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ivr.flows.diagnostics import Diagnostic

log = logging.getLogger(__name__)

Position = tuple[int, int]  # 1-based (line, column)

# YAML 1.1 reads the plain keys ``on``, ``no``, ``0``, ``010`` as booleans and integers; in a
# flow every key is a name or a digit string, so a plain key is always kept as its source text.
_PLAIN_KEY_TAGS = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:null",
}


class MarkedMap(dict):
    """A ``dict`` that remembers where it, each key and each value start in the source."""

    mark: Position = (1, 1)

    def __init__(self) -> None:
        super().__init__()
        self.key_marks: dict[Any, Position] = {}
        self.value_marks: dict[Any, Position] = {}


class MarkedList(list):
    """A ``list`` that remembers where it and each item start in the source."""

    mark: Position = (1, 1)

    def __init__(self) -> None:
        super().__init__()
        self.item_marks: list[Position] = []


def _position(mark: yaml.Mark) -> Position:
    return (mark.line + 1, mark.column + 1)


class _MarkedLoader(yaml.SafeLoader):
    """A safe loader building :class:`MarkedMap`/:class:`MarkedList` and noting duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[Position, Any]] = []


def _construct_map(loader: _MarkedLoader, node: MappingNode):  # type: ignore[no-untyped-def]
    data = MarkedMap()
    data.mark = _position(node.start_mark)
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.tag in _PLAIN_KEY_TAGS and not key_node.style:
            key: Any = key_node.value
        else:
            key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in data:
            loader.duplicate_keys.append((_position(key_node.start_mark), key))
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_marks[key] = _position(key_node.start_mark)
        data.value_marks[key] = _position(value_node.start_mark)


def _construct_seq(loader: _MarkedLoader, node: SequenceNode):  # type: ignore[no-untyped-def]
    data = MarkedList()
    data.mark = _position(node.start_mark)
    yield data
    for item_node in node.value:
        data.append(loader.construct_object(item_node, deep=True))
        data.item_marks.append(_position(item_node.start_mark))


def _construct_timestamp_as_text(loader: _MarkedLoader, node: ScalarNode) -> str:
    # A flow is JSON-shaped data: dates stay text (``2026-12-25``), checked by the schema.
    return node.value


def _construct_decimal_int(loader: _MarkedLoader, node: ScalarNode) -> int:
    return int(node.value)


# YAML 1.2 core schema scalars: only true/false are booleans (a node named `no`, a key
# called `on` stay text), integers are decimal (`010` is ten) and `09:00` is text, not 540.
_BOOL_TAG, _INT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int"
_MarkedLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _INT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_MarkedLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_MarkedLoader.add_implicit_resolver(_INT_TAG, re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_MarkedLoader.add_constructor(_INT_TAG, _construct_decimal_int)
_MarkedLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_MarkedLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_text)
_MarkedLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _line_col_at(text: str, index: int) -> Position:
    before = text[:index]
    return (before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1)


def load_marked_yaml(text: str, filename: str) -> tuple[Any, list[Diagnostic]]:
    """Parse ``text``; return the document (``None`` when it failed) and the diagnostics.

    Syntax errors and duplicate keys are reported with the position YAML gives.
    """
    loader: _MarkedLoader | None = None
    try:
        # The reader checks the characters as soon as it is built: that is inside the try too.
        loader = _MarkedLoader(text)
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _position(mark) if mark else (1, 1)
        problem = exc.problem or "YAML syntax error"
        if exc.context:
            problem = f"{exc.context}: {problem}"
        return None, [Diagnostic(filename, line, col, f"YAML: {problem}")]
    except yaml.reader.ReaderError as exc:
        line, col = _line_col_at(text, exc.position)
        return None, [Diagnostic(filename, line, col, f"YAML: unacceptable character #x{exc.character:04x}")]
    except yaml.YAMLError as exc:
        return None, [Diagnostic(filename, 1, 1, f"YAML: {exc}")]
    finally:
        if loader is not None:
            loader.dispose()
    if document is None:
        return None, [Diagnostic(filename, 1, 1, "the flow file is empty (it needs start: and nodes:)")]
    diagnostics = [
        Diagnostic(filename, line, col, f"duplicate key {key!r} (the later value would win)")
        for (line, col), key in loader.duplicate_keys
    ]
    return document, diagnostics


def position_of(document: Any, path: list[Any] | tuple[Any, ...], *, key: bool = False) -> Position:
    """The source position of the value at ``path`` in a marked document.

    Walks as deep as the path exists and returns the closest known position; with ``key`` the
    position of the last path element's key (a mapping key) is returned instead of its value.
    """
    container = document
    position: Position = getattr(document, "mark", (1, 1))
    for index, element in enumerate(path):
        last = index == len(path) - 1
        if isinstance(container, MarkedMap) and element in container:
            marks = container.key_marks if (key and last) else container.value_marks
            position = marks.get(element, position)
            container = container[element]
        elif isinstance(container, MarkedList) and isinstance(element, int) and element < len(container):
            position = container.item_marks[element]
            container = container[element]
        else:
            break
    return position


def read_flow_document(path: Path) -> tuple[Any, list[Diagnostic]]:
    """Read and parse the flow file at ``path`` (diagnostics name it as given)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(str(path), 1, 1, f"cannot read flow: {exc}")]
    return load_marked_yaml(text, str(path))
