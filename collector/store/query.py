"""Stored queries as SQL: the access decision's views and the caller's filters become one
WHERE clause, and each row's level one CASE, so LIMIT counts only rows the caller sees.

Rows are matched on the facts stored with them at capture (comm, exe, cgroup, unit),
never on today's /proc: a process that exited long ago is found by the selectors that
covered it. What the level hides of a row is capture.events.narrow's rule; the SQL
only says which level each row gets (and drops rows that would be empty at theirs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from collector.selectors import Level, Selector, Visibility

# Rows newest first, at most this many per query (the protocol caps "limit" below this).
MAX_LIMIT = 10_000


@dataclass(frozen=True)
class Query:
    """One stored query: who may see what (visibility), and what the caller asked for."""

    visibility: Visibility
    filters: tuple[Selector, ...] = ()  # rows of any of these processes; none: all visible
    pid: int | None = None
    kinds: tuple[str, ...] = ()  # event kinds ("syscall", "exec", ...); none: all
    syscalls: tuple[str, ...] = ()
    since: float | None = None  # wall-clock seconds
    errors_only: bool = False  # only events with an errno
    # Only rows seen with payload, whose payload starts with one of these.
    payload_prefixes: tuple[str, ...] = ()
    limit: int = 100


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def selector_sql(sel: Selector) -> tuple[str, list[Any]]:
    """A WHERE predicate (and its parameters) true for rows whose facts `sel` matches.

    The SQL form of Selector.matches (a unit test holds them equal on a table of facts).
    """
    if sel.kind == "*":
        return "1", []
    if sel.kind == "pid":
        return "pid = ?", [int(sel.value)]
    if sel.kind in ("comm", "exe", "unit"):  # the unit column is derived from the cgroup
        return f"{sel.kind} = ?", [sel.value]
    if sel.kind == "cgroup":
        if sel.value == "/":
            return "cgroup IS NOT NULL", []
        # Path-component prefix: /a covers /a and /a/b, not /ab (LIKE wildcards escaped).
        return "(cgroup = ? OR cgroup LIKE ? ESCAPE '\\')", [sel.value,
                                                             _escape_like(sel.value) + "/%"]
    raise ValueError(f"unknown selector kind {sel.kind!r}")


def _any(sels: tuple[Selector, ...]) -> tuple[str, list[Any]]:
    parts, params = [], []
    for sel in sels:
        sql, p = selector_sql(sel)
        parts.append(sql)
        params += p
    return ("(" + " OR ".join(parts) + ")" if parts else "0"), params


def _contains(key: str, value_prefix: str | None = None) -> bytes:
    """Bytes that occur in an event's JSON body exactly when it has `key` (with a string
    value starting with `value_prefix`): orjson writes a flat object, and inside a string
    value every quote is escaped, so `"key":` can only be a key."""
    found = orjson.dumps(key) + b":"
    if value_prefix is not None:
        found += orjson.dumps(value_prefix)[:-1]  # the string, escaped as orjson does, open
    return found


def compile_query(q: Query) -> tuple[str, list[Any]]:
    """SELECT level, body of the newest `q.limit` rows the caller may see, newest first."""
    case, case_params = [], []
    for view in q.visibility.views:
        sql, p = _any(view.selectors)
        case.append(f"WHEN {sql} THEN {int(view.level)}")
        case_params += p
    if not case:
        return "SELECT NULL, NULL WHERE 0", []
    where: list[str] = []
    params: list[Any] = []
    if q.filters:
        sql, p = _any(q.filters)
        where.append(sql)
        params += p
    for column, values in (("kind", q.kinds), ("syscall", q.syscalls)):
        if values:
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            params += values
    if q.pid is not None:
        where.append("pid = ?")
        params.append(q.pid)
    if q.since is not None:
        where.append("ts >= ?")
        params.append(q.since)
    if q.errors_only:
        where.append("instr(body, ?) > 0")
        params.append(_contains("errno"))
    payload = int(Level.PAYLOAD)
    outer = ["lvl IS NOT NULL", f"(kind != 'data' OR lvl >= {payload})"]  # data is payload only
    outer_params: list[Any] = []
    if q.payload_prefixes:
        outer.append(f"lvl >= {payload} AND ("
                     + " OR ".join(["instr(body, ?) > 0"] * len(q.payload_prefixes)) + ")")
        outer_params += [_contains("payload", p) for p in q.payload_prefixes]
    sql = (f"SELECT lvl, body FROM (SELECT id, kind, body, CASE {' '.join(case)} END AS lvl "
           f"FROM events WHERE {' AND '.join(where) or '1'}) "
           f"WHERE {' AND '.join(outer)} ORDER BY id DESC LIMIT ?")
    return sql, [*case_params, *params, *outer_params, min(q.limit, MAX_LIMIT)]
