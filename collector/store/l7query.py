"""Queries over the conns and l7 tables as SQL: the access decision (a level per row, from
the facts stored with it), the caller's selectors and filters, newest first, paged.

Every filter is in the WHERE clause, so LIMIT counts only rows that pass all of them and
that the caller may see. L7 records exist only at payload level (they are made of payload
bytes): a row seen at meta is left out. Connections are meta facts (narrow() drops the
protocol read from their bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.selectors import Level, Selector, Visibility
from collector.store.query import MAX_LIMIT, any_of, escape_like

TABLES = ("conns", "l7")
SLOW_INDEX_MS = 100  # l7 rows at least this slow are in the partial index l7_slow
# what each stored query kind reads: table and protocols
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "conns": ("conns", ()), "http": ("l7", ("http",)), "sql": ("l7", ("pgsql", "mysql")),
    "redis": ("l7", ("redis",)), "dns": ("l7", ("dns",)),
}


@dataclass(frozen=True)
class Status:
    """--status: an HTTP code range (5xx -> 500..599, 404 -> 404..404) or a text that the
    status must equal (SQL command tag or error code, Redis reply, DNS rcode)."""

    lo: int | None = None
    hi: int | None = None
    text: str | None = None

    @classmethod
    def parse(cls, text: str) -> Status:
        t = text.strip()
        if len(t) == 3 and t[0] in "12345" and t[1:].lower() == "xx":
            base = int(t[0]) * 100
            return cls(base, base + 99)
        if len(t) == 3 and t.isdigit() and t[0] in "12345":
            return cls(int(t), int(t))
        if not t or len(t) > 64:
            raise ValueError("status must be a code (500), a class (5xx) or a status text")
        return cls(text=t)


@dataclass(frozen=True)
class L7Query:
    """One stored query over conns or l7 rows, under a visibility."""

    visibility: Visibility
    kind: str = "http"  # a key of KINDS
    filters: tuple[Selector, ...] = ()
    since: float | None = None
    until: float | None = None
    status: Status | None = None
    slow_ms: float | None = None
    errors_only: bool = False
    method: str | None = None
    peer: str | None = None
    before: int | None = None  # paging: only rows older than this id
    limit: int = 100


def peer_sql(peer: str) -> tuple[str, list[Any]]:
    """--peer: an address with its port (`10.0.0.5:5432`, `[::1]:443`), an address alone
    (any port), or `:PORT` (any address)."""
    if peer.startswith(":") and peer[1:].isdigit():
        return "peer LIKE ? ESCAPE '\\'", ["%" + escape_like(peer)]
    if peer.count(":") > 1 and not peer.startswith("["):  # an IPv6 address alone: any port
        return "peer LIKE ? ESCAPE '\\'", [f"[{escape_like(peer)}]:%"]
    return "(peer = ? OR peer LIKE ? ESCAPE '\\')", [peer, escape_like(peer) + ":%"]


def compile_l7(q: L7Query) -> tuple[str, list[Any]]:
    """SELECT id, level, body of the newest `q.limit + 1` matching rows the caller sees."""
    table, protos = KINDS[q.kind]
    case, case_params = [], []
    for view in q.visibility.views:
        if table == "l7" and view.level < Level.PAYLOAD:
            continue  # nothing of an L7 record is meta
        sql, p = any_of(view.selectors)
        case.append(f"WHEN {sql} THEN {int(view.level)}")
        case_params += p
    if not case:
        return "SELECT NULL, NULL, NULL WHERE 0", []
    where: list[str] = []
    params: list[Any] = []
    if protos:
        where.append(f"proto IN ({','.join('?' * len(protos))})")
        params += protos
    if q.filters:
        sql, p = any_of(q.filters)
        where.append(sql)
        params += p
    start, end = ("updated", "ts") if table == "conns" else ("ts", "ts")
    if q.since is not None:  # a connection counts if it was alive at some time in range
        where.append(f"{start} >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append(f"{end} <= ?")
        params.append(q.until)
    if q.status is not None:
        if q.status.text is not None:
            where.append("status = ?")
            params.append(q.status.text)
        else:
            where.append("code BETWEEN ? AND ?")
            params += [q.status.lo, q.status.hi]
    if q.slow_ms is not None:
        where.append("latency_ms >= ?")
        params.append(q.slow_ms)
        if q.slow_ms >= SLOW_INDEX_MS:  # spelled out: the planner may then use l7_slow
            where.append(f"latency_ms >= {SLOW_INDEX_MS}")
    if q.errors_only:
        where.append("errors > 0" if table == "conns" else "error = 1")
    if q.method is not None:
        where.append("verb = ?")
        params.append(q.method.upper())
    if q.peer is not None:
        sql, p = peer_sql(q.peer)
        where.append(sql)
        params += p
    if q.before is not None:
        where.append("id < ?")
        params.append(q.before)
    sql = (f"SELECT id, lvl, body FROM (SELECT id, body, CASE {' '.join(case)} END AS lvl "
           f"FROM {table} WHERE {' AND '.join(where) or '1'}) WHERE lvl IS NOT NULL "
           f"ORDER BY id DESC LIMIT ?")
    return sql, [*case_params, *params, min(q.limit, MAX_LIMIT) + 1]
