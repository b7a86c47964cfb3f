"""collect(): one process's state, section by section, redacted, partial rather than failed."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

from collector.snapshot import fds, libs, sections
from collector.snapshot.context import Ctx, SectionSkipped, TextRedactor, clean
from collector.snapshot.procdir import ProcDir

SCHEMA = 1


class StoreFacts(Protocol):
    """The daemon's hook for what its store knows about the target: called with the pid
    and the process's start time (so rows of an earlier process with the same pid can be
    left out); returns e.g. {"recent_errors": [...], "recent_connections": [...]} made of
    stored rows, which are already redacted and must already be narrowed to the caller's
    level."""

    def __call__(self, pid: int, since: float | None) -> Mapping[str, Any]: ...


Section = Callable[[Ctx], Any]

SECTIONS: tuple[tuple[str, Section], ...] = (
    ("identity", sections.identity),
    ("parents", sections.parents),
    ("cgroup", sections.cgroup),
    ("namespaces", sections.namespaces),
    ("cpu", sections.cpu),
    ("threads", sections.threads),
    ("fds", fds.fds),
    ("sockets", fds.sockets),
    ("memory", sections.memory),
    ("maps", libs.maps),
    ("libraries", libs.libraries),
    ("limits", sections.limits),
    ("io", sections.io),
    ("environ", sections.environ),
)
SECTION_NAMES = (*(name for name, _ in SECTIONS), "store")


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of what the store hook returned (strings cleaned, odd types as
    text, nesting bounded)."""
    if depth > 16:
        return None
    if isinstance(value, Mapping):
        return {clean(str(k)): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, str):
        return clean(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clean(str(value))


def _reason(err: Exception, proc: ProcDir) -> str:
    if isinstance(err, SectionSkipped):
        return f"skipped: {err}"
    why = sections.describe(err)
    if why == "process exited" and proc.alive():
        return "not available"  # a file this kernel (or this fake procfs) does not have
    return why


def collect(
    pid: int,
    redactor: TextRedactor,
    *,
    procfs: str = "/proc",
    store_facts: StoreFacts | None = None,
    counters: MutableMapping[str, int] | None = None,
    _between: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """A schema-versioned, JSON-ready, redacted snapshot of process `pid`, read from procfs
    only (no debugger attach, no memory reads). Raises NoSuchProcess if the pid does not exist.

    A section that fails (permission, a file this kernel lacks) is listed in `failed` and
    the rest are still read. If the process exits mid-way, the sections read so far are
    returned with `partial` and `exited` set. `counters` (the daemon's, optional) counts
    snapshots, partial ones and exits. `_between(section)` runs after each section (a test
    hook: kill the process at a known point).
    """
    t0 = time.monotonic()
    taken = time.time()
    count = counters if counters is not None else {}
    with ProcDir(procfs, pid) as proc:
        ctx = Ctx(proc, redactor)
        failed: dict[str, str] = {}
        snap: dict[str, Any] = {"schema": SCHEMA, "pid": pid, "taken_at": round(taken, 3),
                                "partial": False, "exited": False, "failed": failed}
        steps: list[tuple[str, Section]] = list(SECTIONS)
        if store_facts is not None:
            hook = store_facts
            steps.append(("store", lambda c: jsonable(hook(c.pid, c.start_time))))
        for name, section in steps:
            if snap["exited"]:
                failed[name] = "not read: process exited"
                continue
            try:
                snap[name] = section(ctx)
            except (OSError, ValueError, SectionSkipped) as err:
                failed[name] = _reason(err, proc)
            except Exception as err:
                if name != "store":
                    raise
                failed[name] = f"store error ({type(err).__name__})"  # the daemon's hook
            if not proc.alive():
                # Expected race: the process exited (or became a zombie, whose fds, maps
                # and environ read as empty) during this section, so what it returned may
                # be incomplete. The snapshot keeps it, marked, and stops reading.
                snap["exited"] = True
                failed.setdefault(name, "process exited during this section")
            if _between is not None:
                _between(name)
    snap["partial"] = bool(failed)
    snap["duration_ms"] = round((time.monotonic() - t0) * 1000, 2)
    count["snapshots"] = count.get("snapshots", 0) + 1
    if snap["partial"]:
        count["snapshots_partial"] = count.get("snapshots_partial", 0) + 1
    if snap["exited"]:
        count["snapshots_exited"] = count.get("snapshots_exited", 0) + 1
    return snap
