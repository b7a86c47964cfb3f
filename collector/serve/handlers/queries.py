"""Handlers of stored event queries (events, errors, top) and the live snapshot
(connection and L7 queries: handlers/l7.py).

A stored query runs under the request's decision: the gate said which selectors the
caller may see at which level, the requested targets filter on top, and the store
applies both in SQL (store/query.py), so `limit` counts only rows the caller sees.
"""

from __future__ import annotations

from typing import Any

from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.capture.events import Event
from collector.errors import BadRequest, NotFound
from collector.selectors import parse_selector
from collector.serve.services import Services, int_arg
from collector.store.query import MAX_LIMIT, Query

KINDS = ("syscall", "tls", "exec", "fork", "exit", "data")


def _query(svc: Services, scope: Scope, **kw: Any) -> list[Event]:
    a = scope.args
    since = a.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
        raise BadRequest('"since" must be a unix timestamp')
    d = scope.decision
    if d.visibility is None:  # the gate decides every stored op with a visibility
        raise TypeError(f"{scope.op}: the decision carries no visibility")
    q = Query(d.visibility, filters=tuple(parse_selector(t) for t in d.targets),
              pid=int_arg(a, "pid", None, 1, 1 << 22), since=since,
              limit=int_arg(a, "limit", 100, 1, MAX_LIMIT) or 100, **kw)
    return svc.store.query(q)


def events(svc: Services, who: Principal, scope: Scope) -> list[Event]:
    kind = scope.args.get("kind")
    if kind is not None and kind not in KINDS:
        raise BadRequest(f'"kind" must be {"|".join(KINDS)}')
    return _query(svc, scope, kinds=(kind,) if kind else ())


def errors(svc: Services, who: Principal, scope: Scope) -> list[Event]:
    return _query(svc, scope, errors_only=True)


def top(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    """The busiest (pid, comm, syscall) among the last `limit` syscalls the caller sees."""
    agg: dict[tuple[int, str, str], dict[str, Any]] = {}
    for e in _query(svc, scope, kinds=("syscall",)):
        key = (e["pid"], e.get("comm", "?"), e["syscall"])
        row = agg.setdefault(key, {"pid": key[0], "comm": key[1], "syscall": key[2],
                                   "count": 0, "errors": 0, "bytes": 0, "total_us": 0.0})
        row["count"] += 1
        row["errors"] += "errno" in e
        row["bytes"] += max(0, e["ret"]) if "direction" in e else 0
        row["total_us"] = round(row["total_us"] + e.get("latency_us", 0), 3)
    return sorted(agg.values(), key=lambda r: -r["count"])


def snapshot(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    import psutil

    targets = [t for t in scope.decision.targets if t.startswith("pid:")]
    if not targets:
        raise BadRequest("snapshot needs a pid target")
    pid = int(targets[0][4:])
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            info: dict[str, Any] = {"pid": pid, "ppid": p.ppid(), "comm": p.name(),
                                    "user": p.username(), "status": p.status(),
                                    "threads": p.num_threads(), "rss": p.memory_info().rss,
                                    "fds": p.num_fds()}
        info["connections"] = [
            {"fd": c.fd, "family": c.family.name, "laddr": list(c.laddr),
             "raddr": list(c.raddr) if c.raddr else None, "status": c.status}
            for c in p.net_connections(kind="inet")]
    except psutil.NoSuchProcess as err:
        raise NotFound(f"no process with pid {pid}") from err
    # argv/paths are not included: they would need redaction and are not needed here.
    return info
