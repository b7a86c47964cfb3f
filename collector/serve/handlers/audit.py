"""Handlers of audit.show and audit.verify (admin ops)."""

from __future__ import annotations

from typing import Any

import orjson

from collector.access.audit import read_anchors, verify
from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.serve.services import Services, int_arg


def audit_show(svc: Services, who: Principal, scope: Scope) -> list[Any]:
    n = int_arg(scope.args, "limit", 50, 1, 10000) or 50
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
    anchors = read_anchors(svc.anchors_path)
    r = verify(svc.audit_path, anchors)
    return {"ok": r.ok, "count": r.count, "message": r.message, "last_seq": r.last_seq,
            "bad_seq": r.bad_seq, "bad_line": r.bad_line, "anchors": len(anchors)}
