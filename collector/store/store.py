"""Embedded SQLite (WAL) store of redacted events, in blocks: batched writes, retention by
age and size (everything on disk counted, the WAL included), and reads on their own
connection: `events` decodes candidate blocks newest first, `top` and `errors` sum the
blocks' aggregates in SQL."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from array import array
from pathlib import Path
from typing import Any, Protocol

import orjson

from collector.capture.events import Batch, Event, narrow
from collector.proc.facts import ProcFacts
from collector.selectors import Level
from collector.store import query as sql
from collector.store.blocks import (
    BLOCK_EVENTS,
    BLOCK_SECONDS,
    BlockBuilder,
    bucket,
    compressor,
    decode,
    percentile,
)
from collector.store.query import Query
from collector.store.schema import SCHEMA_VERSION, create, delete_blocks, insert_block, migrate

__all__ = ["SCHEMA_VERSION", "EventStore", "Page"]

log = logging.getLogger("periscope.store")

PRUNE_EVERY_S = 10.0
CAP_TARGET = 0.75  # over the cap, the oldest blocks go until this fraction of it is left
WRITE_SLACK = 256 << 10  # pages a block write touches beyond its own bytes (side rows, b-trees)
_DATA = "data"


class Page(list[Event]):
    """Events of a query, oldest first; `more` when older matches may exist, and the
    cursor (block, position) from which to read them."""

    more: bool = False
    cursor: tuple[int, int] | None = None


class Tenant(Protocol):
    """Other tables in the same file (the connection and L7 tables, store/l7store.py): they
    share the size cap, so over it each gives up its share of the excess."""

    def stored_bytes(self) -> int:
        """About how many bytes its rows take."""

    def drop_oldest(self, nbytes: int) -> int:
        """Delete its oldest rows holding about `nbytes`; how many rows went."""


class EventStore:
    def __init__(self, path: str | Path, retention_s: int = 86400,
                 max_bytes: int = 256 << 20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # the writing connection and the pending block
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The WAL is truncated to this after a checkpoint: it counts against max_bytes.
        self._db.execute(f"PRAGMA journal_size_limit = {max(1 << 20, max_bytes // 16)}")
        self._db.execute("PRAGMA wal_autocheckpoint = 256")  # pages (1 MiB)
        create(self._db)
        self.migrated = migrate(self._db, self.path)
        self.path.chmod(0o600)
        self._zstd = compressor()  # one context, reused by each block in turn
        self._pending = BlockBuilder(self._zstd)
        self._last_prune = 0.0
        self._base = int(self._db.execute("SELECT COALESCE(SUM(n), 0) FROM blocks").fetchone()[0])
        self.written = 0
        self.pruned = 0
        self.blocks_written = 0
        self.tenants: list[Tenant] = []  # other tables of this file, under the same cap

    # -- writes ----------------------------------------------------------------------
    def __call__(self, batch: Batch) -> None:
        """A pipeline Sink: the batch joins the pending block, written when full or old."""
        with self._lock:
            pending = self._pending
            if not len(pending):
                pending.started = time.monotonic()
            pending.add(batch)
            self.written += len(batch)
            if len(pending) >= BLOCK_EVENTS or time.monotonic() - pending.started > BLOCK_SECONDS:
                self._flush()

    def add_many(self, events: list[Event], bodies: object = None,
                 procs: list[ProcFacts | None] | None = None) -> None:
        """Store events and write them out now (tests, tools); `bodies` is ignored (the
        batch is serialized once, here). procs[i] is the process of events[i] at capture."""
        self(Batch(events, procs))
        self.flush()

    def flush(self) -> None:
        """Write the pending block now (a query does, so it sees every event stored)."""
        with self._lock:
            self._flush()

    def tick(self) -> None:
        """Periodic (the daemon's keepalive): write a pending block that got old, prune."""
        with self._lock:
            if len(self._pending) and time.monotonic() - self._pending.started > BLOCK_SECONDS:
                self._flush()
            elif time.monotonic() - self._last_prune > PRUNE_EVERY_S:
                self._prune()

    def _flush(self) -> None:
        pending = self._pending
        if not len(pending):
            return
        try:
            block = pending.build()
        finally:  # the next builder uses the compressor only once this one is done
            self._pending = BlockBuilder(self._zstd)
        # Room first: the block's pages land in the WAL, then in the database at the next
        # checkpoint (both copies exist a moment), so what is on disk never passes the cap.
        room = 2 * (len(block.events) + len(block.procs)) + WRITE_SLACK
        if self.disk_bytes() + room > self.max_bytes:
            self._prune(room)
        with self._db:
            insert_block(self._db, block)
        self.blocks_written += 1
        if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
            self._prune(room)

    def disk_bytes(self) -> int:
        """Everything the store has on disk: the database, its WAL and shared memory."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def _prune(self, room: int = WRITE_SLACK) -> None:
        """Retention by age, then by size (leaving `room` for the next write): whole
        blocks, oldest first, counted in pruned."""
        self._last_prune = time.monotonic()
        cutoff = time.time() - self.retention_s
        with self._db:
            self.pruned += delete_blocks(self._db, "ts_max < ?", (cutoff,))
        if self.disk_bytes() + room <= self.max_bytes:
            return
        page = self._db.execute("PRAGMA page_size").fetchone()[0]
        used = (self._db.execute("PRAGMA page_count").fetchone()[0]
                - self._db.execute("PRAGMA freelist_count").fetchone()[0]) * page
        excess = used - int(self.max_bytes * CAP_TARGET) + room
        if excess > 0 and self.tenants:
            excess = self._shed_tenants(excess)
        if excess > 0:
            # The oldest blocks whose stored bytes cover the excess (side rows are small).
            rows = self._db.execute("SELECT id, length(events) + length(procs) FROM blocks "
                                    "ORDER BY id").fetchall()
            freed, last = 0, None
            for bid, size in rows:
                if freed >= excess:
                    break
                freed += size
                last = bid
            if last is not None:
                with self._db:
                    self.pruned += delete_blocks(self._db, "id <= ?", (last,))
        # Free pages back to the filesystem (the pragma frees a page per step: run it out),
        # then the WAL back to nothing.
        self._db.execute("PRAGMA incremental_vacuum").fetchall()
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        log.info("store over %d bytes: oldest blocks dropped; %d bytes on disk now",
                 self.max_bytes, self.disk_bytes())

    def _shed_tenants(self, excess: int) -> int:
        """The other tables give up their share of the excess, in proportion to the bytes
        each holds (so neither side's rows push the other's out); the blocks' share."""
        mine = self._db.execute("SELECT COALESCE(SUM(length(events) + length(procs)), 0) "
                                "FROM blocks").fetchone()[0]
        theirs = [(t, t.stored_bytes()) for t in self.tenants]
        total = mine + sum(n for _t, n in theirs)
        if total <= 0:
            return excess
        for t, n in theirs:
            if n:
                t.drop_oldest(excess * n // total + 1)
        return int(excess * mine // total)

    # -- reads -----------------------------------------------------------------------
    def _read(self, text: str, params: list[Any]) -> list[Any]:
        with self._read_lock:  # its own connection: a long query never holds up ingest (WAL)
            if self._reader is None:
                self._reader = sqlite3.connect(str(self.path), check_same_thread=False)
            return self._reader.execute(text, params).fetchall()

    def _blocks(self, rows: list[Any]) -> list[tuple[int, dict[int, int]]]:
        """Candidate rows (block, idx, lvl) grouped by block, in order: idx -> level."""
        out: list[tuple[int, dict[int, int]]] = []
        for block, idx, lvl in rows:
            if not out or out[-1][0] != block:
                out.append((block, {}))
            out[-1][1][idx] = lvl
        return out

    def _decode(self, block: int) -> tuple[list[Event], array[int]]:
        got = self._read("SELECT events, procs FROM blocks WHERE id = ?", [block])
        if not got:
            return [], array("H")  # pruned meanwhile
        return decode(got[0][0], got[0][1])

    def query(self, q: Query) -> Page:
        """The newest q.limit events the caller may see that match, oldest first, each
        narrowed to the level it is seen at. Which processes' rows are visible, and which
        blocks may hold a match, is decided in SQL; only those blocks are decoded, newest
        first, until the limit."""
        self.flush()
        text, params = sql.candidates(q)
        page = Page()
        limit = min(q.limit, sql.MAX_LIMIT)
        blocks = self._blocks(self._read(text, params))
        for n, (block, levels) in enumerate(blocks):
            evs, idx = self._decode(block)
            start = len(evs)
            if q.before is not None and block == q.before[0]:
                start = min(start, q.before[1])
            for pos in range(start - 1, -1, -1):
                lvl = levels.get(idx[pos])
                if lvl is None:
                    continue
                ev = _match(evs[pos], lvl, q)
                if ev is None:
                    continue
                if len(page) == limit:
                    page.more = True
                    break
                page.append(ev)
                page.cursor = (block, pos)
            if page.more or (len(page) == limit and n + 1 < len(blocks)):
                page.more = True
                break
        page.reverse()
        return page

    def top(self, q: Query) -> list[dict[str, Any]]:
        """Per target (pid, comm, unit) and syscall over the whole range the caller sees:
        count, errors, bytes moved, latency sum and p50/p99, busiest first."""
        self.flush()
        agg: dict[tuple[Any, ...], dict[str, Any]] = {}
        hists: dict[tuple[Any, ...], dict[int, int]] = {}
        stmt = sql.top(q)
        if stmt is None:
            return []
        for pid, comm, unit, sc, n, errs, nbytes, lat_sum, hist in self._read(*stmt):
            key = (pid, comm, unit, sc)
            agg[key] = {"count": n, "errors": errs, "bytes": nbytes, "lat_sum": lat_sum}
            hists[key] = {b: c for b, c in orjson.loads(hist or "[]")}
        for ev, facts in self._straddling(q):  # events at the range's edges, counted one by one
            sc = ev.get("syscall")
            if sc is None or (q.syscalls and sc not in q.syscalls):
                continue
            key = (ev["pid"], facts[1], facts[2], sc)
            row = agg.setdefault(key, {"count": 0, "errors": 0, "bytes": 0, "lat_sum": 0.0})
            row["count"] += 1
            lat = ev.get("latency_us", 0.0)
            row["lat_sum"] += lat
            if "errno" in ev:
                row["errors"] += 1
            elif "direction" in ev and ev.get("ret", 0) > 0:
                row["bytes"] += ev["ret"]
            h = hists.setdefault(key, {})
            b = bucket(lat)
            h[b] = h.get(b, 0) + 1
        out = []
        for key, row in agg.items():
            hist = sorted(hists.get(key, {}).items())
            out.append({"pid": key[0], "comm": key[1] or "?", "unit": key[2],
                        "syscall": key[3], "count": row["count"], "errors": row["errors"],
                        "bytes": row["bytes"], "total_us": round(row["lat_sum"], 3),
                        "p50_us": percentile(hist, 0.5), "p99_us": percentile(hist, 0.99)})
        out.sort(key=lambda r: (-r["count"], r["pid"], r["syscall"]))
        return out[:min(q.limit, sql.MAX_LIMIT)]

    def errors(self, q: Query) -> list[dict[str, Any]]:
        """Failed calls grouped by process, syscall, errno and path or peer, over the whole
        range the caller sees: count and the last time, commonest first."""
        self.flush()
        stmt = sql.errors(q)
        if stmt is None:
            return []
        agg: dict[tuple[Any, ...], list[Any]] = {}
        for pid, comm, unit, sc, err, detail, n, last in self._read(*stmt):
            agg[(pid, comm, unit, sc, err, detail)] = [n, last]
        for ev, facts in self._straddling(q):
            err = ev.get("errno")
            if err is None or (q.errnos and err not in q.errnos):
                continue
            key = (ev["pid"], facts[1], facts[2], ev.get("syscall"), err,
                   ev.get("path") or ev.get("peer") or "")
            got = agg.setdefault(key, [0, ev["ts"]])
            got[0] += 1
            got[1] = max(got[1], ev["ts"])
        out = [{"pid": k[0], "comm": k[1] or "?", "unit": k[2], "syscall": k[3], "errno": k[4],
                **({"detail": k[5]} if k[5] else {}), "count": n, "last": last}
               for k, (n, last) in agg.items()]
        out.sort(key=lambda r: (-r["count"], -r["last"]))
        return out[:min(q.limit, sql.MAX_LIMIT)]

    def _straddling(self, q: Query) -> list[tuple[Event, tuple[Any, ...]]]:
        """Events in the range from process rows that cross its edges (their aggregates
        cannot count whole), with the (pid, comm, unit) of their row, as seen at their level."""
        stmt = sql.straddling(q)
        if stmt is None:
            return []
        out = []
        for block, levels in self._blocks(self._read(*stmt)):
            facts = {idx: (pid, comm, unit) for idx, pid, comm, unit in self._read(
                "SELECT idx, pid, comm, unit FROM block_procs WHERE block = ?", [block])}
            evs, idx = self._decode(block)
            for pos, ev in enumerate(evs):
                lvl = levels.get(idx[pos])
                if lvl is None or not _in_range(ev["ts"], q):
                    continue
                seen = narrow(ev, Level(lvl))
                if seen is not None:
                    out.append((seen, facts[idx[pos]]))
        return out

    def count(self) -> int:
        """Events in the store (written blocks and the pending one), kept as a tally."""
        return self._base + self.written - self.pruned

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            self._flush()
            self._db.close()


def _in_range(ts: float, q: Query) -> bool:
    return (q.since is None or ts >= q.since) and (q.until is None or ts < q.until)


def _match(ev: Event, lvl: int, q: Query) -> Event | None:
    """The event as seen at `lvl` if it passes the query's per-event filters, else None."""
    if not _in_range(ev["ts"], q):
        return None
    if q.pid is not None and ev["pid"] != q.pid:
        return None
    kind = ev["kind"]
    if q.kinds and kind not in q.kinds:
        return None
    if q.syscalls and ev.get("syscall") not in q.syscalls:
        return None
    err = ev.get("errno")
    if (q.errors_only or q.errnos) and err is None:
        return None
    if q.errnos and err not in q.errnos:
        return None
    if q.payload_prefixes:
        text = ev.get("payload")
        if lvl < Level.PAYLOAD or not isinstance(text, str) \
                or not text.startswith(q.payload_prefixes):
            return None
    seen = narrow(ev, Level(lvl))
    return seen if seen is not None and not (kind == _DATA and lvl < Level.PAYLOAD) else None

