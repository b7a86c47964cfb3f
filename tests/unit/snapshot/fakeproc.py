"""The fake procfs the snapshot unit tests read: tests/data/proc, pid 5150 (parent 5100)."""

from __future__ import annotations

from pathlib import Path

PROC = Path(__file__).parents[2] / "data" / "proc"
PID = 5150
