"""PERISCOPE_PURE=1 (tests/conftest.py): the modules pyproject.toml names for mypyc are
imported from their sources even where they were compiled, so the suite also tests what
runs on a host where they were not (no mypy or no compiler at install)."""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path

from collector.config import tomllib  # tomli on Python 3.10

REPO = Path(__file__).resolve().parents[1]


def compiled_sources() -> dict[str, Path]:
    """Module name -> source, for every module compiled by mypyc where it can be."""
    with open(REPO / "pyproject.toml", "rb") as f:
        paths = tomllib.load(f)["tool"]["periscope"]["mypyc"]
    return {p.removesuffix(".py").replace("/", "."): REPO / p for p in paths}


class Sources:
    """A meta path finder ahead of the default ones: these modules from their .py."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(self, name: str, path: object = None,
                  target: object = None) -> ModuleSpec | None:
        src = self.sources.get(name)
        return None if src is None else spec_from_file_location(name, src)


def install() -> None:
    sources = compiled_sources()
    loaded = sorted(n for n in sources if n in sys.modules)
    if loaded:
        raise RuntimeError(f"already imported, compiled or not: {loaded}")
    sys.meta_path.insert(0, Sources(sources))
