"""Non-streaming op handlers: status, queries, grants, audit. Each gets an allowed Scope."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector.access.audit import verify
from collector.access.auth import Principal
from collector.access.gate import Gate, Scope
from collector.access.grants import GrantStore
from collector.capture.pipeline import Pipeline
from collector.capture.tracer import Tracer
from collector.protocol import Fault, ProtocolError
from collector.selectors import Level, SelectorError, parse_duration
from collector.serve.sessions import Router
from collector.store.store import EventStore


@dataclass
class Services:
    """Everything a handler may touch; built once by the daemon."""

    gate: Gate
    tracer: Tracer
    pipeline: Pipeline
    router: Router
    store: EventStore
    grants: GrantStore
    audit_path: str
    anchors_path: str
    max_payload: int
    started: float = field(default_factory=time.time)
    counters: Counter[str] = field(default_factory=Counter)


Handler = Callable[[Services, Principal, Scope], Any]


def _int_arg(args: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int | None:
    v = args.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ProtocolError(Fault.BAD_REQUEST, f'"{key}" must be an integer in [{lo}, {hi}]')
    return v


def thread_cpu() -> dict[str, float]:
    """CPU seconds per daemon thread (reader, pipeline, sinks, loop), executor pools summed:
    where the daemon's time goes, read from each thread's CPU clock."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.ident is None:
            continue
        try:
            secs = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except OSError:  # the thread ended meanwhile
            continue
        name = t.name.split("_")[0] if t.name.startswith("asyncio_") else t.name
        out[name] = round(out.get(name, 0.0) + secs, 3)
    return out


def status(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    return {
        "uptime_s": round(time.time() - svc.started, 1),
        "probes_attached": svc.tracer.attached,
        "probe_load_s": round(svc.tracer.last_load_seconds, 3),
        "targets": svc.tracer.targets(),
        "sessions": [{"id": s.id, "user": s.user, "events": s.events,
                      "deadline": s.deadline} for s in list(svc.router.sessions.values())],
        "kernel": svc.tracer.stats(),
        "tls_attach_failed": svc.tracer.tls_failures(),
        "pipeline": dict(svc.pipeline.counters) | {"backlog": svc.pipeline.backlog()},
        "router": dict(svc.router.counters),
        "server": dict(svc.counters),
        "stored_events": svc.store.count(),
        "audit_head": list(svc.gate.audit.head()),
        "thread_cpu_s": thread_cpu(),
    }


def _query(svc: Services, who: Principal, scope: Scope, **kw: Any) -> list[dict[str, Any]]:
    a = scope.args
    pid = _int_arg(a, "pid", None, 1, 1 << 22)
    limit = _int_arg(a, "limit", 100, 1, 10000) or 100
    since = a.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
        raise ProtocolError(Fault.BAD_REQUEST, '"since" must be a unix timestamp')
    visible = svc.gate.visibility(who, scope.op, a.get("reason"))
    return list(svc.store.query(visible, pid=pid, since=since, limit=limit, **kw))


def events(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    kind = scope.args.get("kind")
    if kind is not None and kind not in ("syscall", "tls", "exec", "fork", "exit", "data"):
        raise ProtocolError(Fault.BAD_REQUEST,
                            '"kind" must be syscall|tls|exec|fork|exit|data')
    return _query(svc, who, scope, kind=kind)


def errors(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    return _query(svc, who, scope, errors_only=True)


def conns(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    evs = _query(svc, who, scope, kind="syscall")
    return [e for e in evs if e.get("syscall") in ("connect", "accept", "accept4")]


def http(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    methods = ("GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "PATCH ", "OPTIONS ", "HTTP/1.")
    evs = _query(svc, who, scope, kind="syscall")
    return [e for e in evs if str(e.get("payload", "")).startswith(methods)]


def top(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    evs = _query(svc, who, scope, kind="syscall")
    agg: dict[tuple[int, str, str], dict[str, Any]] = {}
    for e in evs:
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
        raise ProtocolError(Fault.BAD_REQUEST, "snapshot needs a pid target")
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
        raise ProtocolError(Fault.NOT_FOUND, f"no process with pid {pid}") from err
    # argv/paths are not included: they would need redaction and are not needed here.
    return info


def grant_add(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    a = scope.args
    try:
        for key in ("principal", "target", "reason", "for"):
            if not isinstance(a.get(key), str):
                raise ProtocolError(Fault.BAD_REQUEST, f'grant.add needs a string "{key}"')
        level = Level.parse(a.get("level", "meta"))
        g = svc.grants.add(a["principal"], a["target"], level, parse_duration(a["for"]),
                           a["reason"], created_by=who.user)
    except (SelectorError, ValueError) as err:
        if isinstance(err, ProtocolError):
            raise
        raise ProtocolError(Fault.BAD_REQUEST, str(err)) from err
    return g.to_json()


def grant_list(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    return [g.to_json() for g in svc.grants.list()]


def grant_revoke(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    gid = scope.args.get("id")
    if not isinstance(gid, str):
        raise ProtocolError(Fault.BAD_REQUEST, 'grant.revoke needs a string "id"')
    if not svc.grants.revoke(gid):
        raise ProtocolError(Fault.NOT_FOUND, f"no active grant {gid[:16]!r}")
    ended = svc.router.end_where(lambda s: f"grant {gid}" in s.sources, "revoked")
    return {"revoked": gid, "sessions_ended": ended}


def audit_show(svc: Services, who: Principal, scope: Scope) -> list[Any]:
    import orjson

    n = _int_arg(scope.args, "limit", 50, 1, 10000) or 50
    with open(svc.audit_path, "rb") as f:
        lines = f.readlines()[-n:]
    out = []
    for line in lines:
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            out.append({"unparsable": len(line)})
    return out


def audit_verify(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    from collector.access.audit import read_anchors

    anchors = read_anchors(svc.anchors_path)
    r = verify(svc.audit_path, anchors)
    return {"ok": r.ok, "count": r.count, "message": r.message, "last_seq": r.last_seq,
            "bad_seq": r.bad_seq, "bad_line": r.bad_line, "anchors": len(anchors)}


HANDLERS: dict[str, Handler] = {
    "status": status, "events": events, "errors": errors, "conns": conns, "http": http,
    "top": top, "snapshot": snapshot, "grant.add": grant_add, "grant.list": grant_list,
    "grant.revoke": grant_revoke, "audit.show": audit_show, "audit.verify": audit_verify,
}
