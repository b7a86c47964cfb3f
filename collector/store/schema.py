"""The events.db schema (blocks of events, their processes and aggregates), and the
migration of an events.db of any earlier version to it, keeping every row."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson

from collector.capture.events import Batch
from collector.proc.facts import ProcFacts
from collector.store.blocks import BLOCK_EVENTS, Block, BlockBuilder

log = logging.getLogger("periscope.store")

# user_version 1: one row per event (body JSON), with the facts of its process (comm, unit,
# exe, cgroup). 2: blocks of events (store/blocks.py); the aggregates `top` and `errors` read.
SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY,
    ts_min REAL NOT NULL,
    ts_max REAL NOT NULL,
    n INTEGER NOT NULL,
    events BLOB NOT NULL,
    procs BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS block_procs (
    block INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    comm TEXT,
    unit TEXT,
    exe TEXT,
    cgroup TEXT,
    n INTEGER NOT NULL,
    ts_min REAL NOT NULL,
    ts_max REAL NOT NULL,
    kinds INTEGER NOT NULL,
    payload INTEGER NOT NULL,
    PRIMARY KEY (block, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS block_stats (
    block INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    syscall TEXT NOT NULL,
    count INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    lat_sum REAL NOT NULL,
    PRIMARY KEY (block, idx, syscall)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS block_lat (
    block INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    syscall TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (block, idx, syscall, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS block_errors (
    block INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    syscall TEXT NOT NULL,
    errno TEXT NOT NULL,
    detail TEXT NOT NULL,
    count INTEGER NOT NULL,
    ts_last REAL NOT NULL,
    PRIMARY KEY (block, idx, syscall, errno, detail)
) WITHOUT ROWID;
"""
SIDE_TABLES = ("block_procs", "block_stats", "block_lat", "block_errors")


def insert_block(db: sqlite3.Connection, b: Block) -> int:
    """Write one block and its side rows (inside the caller's transaction); its id."""
    cur = db.execute("INSERT INTO blocks(ts_min, ts_max, n, events, procs) VALUES (?,?,?,?,?)",
                     (b.ts_min, b.ts_max, b.n, b.events, b.procs))
    bid = cur.lastrowid
    assert bid is not None
    db.executemany("INSERT INTO block_procs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                   [(bid, r.idx, *r.facts, r.n, r.ts_min, r.ts_max, r.kinds, r.payload)
                    for r in b.facts])
    db.executemany("INSERT INTO block_stats VALUES (?,?,?,?,?,?,?)",
                   [(bid, i, sc, s.count, s.errors, s.bytes, s.lat_sum)
                    for (i, sc), s in b.stats.items()])
    db.executemany("INSERT INTO block_lat VALUES (?,?,?,?,?)",
                   [(bid, i, sc, bk, c) for (i, sc, bk), c in b.lat.items()])
    db.executemany("INSERT INTO block_errors VALUES (?,?,?,?,?,?,?)",
                   [(bid, i, sc, err, detail, c, last)
                    for (i, sc, err, detail), (c, last) in b.errors.items()])
    return bid


def delete_blocks(db: sqlite3.Connection, where: str, params: tuple[object, ...]) -> int:
    """Delete the blocks matching `where` (on blocks) and their side rows; events dropped."""
    ids = [r[0] for r in db.execute(f"SELECT id FROM blocks WHERE {where}", params)]
    if not ids:
        return 0
    n = 0
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" * len(chunk))
        n += db.execute(f"SELECT COALESCE(SUM(n), 0) FROM blocks WHERE id IN ({marks})",
                        chunk).fetchone()[0]
        for table in SIDE_TABLES:
            db.execute(f"DELETE FROM {table} WHERE block IN ({marks})", chunk)
        db.execute(f"DELETE FROM blocks WHERE id IN ({marks})", chunk)
    return int(n)


def create(db: sqlite3.Connection) -> None:
    """The schema on a connection; a new file gets incremental auto-vacuum (it must be set
    before the first table), so the size cap can give pages back to the filesystem."""
    if not db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.executescript(SCHEMA)


def migrate(db: sqlite3.Connection, path: Path,
            progress: Callable[[int], None] | None = None) -> int:
    """Bring an events.db of any earlier version to SCHEMA_VERSION, keeping every row;
    returns how many rows became blocks.

    Versions 0 and 1 kept one row per event in `events` (0 without the cgroup column).
    Their rows become blocks oldest first, BLOCK_EVENTS at a time, each block written and
    its rows deleted in one transaction, so a crash part way loses and repeats nothing.
    Then the table goes and the file is vacuumed (with incremental auto-vacuum from then on).
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        log.warning("%s: schema version %d is newer than ours (%d); using it as is",
                    path, version, SCHEMA_VERSION)
        return 0
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    moved = 0
    if "events" in tables:
        columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
        cgroup = "cgroup" if "cgroup" in columns else "NULL"
        last = 0
        while True:
            rows = db.execute(f"SELECT id, pid, comm, unit, exe, {cgroup}, body FROM events "
                              f"WHERE id > ? ORDER BY id LIMIT {BLOCK_EVENTS}",
                              (last,)).fetchall()
            if not rows:
                break
            events, procs = [], []
            for _id, pid, comm, unit, exe, cg, body in rows:
                events.append(orjson.loads(body))
                procs.append(ProcFacts(pid, comm, exe, None, None, cg, unit))
            builder = BlockBuilder()
            builder.add(Batch(events, list(procs)))
            with db:
                insert_block(db, builder.build())
                db.execute("DELETE FROM events WHERE id <= ?", (rows[-1][0],))
            last = rows[-1][0]
            moved += len(rows)
            if progress is not None:
                progress(moved)
        with db:
            db.execute("DROP TABLE events")
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")  # the table's pages back to the filesystem, auto-vacuum on
    with db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    if version < SCHEMA_VERSION:
        log.info("%s: schema migrated from version %d to %d (%d rows into blocks)", path,
                 version, SCHEMA_VERSION, moved)
    return moved
