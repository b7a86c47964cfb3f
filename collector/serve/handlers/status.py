"""Handlers that describe the daemon and the caller: status (admin) and hello (anyone)."""

from __future__ import annotations

import threading
import time
from typing import Any

from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.serve.native import native
from collector.serve.services import Services


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


def hello(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    """Who the daemon thinks the caller is (from SO_PEERCRED and the user database)."""
    out: dict[str, Any] = {"uid": who.uid, "user": who.user,
                           "groups": sorted(who.group_names)}
    if svc.idp is not None:  # what `periscope login` needs to find the identity provider
        cfg = svc.idp.cfg
        out["idp"] = {"issuer": cfg.issuer, "client_id": cfg.client_id or cfg.audience}
    if who.idp is not None:
        out["idp_login"] = who.idp.audit()
    return out


def status(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    return {
        "uptime_s": round(time.time() - svc.started, 1),
        "probes_attached": svc.tracer.attached,
        "probe_load_s": round(svc.tracer.last_load_seconds, 3),
        "native": native(),
        "targets": svc.tracer.targets(),
        "sessions": [{"id": s.id, "user": s.user, "events": s.events,
                      "deadline": s.deadline} for s in list(svc.router.sessions.values())],
        "profiles": [{"id": r.id, "user": r.user, "sampled_s": round(r.elapsed(), 1)}
                     for r in svc.profiles.running()],
        "kernel": svc.tracer.stats(),
        "tls_attach_failed": svc.tracer.tls_failures(),
        "pipeline": dict(svc.pipeline.counters) | {"backlog": svc.pipeline.backlog()},
        "router": dict(svc.router.counters),
        "l7": (dict(svc.stage.counters) if svc.stage is not None else {})
        | (svc.l7store.stats() if svc.l7store is not None else {}),
        "server": dict(svc.counters),
        "stored_events": svc.store.count(),
        "audit_head": list(svc.gate.audit.head()),
        "thread_cpu_s": thread_cpu(),
        "export": _export(svc),
    }


def _export(svc: Services) -> dict[str, Any] | None:
    """Where exported sessions' events go, and the exporters' counters (None: no export)."""
    ex = svc.exporters
    if ex is None:
        return None
    counters = dict(ex.counters)
    for sink in (ex.otlp, ex.jsonlog):
        if sink is not None:
            counters.update(sink.counters)
    return {"to": list(ex.destinations), "counters": counters, "backlog": ex.backlog()}
