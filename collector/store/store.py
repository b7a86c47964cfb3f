"""Embedded SQLite (WAL) store of redacted events: schema and its migration, batched
writes, retention by age and size, and reads on their own connection."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from collector.capture.events import Event, narrow
from collector.proc.facts import ProcFacts
from collector.selectors import Level
from collector.store.query import Query, compile_query

log = logging.getLogger("periscope.store")

# user_version 1: the facts the policy matches on are stored with each row (comm, unit,
# exe and cgroup of the process at capture), so a stored row is decided on its own facts.
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    pid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    syscall TEXT,
    comm TEXT,
    unit TEXT,
    exe TEXT,
    has_payload INTEGER NOT NULL,
    body BLOB NOT NULL,
    cgroup TEXT
);
CREATE INDEX IF NOT EXISTS events_pid_id ON events(pid);
DROP INDEX IF EXISTS events_pid;
DROP INDEX IF EXISTS events_ts;
"""
# Indexes cost ingest: (pid) alone is ~free (entries are (pid, rowid), so they append),
# while the former (pid, ts) cost ~6 µs per row and (ts) ~1 µs. Queries read newest-first
# by id (which follows time) and stop at the limit; retention walks ids from the oldest.

COLUMNS = ("INSERT INTO events(ts,pid,kind,syscall,comm,unit,exe,cgroup,has_payload,body) "
           "VALUES ")
NCOLS = 10
ROW = "(" + ",".join("?" * NCOLS) + ")"
CHUNKS = (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)  # rows per INSERT: few distinct statements


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring an events.db of any earlier version to SCHEMA_VERSION, keeping every row.

    Version 0 lacked the cgroup column: ALTER TABLE ADD COLUMN is a schema-only change in
    SQLite (no table rewrite), and the rows it had stay, with no cgroup (NULL matches no
    cgroup selector: an unknown fact grants nothing).
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        log.warning("%s: schema version %d is newer than ours (%d); using it as is",
                    path, version, SCHEMA_VERSION)
        return
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    with db:
        if "cgroup" not in columns:
            db.execute("ALTER TABLE events ADD COLUMN cgroup TEXT")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    if version < SCHEMA_VERSION:
        log.info("%s: schema migrated from version %d to %d", path, version, SCHEMA_VERSION)


class EventStore:
    def __init__(self, path: str | Path, retention_s: int = 86400,
                 max_bytes: int = 256 << 20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # the writing connection
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        migrate(self._db, self.path)
        self.path.chmod(0o600)
        self._last_prune = 0.0
        self._insert: dict[int, str] = {}
        self._base = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        self.written = 0
        self.pruned = 0

    def add_many(self, events: list[Event], bodies: list[bytes] | None = None,
                 procs: list[ProcFacts | None] | None = None) -> None:
        """Store a batch in one transaction (a pipeline Sink).

        `procs[i]` is the process of events[i] as it was at capture: its comm, unit, exe
        and cgroup are stored with the row, for access decisions on stored rows.
        Rows go in as multi-row INSERTs of up to 1024 rows: sqlite3 releases the GIL around
        each sqlite3_step, and executemany() steps (and re-takes the GIL) once per row,
        which with a busy pipeline thread meant waiting up to a switch interval per row.
        """
        if bodies is None:
            bodies = list(map(orjson.dumps, events))
        if procs is None:
            procs = [None] * len(events)
        params: list[Any] = []
        extend = params.extend
        for ev, body, proc in zip(events, bodies, procs, strict=True):
            if proc is not None:
                extend((ev["ts"], ev["pid"], ev["kind"], ev.get("syscall"), proc.comm, proc.unit,
                        proc.exe, proc.cgroup, "payload" in ev, body))
            else:  # no facts were read: what the event says of itself
                extend((ev["ts"], ev["pid"], ev["kind"], ev.get("syscall"), ev.get("comm"),
                        ev.get("unit"), None, None, "payload" in ev, body))
        n = len(events)
        with self._lock:
            at = 0
            for size in CHUNKS:
                sql = self._insert.get(size)
                if sql is None:
                    sql = self._insert[size] = COLUMNS + ",".join([ROW] * size)
                while n - at >= size:
                    self._db.execute(sql, params[at * NCOLS:(at + size) * NCOLS])
                    at += size
            self._db.commit()
            self.written += n
            now = time.monotonic()
            if now - self._last_prune > 10:
                self._last_prune = now
                self._prune()

    def _prune(self) -> None:
        cutoff = time.time() - self.retention_s
        # The first id young enough to keep, found by walking ids from the oldest (no ts
        # index): the scan is as long as what it deletes.
        first = self._db.execute("SELECT id FROM events WHERE ts >= ? ORDER BY id LIMIT 1",
                                 (cutoff,)).fetchone()
        if first is None:
            cur = self._db.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
        else:
            cur = self._db.execute("DELETE FROM events WHERE id < ? AND ts < ?",
                                   (first[0], cutoff))
        self.pruned += cur.rowcount
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        if pages * page_size > self.max_bytes:
            # Over the size cap: drop the oldest quarter (counted in `pruned`).
            n = self.count()
            cur = self._db.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
                (max(1, n // 4),))
            self.pruned += cur.rowcount
            self._db.execute("PRAGMA incremental_vacuum")
        self._db.commit()

    def query(self, q: Query) -> list[Event]:
        """The newest q.limit events the caller may see, oldest first, each narrowed to
        the level it is seen at. Visibility, filters and LIMIT all run in SQL."""
        sql, params = compile_query(q)
        with self._read_lock:  # its own connection: a long query never holds up ingest (WAL)
            if self._reader is None:
                self._reader = sqlite3.connect(str(self.path), check_same_thread=False)
            rows = self._reader.execute(sql, params).fetchall()
        out = []
        for lvl, body in reversed(rows):
            ev = narrow(orjson.loads(body), Level(lvl))
            if ev is not None:  # the SQL already left out what a level sees nothing of
                out.append(ev)
        return out

    def count(self) -> int:
        """Rows in the store, kept as a tally (COUNT(*) scanned the table under the lock)."""
        return self._base + self.written - self.pruned

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            self._db.close()
