"""PERISCOPE_PURE=1 runs the suite on the sources of the mypyc-compiled modules."""

import os

if os.environ.get("PERISCOPE_PURE"):
    from tests import pure

    pure.install()
