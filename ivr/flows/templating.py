"""Templates in flow strings: Jinja2's immutable sandbox, strict about undefined names.

A flow sees three read-only names: ``call`` (``id``, ``from``, ``to``, ``from_user``,
``to_user``, ``headers``), ``vars`` (the flow variables) and ``config``. They are plain
dictionaries, never engine objects, and the sandbox refuses ``__class__``-style attribute access,
so a template can read call data but not reach into Python.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ivr.config import did_you_mean
from ivr.flows.diagnostics import FlowRuntimeError

#: The names a template reads (:meth:`ivr.flows.session.FlowSession.template_context`).
TEMPLATE_ROOTS = ("call", "vars", "config")
#: The keys of ``call`` in a template.
CALL_KEYS = ("id", "from", "to", "from_uri", "to_uri", "from_user", "to_user", "headers")

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.+-]")


def sanitize_path_component(value: Any) -> str:
    """Make call data safe inside a file name: no separators, no ``..``, no control bytes."""
    text = _UNSAFE_NAME_CHARS.sub("_", str(value))
    text = text.replace("..", "_")
    return text.strip(".") or "_"


def _finalize_for_paths(value: Any) -> str:
    return sanitize_path_component(value)


def _make_environment(finalize: Callable[[Any], Any] | None) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=finalize)
    return env


_TEXT_ENV = _make_environment(None)
# Every value substituted into a path template is sanitised, the literal parts are kept:
# "voicemail/{{ call.from }}.wav" stays in voicemail/ whatever the caller put in From.
_PATH_ENV = _make_environment(_finalize_for_paths)


def is_template(value: Any) -> bool:
    """Whether ``value`` is a string holding template syntax."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@lru_cache(maxsize=2048)
def _compile(source: str, for_path: bool):  # type: ignore[no-untyped-def]
    return (_PATH_ENV if for_path else _TEXT_ENV).from_string(source)


def template_syntax_error(source: str) -> str | None:
    """The syntax error of ``source`` as a message, or ``None`` when it compiles."""
    try:
        _compile(source, False)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message}"
    return None


def template_name_problems(source: str) -> list[str]:
    """What in ``source`` (which compiles) names nothing a flow template can read: a name other
    than ``call``, ``vars``, ``config`` (and the loop variables it sets itself), or a key of
    ``call`` that does not exist. One message each, with a "did you mean"."""
    try:
        tree = _TEXT_ENV.parse(source)
    except TemplateSyntaxError:
        return []
    problems = []
    for name in sorted(meta.find_undeclared_variables(tree) - set(TEMPLATE_ROOTS) - set(_TEXT_ENV.globals)):
        hint = did_you_mean(name, TEMPLATE_ROOTS) or f" (did you mean 'vars.{name}'?)"
        problems.append(f"template {source!r}: {name!r} is undefined: a template reads call, vars and "
                        f"config{hint}")
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "call" and node.attr not in CALL_KEYS:
            problems.append(f"template {source!r}: call has no {node.attr!r}{did_you_mean(node.attr, CALL_KEYS)} "
                            f"(call keys: {', '.join(CALL_KEYS)})")
    return problems


def render(source: Any, context: dict[str, Any], *, for_path: bool = False) -> Any:
    """Render ``source`` when it is a template string; other values are returned unchanged.

    Raises :class:`FlowRuntimeError` naming the problem (an undefined variable, a refused
    attribute, a syntax error).
    """
    if not is_template(source):
        return source
    try:
        return _compile(source, for_path).render(context)
    except TemplateError as exc:
        raise FlowRuntimeError(f"template {source!r}: {exc}") from None


def render_deep(value: Any, context: dict[str, Any]) -> Any:
    """Render every string inside nested dicts and lists."""
    if isinstance(value, dict):
        return {key: render_deep(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_deep(item, context) for item in value]
    return render(value, context)
