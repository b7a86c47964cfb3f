"""`python -m collector.cli`: the same as the installed `periscope`."""

from __future__ import annotations

import sys

from collector.cli.commands import main

sys.exit(main())
