"""Connection and L7 records in the events database: their tables, batched writes (one row
per connection, updated as its records arrive), retention, and paged queries.

Same file as the events (events.db, WAL), own tables and connection; the tables carry
the facts of their process at capture (comm, unit, exe, cgroup) like event rows, so the
access decision applies to them in SQL (l7query.py). A "conn" record is a row in
`conns`, keyed by its id (open, active and closed records of one connection are one
row); an "l7" record is a row in `l7` with the columns its filters need.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from collector.capture.events import Event, narrow
from collector.proc.facts import ProcFacts
from collector.selectors import Level
from collector.store.l7query import SLOW_INDEX_MS, L7Query, compile_l7

log = logging.getLogger("periscope.store.l7")

KINDS = frozenset(("conn", "l7"))
FLUSH_ROWS, FLUSH_S = 512, 0.5
ROW_BYTES = 64  # a row's bytes beyond its body (its columns, the index entries): an estimate
SCHEMA_NAME, SCHEMA_VERSION = "l7", 1
# Registered in the same database as the events; versioned in its own row of
# periscope_schema (the events table keeps PRAGMA user_version to itself).
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS periscope_schema (name TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS conns (
    id INTEGER PRIMARY KEY,
    conn TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    updated REAL NOT NULL,
    pid INTEGER NOT NULL,
    comm TEXT, unit TEXT, exe TEXT, cgroup TEXT,
    state TEXT NOT NULL,
    peer TEXT,
    proto TEXT,
    errors INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS l7 (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    pid INTEGER NOT NULL,
    comm TEXT, unit TEXT, exe TEXT, cgroup TEXT,
    proto TEXT NOT NULL,
    conn TEXT,
    peer TEXT,
    verb TEXT,
    status TEXT,
    code INTEGER,
    latency_ms REAL,
    error INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS l7_proto_id ON l7(proto, id);
CREATE INDEX IF NOT EXISTS l7_slow ON l7(proto, latency_ms) WHERE latency_ms >= {SLOW_INDEX_MS};
"""
# l7_proto_id serves the newest-first scan of one protocol, which every query is; the
# filters run on the rows it walks until LIMIT is met. l7_slow holds only slow requests:
# `--slow 5s` finds the rare ones without walking every row, and the usual request does
# not pay the ~15 µs a full index on latency cost per stored row (bench/l7_store.py).

_CONN_SQL = ("INSERT INTO conns(conn,ts,updated,pid,comm,unit,exe,cgroup,state,peer,proto,"
             "errors,body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(conn) DO UPDATE SET "
             "updated=excluded.updated, state=excluded.state, peer=excluded.peer, "
             "proto=excluded.proto, errors=excluded.errors, body=excluded.body")
_L7_SQL = ("INSERT INTO l7(ts,pid,comm,unit,exe,cgroup,proto,conn,peer,verb,status,code,"
           "latency_ms,error,body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


class Page(NamedTuple):
    """One page of a query: rows oldest first, whether older rows match too, and the
    cursor that asks for them (`before`)."""

    rows: list[Event]
    more: bool
    before: int | None


def verb(ev: Event) -> str | None:
    """What was asked, for --method: the HTTP method, the SQL statement's first keyword,
    the Redis command, the DNS query type."""
    proto = ev.get("proto")
    if proto == "http":
        return ev.get("method")
    if proto == "dns":
        return ev.get("qtype")
    text = ev.get("command" if proto == "redis" else "query")
    if not isinstance(text, str):
        return None
    word = text.lstrip(" \t\r\n(").split(None, 1)
    return word[0].upper()[:32] if word else None


def _facts(ev: Event, proc: ProcFacts | None) -> tuple[Any, ...]:
    """comm, unit, exe, cgroup of the record's process. A record made after its process
    exited (at close, at exit) has no facts from /proc, only the comm and unit its events
    carried (the L7 stage keeps them): those are stored, and no exe or cgroup."""
    if proc is not None and proc.comm is not None:
        return proc.comm, proc.unit, proc.exe, proc.cgroup
    return ev.get("comm"), ev.get("unit"), None, None


def migrate(db: sqlite3.Connection) -> None:
    """Create or upgrade our tables (version 1 is the first: nothing to upgrade yet)."""
    db.executescript(SCHEMA)
    row = db.execute("SELECT version FROM periscope_schema WHERE name = ?",
                     (SCHEMA_NAME,)).fetchone()
    if row is not None and row[0] > SCHEMA_VERSION:
        log.warning("l7 tables are at version %d, newer than ours (%d); using them as is",
                    row[0], SCHEMA_VERSION)
        return
    with db:
        db.execute("INSERT OR REPLACE INTO periscope_schema VALUES (?, ?)",
                   (SCHEMA_NAME, SCHEMA_VERSION))


class L7Store:
    """The conns and l7 tables: add_many() on the sink thread, page() from handlers."""

    def __init__(self, path: str | Path, retention_s: int = 86400,
                 max_bytes: int | None = 256 << 20,
                 clock: Callable[[], float] = time.time) -> None:
        """max_bytes None: the file's size cap is the event store's, which asks us for our
        share (EventStore.tenants, stored_bytes/drop_oldest)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        migrate(self._db)
        self.path.chmod(0o600)
        self._last_prune = 0.0
        self.written = 0
        self.pruned = 0
        self.write_errors = 0  # flushes that failed off the sink's path (their rows lost)
        # Rows wait here and go in one transaction per FLUSH_ROWS, or FLUSH_S, or before a
        # query reads (so a query sees every record handed to us): a commit per pipeline
        # batch cost more than the rows at a few requests per batch.
        self._conns: list[tuple[Any, ...]] = []
        self._reqs: list[tuple[Any, ...]] = []
        self._oldest = 0.0
        # ... and when traffic stops, this thread writes what waited (within FLUSH_S)
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_idle, name="l7store-flush",
                                         daemon=True)
        self._flusher.start()

    def add_many(self, events: list[Event], bodies: list[bytes],
                 procs: list[ProcFacts | None]) -> None:
        """Store the conn and l7 records of a batch (other kinds are not ours)."""
        conns: list[tuple[Any, ...]] = []
        reqs: list[tuple[Any, ...]] = []
        for ev, body, proc in zip(events, bodies, procs, strict=True):
            kind = ev["kind"]
            if kind == "l7":
                status = ev.get("status", ev.get("rcode"))  # DNS: its rcode
                reqs.append((ev["ts"], ev["pid"], *_facts(ev, proc), ev["proto"],
                             ev.get("conn"), ev.get("peer"), verb(ev),
                             None if status is None else str(status),
                             status if isinstance(status, int) else None,
                             ev.get("latency_ms"), bool(ev.get("error")), body))
            elif kind == "conn":
                conns.append((ev["conn"], ev["ts"], ev.get("end", ev["ts"]), ev["pid"],
                              *_facts(ev, proc), ev["state"], ev.get("peer"),
                              ev.get("proto"), sum(ev.get("errors", {}).values()), body))
        if not conns and not reqs:
            return
        now = time.monotonic()
        with self._lock:
            if not self._conns and not self._reqs:
                self._oldest = now
            self._conns += conns
            self._reqs += reqs
            if len(self._conns) + len(self._reqs) >= FLUSH_ROWS or now - self._oldest >= FLUSH_S:
                self._flush()
            if now - self._last_prune > 10:
                self._last_prune = now
                self._prune()

    def flush(self) -> None:
        """Write what waits (a query calls this first)."""
        with self._lock:
            self._flush()

    def _flush_idle(self) -> None:
        while not self._stop.wait(FLUSH_S):
            with self._lock:
                if (self._conns or self._reqs) and not self._stop.is_set() \
                        and time.monotonic() - self._oldest >= FLUSH_S:
                    try:
                        self._flush()
                    except sqlite3.Error:  # those rows are lost: logged and counted
                        self.write_errors += 1
                        log.exception("writing connection and L7 records failed")

    def _flush(self) -> None:
        if not self._conns and not self._reqs:
            return
        conns, self._conns = self._conns, []
        reqs, self._reqs = self._reqs, []
        with self._db:
            if conns:
                self._db.executemany(_CONN_SQL, conns)
            if reqs:
                self._db.executemany(_L7_SQL, reqs)
        self.written += len(conns) + len(reqs)

    def _prune(self) -> None:
        self._flush()
        cutoff = self._clock() - self.retention_s
        with self._db:
            first = self._db.execute("SELECT id FROM l7 WHERE ts >= ? ORDER BY id LIMIT 1",
                                     (cutoff,)).fetchone()
            cur = self._db.execute("DELETE FROM l7 WHERE id < ? AND ts < ?",
                                   (first[0] if first else 1 << 62, cutoff))
            self.pruned += cur.rowcount
            cur = self._db.execute("DELETE FROM conns WHERE updated < ?", (cutoff,))
            self.pruned += cur.rowcount
            if self.max_bytes is None:
                return
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            size = pages * self._db.execute("PRAGMA page_size").fetchone()[0]
            if size > self.max_bytes:  # over the size cap: our oldest quarter goes too
                for table in ("l7", "conns"):
                    n = self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    cur = self._db.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM "
                                           f"{table} ORDER BY id LIMIT ?)", (max(1, n // 4),))
                    self.pruned += cur.rowcount

    def stored_bytes(self) -> int:
        """About how many bytes our rows take (bodies and an estimate per row)."""
        with self._lock:
            self._flush()
            return sum(self._db.execute(
                f"SELECT COALESCE(SUM(length(body)), 0) + {ROW_BYTES} * COUNT(*) FROM {table}"
            ).fetchone()[0] for table in ("l7", "conns"))

    def drop_oldest(self, nbytes: int) -> int:
        """Delete the oldest rows holding about `nbytes`, from each table in proportion to
        its bytes (requests by id, connections by their last update); counted in pruned."""
        with self._lock:
            self._flush()
            sizes = {table: self._db.execute(
                f"SELECT COALESCE(SUM(length(body)), 0) + {ROW_BYTES} * COUNT(*) FROM {table}"
            ).fetchone()[0] for table in ("l7", "conns")}
            total = sum(sizes.values())
            gone = 0
            with self._db:
                for table, order in (("l7", "id"), ("conns", "updated, id")):
                    want = nbytes * sizes[table] // total if total else 0
                    if want > 0:
                        gone += self._drop(table, order, want)
            self.pruned += gone
            return gone

    def _drop(self, table: str, order: str, nbytes: int) -> int:
        ids: list[int] = []
        freed = 0
        cur = self._db.execute(f"SELECT id, length(body) + {ROW_BYTES} FROM {table} "
                               f"ORDER BY {order}")
        while freed < nbytes and (rows := cur.fetchmany(1024)):
            for rid, size in rows:
                if freed >= nbytes:
                    break
                freed += size
                ids.append(rid)
        cur.close()  # done reading before the deletes
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            self._db.execute(f"DELETE FROM {table} WHERE id IN ({','.join('?' * len(chunk))})",
                             chunk)
        return len(ids)

    def stats(self) -> dict[str, int]:
        """Counters for status and metrics: rows written, pruned, and rows lost to a failed
        write."""
        return {"store_written": self.written, "store_pruned": self.pruned,
                "store_write_errors": self.write_errors}

    def page(self, q: L7Query) -> Page:
        """The newest q.limit rows the caller may see (oldest first), each narrowed to the
        level it is seen at; `more` if older ones match too."""
        sql, params = compile_l7(q)
        self.flush()
        with self._read_lock:  # its own connection: a long query never holds up ingest (WAL)
            if self._reader is None:
                self._reader = sqlite3.connect(str(self.path), check_same_thread=False)
            rows = self._reader.execute(sql, params).fetchall()
        more = len(rows) > q.limit
        rows = rows[:q.limit]
        out = []
        for _id, lvl, body in reversed(rows):
            ev = narrow(orjson.loads(body), Level(lvl))
            if ev is not None:
                out.append(ev)
        return Page(out, more, rows[-1][0] if more else None)

    def close(self) -> None:
        self._stop.set()
        self._flusher.join(timeout=5)
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            self._flush()
            self._db.close()
