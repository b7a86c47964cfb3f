"""The optional native builds of the hot path (the metadata is in pyproject.toml).

- The C twins: each has a pure-Python twin that is used where the compiler or the Python
  headers are missing: `optional=True` turns a failed build into a warning, not a failed
  install. The unit tests hold both equal.
- The L7 parsers (`[tool.periscope] mypyc` in pyproject.toml) compiled by mypyc, where
  mypy is importable at build time. The same typed sources, so nothing to keep equal by
  hand; `make unit` runs their tests again on the sources (PERISCOPE_PURE=1).

`periscoped` logs which of each it runs (collector/serve/native.py).
"""

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
GROUP = "collector.l7.native"  # mypyc's shared library: collector/l7/native__mypyc.*.so
C_TWINS = [
    Extension(name, [src], optional=True, extra_compile_args=["-O2", "-Wall", "-Werror"])
    for name, src in (("probes._ringwalk", "probes/_ringwalk.c"),
                      ("collector.capture._iobuild", "collector/capture/_iobuild.c"),
                      ("collector.capture._printable", "collector/capture/_printable.c"),
                      ("collector.store._tally", "collector/store/_tally.c"),
                      ("redact._linememo", "redact/_linememo.c"),
                      ("redact._droptail", "redact/_droptail.c"),
                      ("collector.l7._httphead", "collector/l7/_httphead.c"))
]


def mypyc_modules() -> list[str]:
    """The sources pyproject.toml names for mypyc; none without a TOML reader."""
    try:
        import tomllib
    except ImportError:  # Python 3.10 (Ubuntu 22.04): tomli, a dependency there
        try:
            import tomli as tomllib
        except ImportError:  # not installed where this builds: the parsers stay interpreted
            return []
    with open(HERE / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["tool"]["periscope"]["mypyc"])


def built_in_place(modules: list[str]) -> bool:
    """An in-place build whose compiled modules are all newer than their sources: nothing
    to do, as build_ext decides for the C twins (and mypy is not run for it). The VM
    guest's checkout comes with the host's, mtimes kept."""
    if "--inplace" not in sys.argv and "-i" not in sys.argv:
        return False
    libs = list(HERE.glob(GROUP.replace(".", "/") + "__mypyc.*.so"))
    if not modules or not libs:
        return False
    newest = max((HERE / m).stat().st_mtime for m in modules)
    built = [next(iter((HERE / m).parent.glob(Path(m).stem + ".*.so")), None) for m in modules]
    return all(b is not None and b.stat().st_mtime >= newest for b in built + libs)


def mypyc_extensions() -> list[Extension]:
    modules = mypyc_modules()
    if built_in_place(modules):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # no mypy where this is built: the parsers stay interpreted
        return []
    exts = mypycify(modules, opt_level="3", group_name=GROUP)
    for ext in exts:
        ext.optional = True
        ext.mypyc_group = True
    return exts


class BuildExt(build_ext):
    """Each module mypyc compiles is a small shim over one shared library: if any of the
    group failed to build, a shim that did would fail at import (or pair with a stale
    library). So then every built module of the group is removed, and the sources run."""

    def build_extensions(self) -> None:
        self._failed: list[str] = []
        super().build_extensions()
        group = [e for e in self.extensions if getattr(e, "mypyc_group", False)]
        if any(e.name in self._failed for e in group):
            for e in group:
                Path(self.get_ext_fullpath(e.name)).unlink(missing_ok=True)
            print("periscope: the mypyc build failed; the L7 parsers stay interpreted",
                  file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:  # an optional one is then a warning (setuptools)
            self._failed.append(ext.name)
            raise


setup(ext_modules=C_TWINS + mypyc_extensions(), cmdclass={"build_ext": BuildExt})
