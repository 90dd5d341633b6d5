"""The floors of the code base, enforced: every import points downward, and no module imports
itself back through others (docs/architecture.md draws the picture).

Floors, bottom up: ``simplesip.errors`` < ``simplesip.wire`` < ``simplesip.core`` <
``simplesip.aio`` < the ``simplesip`` facade (``simplesip.client``, ``simplesip/__init__``) <
``ivr`` < ``ivr_plugins``. A module may import its own floor and the floors below it. Imports
under ``if TYPE_CHECKING:`` and inside functions count too: an upward arrow is a design fault
wherever it is written.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FLOORS = [
    "simplesip.errors",
    "simplesip.wire",
    "simplesip.core",
    "simplesip.aio",
    "simplesip",  # the facade: simplesip/__init__.py and simplesip/client.py
    "ivr",
    "ivr_plugins",
]
PACKAGES = ("simplesip", "ivr", "ivr_plugins")


def floor_of(module: str) -> int | None:
    """The floor of a dotted module name (None for modules outside the project)."""
    best = None
    for index, prefix in enumerate(FLOORS):
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(FLOORS[best]):
                best = index
    return best


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[str, int]]:
    """Every project module ``path`` imports, with the line, wherever the import statement is."""
    name = module_name(path, root)
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from package import module`` imports the module, ``from module import name`` the
            # module; either way one arrow per name.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.append((candidate if _module_path(candidate, root) else target, node.lineno))
    return [(target, line) for target, line in found if target.split(".")[0] in PACKAGES]


def _module_path(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_modules(root: Path) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(path, root)] = path
    return modules


def upward_imports(root: Path) -> list[str]:
    """``file:line: a imports b`` for each import that points to a higher floor."""
    problems = []
    for name, path in project_modules(root).items():
        own = floor_of(name)
        for target, line in imports_of(path, root):
            theirs = floor_of(target)
            if own is not None and theirs is not None and theirs > own:
                problems.append(f"{path.relative_to(root)}:{line}: {name} ({FLOORS[own]}) "
                                f"imports {target} ({FLOORS[theirs]})")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan's algorithm)."""
    modules = project_modules(root)
    graph = {
        name: sorted({t for t, _ in imports_of(path, root) if t in modules and t != name})
        for name, path in modules.items()
    }
    # A package's __init__ is imported with any of its submodules; that is not a cycle of ours.
    graph = {name: [t for t in targets if not name.startswith(t + ".")] for name, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


# --- the project itself ----------------------------------------------------------------------


def test_every_import_points_downward() -> None:
    assert upward_imports(ROOT) == []


def test_no_import_cycles() -> None:
    assert import_cycles(ROOT) == []


def test_every_public_simplesip_module_declares_its_public_names() -> None:
    missing = [
        name for name, path in project_modules(ROOT).items()
        if name.startswith("simplesip") and not path.name.startswith("_")
        and path.name != "__init__.py" and "__all__" not in path.read_text()
    ]
    assert missing == []


#: A compiled extension is a private module that only its Python wrapper imports (the standard
#: library's ``_json`` and ``json``): ``simplesip.core.native`` chooses ``_native`` or the
#: pure-Python path, and nothing else may import the extension.
EXTENSION_WRAPPERS = {"simplesip.core.native": {"_native"}}


def test_no_private_name_is_imported_from_another_module() -> None:
    """A name another module needs is public there (and in its ``__all__``)."""
    private = []
    for name, path in project_modules(ROOT).items():
        allowed = EXTENSION_WRAPPERS.get(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PACKAGES):
                private += [f"{name}:{node.lineno}: {alias.name}" for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")
                            and alias.name not in allowed]
    assert private == []


def test_the_folders_name_the_layers() -> None:
    """A newcomer finds parsing in wire/, the protocol in core/, IO in aio/."""
    assert (ROOT / "simplesip/wire/message.py").is_file()
    assert (ROOT / "simplesip/core/transaction.py").is_file()
    assert (ROOT / "simplesip/aio/transport.py").is_file()
    top_floor = sorted(p.name for p in (ROOT / "simplesip").glob("*.py"))
    assert top_floor == ["__init__.py", "client.py", "errors.py"]


# --- the checker, on trees made to break the rules ---------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize("text", [
    "from simplesip.aio.endpoint import Endpoint\n",
    "import simplesip.aio.endpoint\n",
    "from ..aio import endpoint\n",
    "def f():\n    from ivr.engine import Engine\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from simplesip.aio.call import Call\n",
])
def test_an_upward_import_is_reported(tmp_path: Path, text: str) -> None:
    root = _tree(tmp_path, {
        "simplesip/__init__.py": "", "simplesip/core/__init__.py": "",
        "simplesip/aio/__init__.py": "", "simplesip/aio/endpoint.py": "", "simplesip/aio/call.py": "",
        "ivr/__init__.py": "", "ivr/engine.py": "",
        "simplesip/core/dialog.py": text,
    })
    problems = upward_imports(root)
    assert len(problems) == 1 and problems[0].startswith("simplesip/core/dialog.py:")


def test_downward_and_sideways_imports_pass(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "simplesip/__init__.py": "", "simplesip/wire/__init__.py": "", "simplesip/wire/uri.py": "",
        "simplesip/core/__init__.py": "", "simplesip/core/calls.py": "",
        "simplesip/core/dialog.py": "from simplesip.wire.uri import x\nfrom . import calls\n",
        "ivr_plugins/__init__.py": "", "ivr_plugins/vad.py": "from simplesip.core import dialog\n",
    })
    assert upward_imports(root) == []


def test_a_cycle_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "ivr/__init__.py": "", "ivr/a.py": "from ivr.b import x\n",
        "ivr/b.py": "def f():\n    from ivr import c\n", "ivr/c.py": "import ivr.a\n",
        "ivr/d.py": "import ivr.a\n",
    })
    assert import_cycles(root) == [["ivr.a", "ivr.b", "ivr.c"]]
