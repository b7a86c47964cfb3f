"""`python -m collector.daemon`: run periscoped."""

from __future__ import annotations

import sys

from collector.daemon.main import main

sys.exit(main())
