"""Handlers of audit.show and audit.verify (admin ops)."""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from collector.access.audit import read_anchors, verify
from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.errors import BadRequest
from collector.serve.services import Services, int_arg


def topic(rec: dict[str, Any]) -> str:
    """What `--kind` matches: a client request's op family (grant.add -> "grant",
    request.approve -> "request"), else the record's kind (break_glass, session_end, start)."""
    kind = str(rec.get("kind", ""))
    return str(rec.get("op", "")).split(".")[0] if kind == "request" else kind


def audit_show(svc: Services, who: Principal, scope: Scope) -> list[Any]:
    """The newest `limit` records, oldest first; optionally only those since a time and of
    some kinds (an auditor's week: since 7 days, kinds request, grant, break_glass)."""
    a = scope.args
    n = int_arg(a, "limit", 50, 1, 10000) or 50
    since = a.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
        raise BadRequest('"since" must be a unix timestamp')
    kinds = a.get("kinds")
    if kinds is not None and (not isinstance(kinds, list)
                              or not all(isinstance(k, str) for k in kinds)):
        raise BadRequest('"kinds" must be a list of strings')
    out: deque[Any] = deque(maxlen=n)
    with open(svc.audit_path, "rb") as f:
        for line in f:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                if since is None and kinds is None:
                    out.append({"unparsable": len(line)})
                continue
            if since is not None and not rec.get("time", 0) >= since:
                continue
            if kinds is not None and topic(rec) not in kinds:
                continue
            out.append(rec)
    return list(out)


def audit_verify(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    anchors = read_anchors(svc.anchors_path)
    r = verify(svc.audit_path, anchors)
    return {"ok": r.ok, "count": r.count, "message": r.message, "last_seq": r.last_seq,
            "bad_seq": r.bad_seq, "bad_line": r.bad_line, "anchors": len(anchors)}
