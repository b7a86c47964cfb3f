"""No import runs upward: the floors of docs/architecture.md, checked on every module."""

from __future__ import annotations

import ast
from pathlib import Path

COLLECTOR = Path(__file__).parents[2] / "collector"
# Higher number = lower floor; a module may import its own room or any lower floor.
FLOOR = {"daemon": 1, "serve": 2, "access": 3, "capture": 3, "store": 3, "export": 3,
         "proc": 4, "l7": 4, "snapshot": 4, "profile": 4,
         "protocol": 5, "selectors": 5, "config": 5, "errors": 6}
# Allowed sideways: the store and the exporters take (and narrow) capture's events.
SIDEWAYS = {("store", "capture.events"), ("export", "capture.events")}
# All the client (cli) may use: the vocabulary, the one error root, and the pure renderers of
# the snapshots and profiles the daemon sends (the client shows and writes them).
CLIENT = {"protocol", "selectors", "errors", "snapshot", "profile"}


def _imports(path: Path) -> list[str]:
    """collector.* modules imported by a file ("serve.handlers.trace", "protocol", ...)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "collector":
                out += [a.name for a in node.names]
            elif node.module.startswith("collector."):
                out.append(node.module.removeprefix("collector."))
        elif isinstance(node, ast.Import):
            out += [a.name.removeprefix("collector.") for a in node.names
                    if a.name.startswith("collector.")]
    return out


def test_no_import_runs_upward() -> None:
    wrong = []
    for path in sorted(COLLECTOR.rglob("*.py")):
        room = path.relative_to(COLLECTOR).parts[0].removesuffix(".py")
        if room == "__init__":
            continue
        for target in _imports(path):
            top = target.split(".")[0]
            if top == room or (room, target) in SIDEWAYS:
                continue
            allowed = CLIENT if room == "cli" else {r for r, f in FLOOR.items() if f > FLOOR[room]}
            if top not in allowed:
                wrong.append(f"{path.relative_to(COLLECTOR)} imports collector.{target}")
    assert wrong == []


def test_every_room_is_on_a_floor() -> None:
    rooms = {p.name.removesuffix(".py") for p in COLLECTOR.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert rooms - {"__init__", "cli"} == set(FLOOR)


def test_each_package_says_what_it_owns() -> None:
    """A docstring first; imports only of its own package (re-exporting nothing heavy)."""
    for init in COLLECTOR.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), init
        package = "collector." + ".".join(init.parent.relative_to(COLLECTOR).parts)
        for target in _imports(init):
            assert ("collector." + target).startswith(package.rstrip(".") + ".") \
                or target.split(".")[0] == "errors", f"{init} imports collector.{target}"
