"""Handlers of the stored connection and L7 queries: conns, http, sql, redis, dns.

Each runs under the request's decision (the gate decided and audited it): the caller's
selectors filter, every other argument is a filter too, all of them in SQL
(store/l7query.py), so `limit` counts only rows that pass. A page says whether older
rows match, and the cursor that fetches them (`before`).
"""

from __future__ import annotations

from typing import Any

from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.errors import BadRequest, Unavailable
from collector.selectors import parse_selector
from collector.serve.services import Services, int_arg
from collector.store.l7query import L7Query, Status
from collector.store.query import MAX_LIMIT

TEXT_MAX = 256
ALL_KINDS = ("conns", "http", "sql", "redis", "dns")
L7_KINDS = ALL_KINDS[1:]
# filter argument -> the query kinds that take it
FILTERS = {"status": L7_KINDS, "slow": L7_KINDS, "method": L7_KINDS, "errors": ALL_KINDS,
           "peer": ALL_KINDS}


def _time(args: dict[str, Any], key: str) -> float | None:
    v = args.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise BadRequest(f'"{key}" must be a unix timestamp')
    return float(v)


def _text(args: dict[str, Any], key: str) -> str | None:
    v = args.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > TEXT_MAX:
        raise BadRequest(f'"{key}" must be a string of 1 to {TEXT_MAX} characters')
    return v


def build(kind: str, scope: Scope) -> L7Query:
    """The query a request asks for. Raises BadRequest naming the argument."""
    a = scope.args
    for key, kinds in FILTERS.items():
        if key in a and kind not in kinds:
            raise BadRequest(f'{kind} takes no "{key}"')
    d = scope.decision
    if d.visibility is None:  # the gate decides every stored op with a visibility
        raise TypeError(f"{scope.op}: the decision carries no visibility")
    since, until = _time(a, "since"), _time(a, "until")
    if since is not None and until is not None and until < since:
        raise BadRequest('"until" is before "since"')
    status = _text(a, "status")
    try:
        parsed = Status.parse(status) if status is not None else None
    except ValueError as err:
        raise BadRequest(f'"status": {err}') from err
    if kind == "http" and parsed is not None and parsed.text is not None:
        raise BadRequest('"status" of HTTP is a code (404) or a class (5xx)')
    slow = a.get("slow")
    if slow is not None and (isinstance(slow, bool) or not isinstance(slow, (int, float))
                             or slow < 0):
        raise BadRequest('"slow" must be a number of milliseconds')
    errors = a.get("errors", False)
    if not isinstance(errors, bool):
        raise BadRequest('"errors" must be true or false')
    return L7Query(d.visibility, kind, filters=tuple(parse_selector(t) for t in d.targets),
                   since=since, until=until, status=parsed,
                   slow_ms=None if slow is None else float(slow), errors_only=errors,
                   method=_text(a, "method"), peer=_text(a, "peer"),
                   before=int_arg(a, "before", None, 1, 1 << 62),
                   limit=int_arg(a, "limit", 100, 1, MAX_LIMIT) or 100)


def _page(kind: str, svc: Services, scope: Scope) -> dict[str, Any]:
    if svc.l7store is None:
        raise Unavailable("connection and L7 records are not stored by this daemon")
    page = svc.l7store.page(build(kind, scope))
    return {"rows": page.rows, "more": page.more, "before": page.before}


def conns(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    """Connections: one row each (its latest record), newest opened first."""
    return _page("conns", svc, scope)


def http(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    return _page("http", svc, scope)


def sql(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    """PostgreSQL and MySQL/MariaDB queries."""
    return _page("sql", svc, scope)


def redis(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    return _page("redis", svc, scope)


def dns(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    return _page("dns", svc, scope)
