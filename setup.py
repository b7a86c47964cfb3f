"""The optional C twins of the hot path (the metadata is in pyproject.toml).

Each one has a pure-Python twin that is used where the compiler or the Python headers
are missing: `optional=True` turns a failed build into a warning, not a failed install.
`periscoped` logs which one it runs, and the unit tests hold both equal.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension(name, [src], optional=True, extra_compile_args=["-O2", "-Wall", "-Werror"])
    for name, src in (("probes._ringwalk", "probes/_ringwalk.c"),
                      ("collector.capture._iobuild", "collector/capture/_iobuild.c"),
                      ("collector.capture._printable", "collector/capture/_printable.c"),
                      ("collector.store._tally", "collector/store/_tally.c"),
                      ("redact._linememo", "redact/_linememo.c"),
                      ("collector.l7._httphead", "collector/l7/_httphead.c"))
])
