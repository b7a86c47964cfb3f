"""Handlers of stored event queries (events, errors, top; connection and L7 queries:
handlers/l7.py).

A stored query runs under the request's decision: the gate said which selectors the
caller may see at which level, the requested targets filter on top, and the store
applies both in SQL (store/query.py), so `limit` counts only rows the caller sees, after
every filter.
"""

from __future__ import annotations

import re
from typing import Any

from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.errors import BadRequest
from collector.selectors import parse_selector
from collector.serve.services import Services, int_arg
from collector.store.query import MAX_LIMIT, Query

KINDS = ("syscall", "tls", "exec", "fork", "exit", "data")
_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
_ERRNO = re.compile(r"^E[A-Z0-9]{1,31}$")
_CURSOR = re.compile(r"^(\d{1,18})\.(\d{1,9})$")


def _time(a: dict[str, Any], key: str) -> float | None:
    v = a.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise BadRequest(f'"{key}" must be a unix timestamp')
    return v


def _names(a: dict[str, Any], key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    """A string or a list of strings, each matching pattern (syscall or errno names)."""
    v = a.get(key, [])
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or len(items) > 32 or not all(
            isinstance(x, str) and pattern.match(x) for x in items):
        raise BadRequest(f'"{key}" must be {what} or a list of them')
    return tuple(items)


def _query(scope: Scope, **kw: Any) -> Query:
    a = scope.args
    d = scope.decision
    if d.visibility is None:  # the gate decides every stored op with a visibility
        raise TypeError(f"{scope.op}: the decision carries no visibility")
    since, until = _time(a, "since"), _time(a, "until")
    if since is not None and until is not None and until <= since:
        raise BadRequest('"until" must be later than "since"')
    before = a.get("before")
    cursor = None
    if before is not None:
        m = _CURSOR.match(before) if isinstance(before, str) else None
        if m is None:
            raise BadRequest('"before" must be a page cursor such as "12.345" (from "next")')
        cursor = (int(m[1]), int(m[2]))
    return Query(d.visibility, filters=tuple(parse_selector(t) for t in d.targets),
                 pid=int_arg(a, "pid", None, 1, 1 << 22), since=since, until=until,
                 before=cursor, limit=int_arg(a, "limit", 100, 1, MAX_LIMIT) or 100, **kw)


def events(svc: Services, who: Principal, scope: Scope) -> Any:
    """Stored events, newest `limit` that match, oldest first. With "page": true the reply
    is {"events", "more", "next"}: "next" is the cursor ("before") of the older ones."""
    a = scope.args
    kinds = _names(a, "kind", re.compile("^(" + "|".join(KINDS) + ")$"), "|".join(KINDS))
    q = _query(scope, kinds=kinds, syscalls=_names(a, "syscall", _NAME, "a syscall name"),
               errnos=_names(a, "errno", _ERRNO, "an errno name such as ENOENT"))
    page = svc.store.query(q)
    if a.get("page") is True:
        return {"events": list(page), "more": page.more,
                "next": f"{page.cursor[0]}.{page.cursor[1]}" if page.more and page.cursor
                else None}
    return list(page)


def errors(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    """Failed calls grouped by process, syscall, errno and path or peer, commonest first."""
    errnos = _names(scope.args, "errno", _ERRNO, "an errno name such as ENOENT")
    return svc.store.errors(_query(scope, errnos=errnos))


def top(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    """Per target (pid, comm, unit) and syscall over the whole range: count, errors, bytes,
    p50/p99 latency, busiest first (`limit` rows)."""
    syscalls = _names(scope.args, "syscall", _NAME, "a syscall name")
    return svc.store.top(_query(scope, syscalls=syscalls))

