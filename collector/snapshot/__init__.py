"""Process snapshots: one process's state read from procfs (never attached to, never its memory),
redacted, as schema-versioned JSON (docs/events.md "Snapshot") and a short text summary.

    from collector.snapshot import collect, render_summary, write_snapshot
    snap = collect(pid, Redactor.default())        # NoSuchProcess if there is no such pid
    print(render_summary(snap)); write_snapshot("out.json", snap)
    fit(snap, max_bytes)                           # cut to a reply cap, marked truncated
"""

from __future__ import annotations

from collector.snapshot.collect import SCHEMA, SECTION_NAMES, StoreFacts, collect
from collector.snapshot.fit import fit
from collector.snapshot.output import write_private, write_snapshot
from collector.snapshot.procdir import NoSuchProcess, SnapshotError
from collector.snapshot.render import render_summary

__all__ = ["SCHEMA", "SECTION_NAMES", "NoSuchProcess", "SnapshotError", "StoreFacts", "collect",
           "fit", "render_summary", "write_private", "write_snapshot"]
