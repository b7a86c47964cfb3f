"""native() says what runs, and PERISCOPE_PURE=1 really runs the L7 parsers' sources."""

from __future__ import annotations

import os
import subprocess
import sys

from collector.serve.native import native
from tests.pure import REPO, compiled_sources


def test_the_pure_switch_imports_every_compiled_module_from_its_source() -> None:
    code = ("from tests import pure; pure.install()\n"
            "import importlib\n"
            "from collector.serve.native import native\n"
            "print(native()['l7_parsers'])\n"
            "for name in pure.compiled_sources():\n"
            "    print(importlib.import_module(name).__file__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "python"
    assert out[1:] == [str(p) for p in compiled_sources().values()]


def test_native_names_how_the_l7_parsers_run() -> None:
    built = list((REPO / "collector" / "l7").glob("native__mypyc*.so"))
    pure = bool(os.environ.get("PERISCOPE_PURE")) or not built
    assert native()["l7_parsers"] == ("python" if pure else "mypyc")
