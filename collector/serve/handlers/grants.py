"""Handlers of grant.add, grant.list and grant.revoke (admin ops)."""

from __future__ import annotations

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


def grant_revoke(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    gid = str_arg(scope.args, "id", "grant.revoke")
    if not svc.grants.revoke(gid):
        raise NotFound(f"no active grant {gid[:16]!r}")
    ended = svc.router.end_where(lambda s: f"grant {gid}" in s.sources, "revoked")
    out: dict[str, Any] = {"revoked": gid, "sessions_ended": ended}
    req = svc.desk.grant_revoked(who, gid) if svc.desk is not None else None
    if req is not None:  # the grant came from an access request: it ends as revoked
        out["request"] = req.id
    return out
