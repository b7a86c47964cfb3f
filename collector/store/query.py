"""Stored queries as SQL: the access decision's views and the caller's filters become one
WHERE clause over the facts stored with each block's processes, and each process row's
level one CASE, so only rows the caller sees are read, counted or aggregated.

Rows are matched on the facts stored at capture (comm, exe, cgroup, unit), never on
today's /proc: a process that exited long ago is found by the selectors that covered it.
What the level hides of an event is capture.events.narrow's rule; the SQL only says which
level each process row gets. `events` reads the candidate blocks newest first (store.py
decodes them and stops at the limit); `top` and `errors` sum the per-block aggregates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.selectors import Level, Selector, Visibility
from collector.store.blocks import KIND_BITS, OTHER_KIND

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
    errnos: tuple[str, ...] = ()  # only failed calls with one of these errnos
    since: float | None = None  # wall-clock seconds, inclusive
    until: float | None = None  # wall-clock seconds, exclusive
    errors_only: bool = False  # only events with an errno
    # Only rows seen with payload, whose payload starts with one of these.
    payload_prefixes: tuple[str, ...] = ()
    before: tuple[int, int] | None = None  # a page cursor: (block, position) to read below
    limit: int = 100


def escape_like(text: str) -> str:
    """text as a literal inside a LIKE pattern with ESCAPE '\\'."""
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
                                                             escape_like(sel.value) + "/%"]
    raise ValueError(f"unknown selector kind {sel.kind!r}")


def any_of(sels: tuple[Selector, ...]) -> tuple[str, list[Any]]:
    """SQL true for a row any of sels matches ("0": none given) and its parameters."""
    parts, params = [], []
    for sel in sels:
        sql, p = selector_sql(sel)
        parts.append(sql)
        params += p
    return ("(" + " OR ".join(parts) + ")" if parts else "0"), params


def kind_mask(kinds: tuple[str, ...]) -> int:
    return sum({KIND_BITS.get(k, OTHER_KIND) for k in kinds})


def visible_rows(q: Query, whole: bool = False) -> tuple[str, list[Any]] | None:
    """SELECT of the process rows (block_procs) the caller sees that may hold a match:
    columns block, idx, pid, comm, unit, ts_min, ts_max, lvl. With `whole`, only rows
    entirely inside the time range (their aggregates count whole); else every row that
    overlaps it. None when no view sees anything."""
    case, case_params = [], []
    for view in q.visibility.views:
        sql, p = any_of(view.selectors)
        case.append(f"WHEN {sql} THEN {int(view.level)}")
        case_params += p
    if not case:
        return None
    where: list[str] = []
    params: list[Any] = []
    if q.filters:
        sql, p = any_of(q.filters)
        where.append(sql)
        params += p
    if q.pid is not None:
        where.append("pid = ?")
        params.append(q.pid)
    if q.kinds:
        where.append("(kinds & ?) != 0")
        params.append(kind_mask(q.kinds))
    if q.since is not None:
        where.append("ts_min >= ?" if whole else "ts_max >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("ts_max < ?" if whole else "ts_min < ?")
        params.append(q.until)
    if q.before is not None:
        where.append("block <= ?")
        params.append(q.before[0])
    if q.payload_prefixes:
        where.append("payload > 0")
    for table, column, values in (("block_stats", "syscall", q.syscalls),
                                  ("block_errors", "errno", q.errnos)):
        if values:  # the block's aggregates say whether the process made such a call
            where.append(f"EXISTS (SELECT 1 FROM {table} a WHERE a.block = p.block AND "
                         f"a.idx = p.idx AND a.{column} IN ({','.join('?' * len(values))}))")
            params += values
    if q.errors_only:
        where.append("EXISTS (SELECT 1 FROM block_errors a WHERE a.block = p.block AND "
                     "a.idx = p.idx)")
    lvl = f"CASE {' '.join(case)} END"
    payload = int(Level.PAYLOAD)
    outer = ["lvl IS NOT NULL"]
    if q.payload_prefixes or (q.kinds and set(q.kinds) <= {"data"}):
        outer.append(f"lvl >= {payload}")  # payload (and data events) are payload-level only
    sql = (f"SELECT block, idx, pid, comm, unit, ts_min, ts_max, lvl FROM (SELECT p.*, {lvl} "
           f"AS lvl FROM block_procs p WHERE {' AND '.join(where) or '1'}) "
           f"WHERE {' AND '.join(outer)}")
    return sql, [*case_params, *params]


def candidates(q: Query) -> tuple[str, list[Any]]:
    """(block, idx, lvl) of every visible process row that may hold a match, newest block
    first: the blocks `events` decodes, in the order it reads them."""
    rows = visible_rows(q)
    if rows is None:
        return "SELECT NULL, NULL, NULL WHERE 0", []
    sql, params = rows
    return f"SELECT block, idx, lvl FROM ({sql}) ORDER BY block DESC", params


def top(q: Query) -> tuple[str, list[Any]] | None:
    """Per (pid, comm, unit, syscall) over the visible rows entirely inside the range:
    count, errors, bytes, latency sum, and the latency histogram as (bucket, count)
    pairs, busiest first."""
    rows = visible_rows(q, whole=True)
    if rows is None:
        return None
    sql, params = rows
    only = ""
    if q.syscalls:
        only = f"WHERE syscall IN ({','.join('?' * len(q.syscalls))}) "
    return (f"WITH v AS ({sql}), "
            "s AS (SELECT v.pid, v.comm, v.unit, a.syscall, SUM(a.count) AS n, "
            "SUM(a.errors) AS errors, SUM(a.bytes) AS bytes, SUM(a.lat_sum) AS lat_sum "
            "FROM v JOIN block_stats a ON a.block = v.block AND a.idx = v.idx "
            f"{only}GROUP BY 1, 2, 3, 4), "
            "h AS (SELECT v.pid, v.comm, v.unit, l.syscall, l.bucket, SUM(l.count) AS c "
            "FROM v JOIN block_lat l ON l.block = v.block AND l.idx = v.idx "
            f"{only}GROUP BY 1, 2, 3, 4, 5) "
            "SELECT s.pid, s.comm, s.unit, s.syscall, s.n, s.errors, s.bytes, s.lat_sum, "
            "(SELECT json_group_array(json_array(h.bucket, h.c)) FROM h WHERE h.pid = s.pid "
            "AND h.comm IS s.comm AND h.unit IS s.unit AND h.syscall = s.syscall) "
            "FROM s ORDER BY s.n DESC", [*params, *q.syscalls, *q.syscalls])


def errors(q: Query) -> tuple[str, list[Any]] | None:
    """Failed calls per (pid, comm, unit, syscall, errno, path or peer) over the visible
    rows entirely inside the range: count and the last time, commonest first."""
    rows = visible_rows(q, whole=True)
    if rows is None:
        return None
    sql, params = rows
    where = ""
    if q.errnos:
        where = f"WHERE e.errno IN ({','.join('?' * len(q.errnos))})"
        params = [*params, *q.errnos]
    return (f"WITH v AS ({sql}) "
            "SELECT v.pid, v.comm, v.unit, e.syscall, e.errno, e.detail, SUM(e.count), "
            "MAX(e.ts_last) FROM v JOIN block_errors e ON e.block = v.block AND e.idx = v.idx "
            f"{where} GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 7 DESC", params)


def straddling(q: Query) -> tuple[str, list[Any]] | None:
    """(block, idx, lvl) of visible rows that overlap the range but are not inside it:
    their aggregates cannot be used whole, so their events are read and counted."""
    if q.since is None and q.until is None:
        return None
    rows = visible_rows(q)
    if rows is None:
        return None
    sql, params = rows
    edge = []
    if q.since is not None:
        edge.append("ts_min < ?")
        params.append(q.since)
    if q.until is not None:
        edge.append("ts_max >= ?")
        params.append(q.until)
    return (f"SELECT block, idx, lvl FROM ({sql}) WHERE {' OR '.join(edge)} "
            "ORDER BY block DESC", params)
