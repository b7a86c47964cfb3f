"""The snapshot handler: one process's state now (collector.snapshot: procfs only,
redacted), with what the store recorded about it, at the caller's level, cut to the
reply cap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.errors import BadRequest, NotFound, Unavailable
from collector.selectors import Level, Selector, View, Visibility
from collector.serve.services import Services
from collector.snapshot import NoSuchProcess, SnapshotError, StoreFacts, collect, fit
from collector.snapshot.context import SectionSkipped
from collector.store.l7query import L7Query
from collector.store.query import Query

RECENT_ERRORS = 50  # stored failed syscalls of the process, newest
RECENT_CONNS = 50   # stored connection records of the process, newest


def store_facts(svc: Services, level: Level) -> StoreFacts:
    """The snapshot's `store` section: the process's recent failed syscalls and, when the
    L7 stage stores them, its recent connections (`periscope conns` rows), as stored
    (redacted at capture), narrowed to `level` (at meta a connection has no protocol)."""

    def facts(pid: int, since: float | None) -> Mapping[str, Any]:
        if since is None:
            # Without its start time, rows of an earlier process with this pid would pass.
            raise SectionSkipped("needs identity (the start time tells this process's "
                                 "stored rows from an earlier one's with the same pid)")
        mine = Visibility((View(level, (Selector("pid", str(pid)),)),))
        # The start time (boot time + clock ticks) is rounded to 10 ms: the margin keeps
        # the rows of the process's first instant.
        rows = svc.store.query(Query(mine, pid=pid, since=since - 0.01, errors_only=True,
                                     limit=RECENT_ERRORS))
        out: dict[str, Any] = {"recent_errors": rows}
        if svc.l7store is not None:
            out["recent_connections"] = svc.l7store.page(L7Query(
                mine, "conns", since=since - 0.01, limit=RECENT_CONNS)).rows
        return out

    return facts


def snapshot(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    d = scope.decision
    if len(d.targets) != 1 or not d.targets[0].startswith("pid:"):
        raise BadRequest(f"snapshot takes one process, as pid:N (allowed here: "
                         f"{', '.join(d.targets)})")
    pid = int(d.targets[0][len("pid:"):])
    try:
        snap = collect(pid, svc.redactor, procfs=str(svc.gate.resolver.procfs),
                       store_facts=store_facts(svc, d.level or Level.META),
                       counters=svc.counters)
    except NoSuchProcess as err:
        raise NotFound(f"no process with pid {pid} (it may have exited)") from err
    except SnapshotError as err:
        raise Unavailable(f"cannot snapshot pid {pid}: {err}") from err
    out = fit(snap, svc.max_reply_bytes)
    if out is not snap:
        svc.counters["snapshots_truncated"] += 1
    return out
