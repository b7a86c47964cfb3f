"""redact/ module boundaries: imports run one way, and only the adapter imports google-re2."""

from __future__ import annotations

import ast
from pathlib import Path

import redact

SRC = Path(redact.__file__).parent


def _imports(path: Path) -> set[str]:
    """Top-level module names imported by path (`redact.x` for redact's own modules)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module == "redact":  # `from redact import re2compat`
                out.update(f"redact.{a.name}" for a in node.names)
    return out


GRAPH = {f"redact.{p.stem}": {m for m in _imports(p) if m.startswith("redact.")}
         for p in SRC.glob("*.py") if p.stem != "__init__"}


def test_redact_modules_import_without_a_cycle() -> None:
    done: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, f"import cycle: {' -> '.join((*path, mod))}"
        if mod in done:
            return
        for dep in GRAPH.get(mod, set()):
            visit(dep, (*path, mod))
        done.add(mod)

    for mod in GRAPH:
        visit(mod, ())
    # The layering this refactoring is about: façade -> stream -> table, never back.
    assert "redact.engine" not in GRAPH["redact.stream"] | GRAPH["redact.table"]
    assert "redact.stream" not in GRAPH["redact.table"]


def test_only_the_adapter_imports_re2() -> None:
    users = sorted(p.name for p in SRC.glob("*.py") if "re2" in _imports(p))
    assert users == ["re2compat.py"]
