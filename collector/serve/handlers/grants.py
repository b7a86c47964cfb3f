"""Handlers of grant.add, grant.list and grant.revoke (admin ops)."""

from __future__ import annotations

import contextlib
from typing import Any

from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.errors import BadRequest, NotFound
from collector.selectors import Level, parse_duration
from collector.serve.services import Services, str_arg


def grant_add(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    a = scope.args
    principal, target, reason, for_ = (str_arg(a, k, "grant.add")
                                       for k in ("principal", "target", "reason", "for"))
    level = a.get("level", "meta")
    if not isinstance(level, str):
        raise BadRequest('"level" must be "meta" or "payload"')
    try:
        g = svc.grants.add(principal, target, Level.parse(level), parse_duration(for_),
                           reason, created_by=who.user)
    except ValueError as err:  # SelectorError, and the grant store's checks (name, reason)
        raise BadRequest(str(err)) from err
    return g.to_json()


def grant_list(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    return [g.to_json() for g in svc.grants.list()]


def _revoke(svc: Services, who: Principal, gid: str) -> dict[str, Any]:
    if not svc.grants.revoke(gid):
        raise NotFound(f"no active grant {gid[:16]!r}")
    ended = svc.router.end_where(lambda s: f"grant {gid}" in s.sources, "revoked")
    out: dict[str, Any] = {"revoked": gid, "sessions_ended": ended}
    req = svc.desk.grant_revoked(who, gid) if svc.desk is not None else None
    if req is not None:  # the grant came from an access request: it ends as revoked
        out["request"] = req.id
    return out


def grant_revoke(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    """One grant by id, or with "all": every active grant (the emergency stop)."""
    if scope.args.get("all") is True:
        done = []
        for g in svc.grants.list():
            with contextlib.suppress(NotFound):  # expired or revoked meanwhile
                done.append(_revoke(svc, who, g.id))
        return {"revoked": [d["revoked"] for d in done],
                "sessions_ended": sum(d["sessions_ended"] for d in done)}
    return _revoke(svc, who, str_arg(scope.args, "id", "grant.revoke"))
