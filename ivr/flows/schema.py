"""The JSON Schema of a flow file (``flow.schema.json``) and its validation with positions.

The schema is published (``ivr schema``) so editors can complete and check flows; plugin actions'
parameter schemas are merged into it. Validation errors are mapped back to the YAML source
through the marks :mod:`ivr.flows.loader` keeps.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from ivr.config import did_you_mean
from ivr.flows.diagnostics import Diagnostic
from ivr.flows.loader import position_of

if TYPE_CHECKING:  # pragma: no cover
    from ivr.flows.registry import ActionRegistry

SCHEMA_PATH = Path(__file__).with_name("flow.schema.json")

#: Keys a node may carry beside its one action.
NODE_KEYS = frozenset({"description", "next", "on", "barge_in", "flush_dtmf"})


@lru_cache(maxsize=1)
def _base_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def builtin_action_names() -> list[str]:
    """The actions the published schema describes (every built-in action)."""
    node_properties = _base_schema()["$defs"]["node"]["properties"]
    return [name for name in node_properties if name not in NODE_KEYS]


def flow_schema(actions: ActionRegistry | None = None) -> dict[str, Any]:
    """The flow JSON Schema with every action of ``actions`` that is not built in merged in."""
    schema = copy.deepcopy(_base_schema())
    if actions is not None:
        node_properties = schema["$defs"]["node"]["properties"]
        for spec in actions.specs():
            if spec.name not in node_properties:
                entry = copy.deepcopy(spec.schema) if spec.schema else {}
                outcomes = ", ".join(spec.outcomes) or "any"
                entry.setdefault("description", f"plugin action; outcomes: {outcomes}")
                node_properties[spec.name] = entry
    return schema


def _dotted(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _unexpected_keys(error: ValidationError) -> list[str]:
    known = set(error.schema.get("properties", {}))
    patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
    return [
        key
        for key in error.instance
        if key not in known and not any(p.search(str(key)) for p in patterns)
    ]


def _diagnostics_for(error: ValidationError, document: Any, filename: str) -> list[Diagnostic]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        in_node = len(path) == 2 and path[0] == "nodes"
        known = list(error.schema.get("properties", {}))
        found = []
        for key in _unexpected_keys(error):
            line, col = position_of(document, path + [key], key=True)
            what = "unknown action or node key" if in_node else "unknown key"
            found.append(Diagnostic(filename, line, col, f"{_dotted(path)}: {what} {key!r}{did_you_mean(key, known)}"))
        if found:
            return found
    if error.validator in ("anyOf", "oneOf") and "title" in error.schema:
        # A named notation (a duration, a prompt): say what is expected, not which branch failed.
        hint = error.schema.get("description", "")
        message = f"bad {error.schema['title']} {error.instance!r}: {hint}".rstrip(": ")
    elif error.validator in ("anyOf", "oneOf") and error.context:
        deepest = best_match(error.context)
        message = deepest.message
        path = list(deepest.absolute_path)
    else:
        message = error.message
    if error.validator == "required":
        line, col = position_of(document, path)
    elif "propertyNames" in error.schema_path:
        line, col = position_of(document, path + [error.instance], key=True)
        message = f"bad name {error.instance!r}: {message}"
    else:
        line, col = position_of(document, path)
    return [Diagnostic(filename, line, col, f"{_dotted(path)}: {message}")]


def validate_document(
    document: Any, filename: str, actions: ActionRegistry | None = None
) -> list[Diagnostic]:
    """Validate a marked flow document against the schema; one diagnostic per problem."""
    # Formats (dates) are annotations here: the semantic checks give better messages for them.
    validator = jsonschema.Draft202012Validator(flow_schema(actions))
    diagnostics: list[Diagnostic] = []
    for error in validator.iter_errors(document):
        diagnostics.extend(_diagnostics_for(error, document, filename))
    diagnostics.sort(key=lambda d: (d.line, d.col))
    return diagnostics
