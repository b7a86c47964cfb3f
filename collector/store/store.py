"""Embedded SQLite (WAL) store of redacted events, with retention by age and size."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from collector.capture.events import Event

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
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_pid_id ON events(pid);
DROP INDEX IF EXISTS events_pid;
DROP INDEX IF EXISTS events_ts;
"""
# Indexes cost ingest: (pid) alone is ~free (entries are (pid, rowid), so they append),
# while the former (pid, ts) cost ~6 µs per row and (ts) ~1 µs. Queries read newest-first
# by id (which follows time) and stop at the limit; retention walks ids from the oldest.

COLUMNS = "INSERT INTO events(ts,pid,kind,syscall,comm,unit,exe,has_payload,body) VALUES "
ROW = "(?,?,?,?,?,?,?,?,?)"
CHUNKS = (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)  # rows per INSERT: few distinct statements

# (facts dict) -> "payload" | "meta" | None: what the caller may see of a row.
Visibility = Callable[[dict[str, Any]], str | None]


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
        self.path.chmod(0o600)
        self._last_prune = 0.0
        self._insert: dict[int, str] = {}
        self._base = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        self.written = 0
        self.pruned = 0

    def add_many(self, events: list[Event], bodies: list[bytes] | None = None) -> None:
        """Store a batch in one transaction.

        Rows go in as multi-row INSERTs of up to 1024 rows: sqlite3 releases the GIL around
        each sqlite3_step, and executemany() steps (and re-takes the GIL) once per row,
        which with a busy pipeline thread meant waiting up to a switch interval per row.
        """
        if bodies is None:
            bodies = list(map(orjson.dumps, events))
        params: list[Any] = []
        extend = params.extend
        for ev, body in zip(events, bodies, strict=True):
            get = ev.get
            extend((ev["ts"], ev["pid"], ev["kind"], get("syscall"), get("comm"), get("unit"),
                    get("exe"), "payload" in ev, body))
        n = len(events)
        with self._lock:
            at = 0
            for size in CHUNKS:
                sql = self._insert.get(size)
                if sql is None:
                    sql = self._insert[size] = COLUMNS + ",".join([ROW] * size)
                while n - at >= size:
                    self._db.execute(sql, params[at * 9:(at + size) * 9])
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

    def query(self, visible: Visibility, *, pid: int | None = None, kind: str | None = None,
              since: float | None = None, errors_only: bool = False,
              limit: int = 1000) -> Iterator[Event]:
        """Newest-last events the caller may see; payload stripped where only meta is allowed."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        if pid is not None:
            where.append("pid = ?")
            params.append(pid)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        sql = (f"SELECT comm, unit, exe, pid, body FROM events WHERE {' AND '.join(where)}"
               " ORDER BY id DESC LIMIT ?")
        with self._read_lock:  # its own connection: a long query never holds up ingest (WAL)
            if self._reader is None:
                self._reader = sqlite3.connect(str(self.path), check_same_thread=False)
            rows = self._reader.execute(sql, (*params, limit * 4 if errors_only else limit)
                                        ).fetchall()
        out = []
        for comm, unit, exe, rpid, body in rows:
            level = visible({"pid": rpid, "comm": comm, "unit": unit, "exe": exe})
            if level is None:
                continue
            ev = orjson.loads(body)
            if errors_only and "errno" not in ev:
                continue
            if level != "payload":
                ev.pop("payload", None)
            out.append(ev)
            if len(out) >= limit:
                break
        return reversed(out)

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
