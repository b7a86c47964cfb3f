"""Blocks of stored events: a few thousand redacted events as one compressed row, with the
facts of each process in it and the aggregates `top` and `errors` read in SQL.

A block is built in memory from pipeline batches (each already one JSON array, so the
events are serialized once for the store and the sessions), then written as:
  - `events`: zstd of one JSON array of the events, oldest first;
  - `procs`: zstd of one uint16 per event, the index of its process's facts in the block;
  - one facts row per (block, index): pid, comm, unit, exe, cgroup as read at capture,
    the kinds and payload present (so a query decodes only blocks it can use);
  - per (block, index, syscall): count, errors, bytes moved, latency sum; per latency
    bucket a count (quarter-octave buckets, see bucket()); per (errno, path or peer) of
    failed calls a count and the last time.
Pure: no SQLite here (store.py writes the rows).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard

from collector.capture.events import Batch, Event

BLOCK_EVENTS = 4096   # events per block: zstd level 1 then costs ~0.2 µs per event
BLOCK_SECONDS = 5.0   # a block older than this is written even if not full
ZSTD_LEVEL = 1
# Event kinds as bits of block_procs.kinds (a query for a kind skips blocks without it).
KIND_BITS = {"syscall": 1, "tls": 2, "exec": 4, "fork": 8, "exit": 16, "data": 32}
OTHER_KIND = 64       # records of the pipeline's observers (conn, l7, ...)
SUB = 4               # latency buckets per octave: a percentile is within 19 % (2^(1/4))

_compress = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress
_decompressor = zstandard.ZstdDecompressor()

FactsKey = tuple[int, "str | None", "str | None", "str | None", "str | None"]


def bucket(latency_us: float) -> int:
    """The latency bucket of a duration in µs: SUB buckets per power of two (bucket b
    holds [lower(b), lower(b + 1))); everything under 1 ns is bucket -40."""
    if latency_us < 0.001:
        return -40
    m, e = math.frexp(latency_us)  # latency_us = m * 2**e, 0.5 <= m < 1
    return (e - 1) * SUB + int((m * 2 - 1) * SUB)


def lower(b: int) -> float:
    """The lowest latency (µs) in bucket b."""
    e, sub = divmod(b, SUB)
    return math.ldexp(1 + sub / SUB, e)


def percentile(hist: list[tuple[int, int]], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram [(bucket, count)] sorted by bucket, as the
    geometric middle of the bucket it falls in (µs, 3 decimals)."""
    total = sum(c for _b, c in hist)
    if not total:
        return None
    want = q * total
    seen = 0
    for b, c in hist:
        seen += c
        if seen >= want:
            return round(math.sqrt(lower(b) * lower(b + 1)), 3)
    return round(math.sqrt(lower(hist[-1][0]) * lower(hist[-1][0] + 1)), 3)


@dataclass
class Stat:
    count: int = 0
    errors: int = 0
    bytes: int = 0
    lat_sum: float = 0.0


@dataclass
class ProcRow:
    """The facts of one process as stored with a block, and what the block holds of it."""

    idx: int
    facts: FactsKey
    n: int = 0
    ts_min: float = math.inf
    ts_max: float = -math.inf
    kinds: int = 0
    payload: int = 0


@dataclass
class Block:
    """What store.py writes for one block."""

    ts_min: float
    ts_max: float
    n: int
    events: bytes   # zstd JSON array
    procs: bytes    # zstd uint16 array
    facts: list[ProcRow]
    stats: dict[tuple[int, str], Stat]
    lat: dict[tuple[int, str, int], int]
    errors: dict[tuple[int, str, str, str], list[Any]]  # -> [count, ts_last]


@dataclass
class BlockBuilder:
    """Accumulates batches until a block is full (or old); not thread-safe (the store's
    write lock covers it)."""

    parts: list[bytes] = field(default_factory=list)
    idx: array[int] = field(default_factory=lambda: array("H"))
    rows: dict[FactsKey, ProcRow] = field(default_factory=dict)
    stats: dict[tuple[int, str], Stat] = field(default_factory=dict)
    lat: dict[tuple[int, str, int], int] = field(default_factory=dict)
    errors: dict[tuple[int, str, str, str], list[Any]] = field(default_factory=dict)
    ts_min: float = math.inf
    ts_max: float = -math.inf
    started: float = 0.0  # monotonic time of the first event

    def __len__(self) -> int:
        return len(self.idx)

    def add(self, batch: Batch) -> None:
        """Take a batch: its JSON (serialized once, shared with the sessions) and its
        aggregates, computed here from the events."""
        if not batch.events:
            return
        self.parts.append(batch.json()[1:-1])
        self._account(batch.events, batch.procs)

    def _account(self, evs: list[Event], procs: list[Any]) -> None:
        rows, stats, lat, errs = self.rows, self.stats, self.lat, self.errors
        idx_append = self.idx.append
        by_obj: dict[int, ProcRow] = {}  # id(ProcFacts) -> row, for this batch (objects live)
        tmin, tmax = self.ts_min, self.ts_max
        for ev, proc in zip(evs, procs, strict=True):
            row = by_obj.get(id(proc)) if proc is not None else None
            if row is None:
                if proc is not None:
                    key: FactsKey = (proc.pid, proc.comm, proc.unit, proc.exe, proc.cgroup)
                else:  # no facts were read: what the event says of itself
                    key = (ev["pid"], ev.get("comm"), ev.get("unit"), None, None)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = ProcRow(len(rows), key)
                if proc is not None:
                    by_obj[id(proc)] = row
            i = row.idx
            idx_append(i)
            ts = ev["ts"]
            if ts < tmin:
                tmin = ts
            if ts > tmax:
                tmax = ts
            row.n += 1
            if ts < row.ts_min:
                row.ts_min = ts
            if ts > row.ts_max:
                row.ts_max = ts
            kind = ev["kind"]
            row.kinds |= KIND_BITS.get(kind, OTHER_KIND)
            if "payload" in ev:
                row.payload += 1
            sc = ev.get("syscall")
            if sc is None:
                continue
            st = stats.get((i, sc))
            if st is None:
                st = stats[(i, sc)] = Stat()
            st.count += 1
            lat_us = ev.get("latency_us", 0.0)
            st.lat_sum += lat_us
            b = (i, sc, bucket(lat_us))
            lat[b] = lat.get(b, 0) + 1
            err = ev.get("errno")
            if err is not None:
                st.errors += 1
                detail = ev.get("path") or ev.get("peer") or ""
                ek = (i, sc, err, detail)
                got = errs.get(ek)
                if got is None:
                    errs[ek] = [1, ts]
                else:
                    got[0] += 1
                    got[1] = max(got[1], ts)
            elif "direction" in ev:
                ret = ev.get("ret", 0)
                if ret > 0:
                    st.bytes += ret
        self.ts_min, self.ts_max = tmin, tmax

    def build(self) -> Block:
        """The block of everything added (call once; then start a new builder)."""
        events = _compress(b"[" + b",".join(self.parts) + b"]")
        return Block(self.ts_min, self.ts_max, len(self.idx), events,
                     _compress(self.idx.tobytes()), list(self.rows.values()), self.stats,
                     self.lat, self.errors)


def decode(events: bytes, procs: bytes) -> tuple[list[Event], array[int]]:
    """A stored block's events (oldest first) and each one's facts index."""
    evs = orjson.loads(_decompressor.decompress(events))
    idx: array[int] = array("H")
    idx.frombytes(_decompressor.decompress(procs))
    if len(idx) != len(evs):
        raise ValueError(f"block holds {len(evs)} events but {len(idx)} process indexes")
    return evs, idx

