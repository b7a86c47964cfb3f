"""Blocks of stored events: a few thousand redacted events as one compressed row, with the
facts of each process in it and the aggregates `top` and `errors` read in SQL.

A block is compressed as its pipeline batches come (each already one JSON array, so the
events are serialized once for the store and the sessions), then written as:
  - `events`: zstd of one JSON array of the events, oldest first (one frame, streamed: the
    batches' JSON is never joined into one buffer);
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
import threading
from array import array
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import orjson
import zstandard

from collector.capture.events import Batch, Event

try:  # the per-event counting in C (collector/store/_tally.c, optional at install)
    import collector.store._tally as _tally
except ImportError:  # no compiler or Python headers where it was installed
    _tally = None  # type: ignore[assignment]

BLOCK_EVENTS = 4096   # events per block: zstd level 1 then costs ~0.2 µs per event
BLOCK_SECONDS = 5.0   # a block older than this is written even if not full
ZSTD_LEVEL = 1
# Event kinds as bits of block_procs.kinds (a query for a kind skips blocks without it).
KIND_BITS = {"syscall": 1, "tls": 2, "exec": 4, "fork": 8, "exit": 16, "data": 32}
OTHER_KIND = 64       # records of the pipeline's observers (conn, l7, ...)
SUB = 4               # latency buckets per octave: a percentile is within 9 % (2^(1/8))
_SUB = float(SUB)

_local = threading.local()  # a decompression context per thread: queries decode in parallel

FactsKey = tuple[int, "str | None", "str | None", "str | None", "str | None"]


def bucket(latency_us: float) -> int:
    """The latency bucket of a duration in µs: floor(SUB * log2(µs)), so bucket b holds
    [lower(b), lower(b + 1)); everything under 1 ns is in the bucket of 1 ns."""
    return math.floor(SUB * math.log2(max(latency_us, 0.001)))


def buckets(latencies: list[float]) -> list[int]:
    """bucket() of each, in C-level passes (map), ~0.1 µs per value; the clamp to 1 ns
    (a pass of its own) only when some value needs it."""
    if latencies and min(latencies) > 0.001:
        return list(map(math.floor, map(_SUB.__mul__, map(math.log2, latencies))))
    return list(map(math.floor, map(_SUB.__mul__, map(math.log2, map(max, latencies,
                                                                      repeat(0.001))))))


def lower(b: int) -> float:
    """The lowest latency (µs) in bucket b."""
    return float(2 ** (b / SUB))


def percentile(hist: list[tuple[int, int]], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram [(bucket, count)] sorted by bucket, as the
    geometric middle of the bucket it falls in (µs, 3 decimals)."""
    total = sum(c for _b, c in hist)
    if not total:
        return None
    want = q * total
    seen = 0
    at = hist[-1][0]
    for b, c in hist:
        seen += c
        if seen >= want:
            at = b
            break
    return round(2 ** ((at + 0.5) / SUB), 3)


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


def compressor() -> zstandard.ZstdCompressor:
    """A block compressor: one per store, its context reused block after block (a context
    is not thread-safe; the store's write lock covers it)."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL)


@dataclass
class BlockBuilder:
    """Accumulates batches until a block is full (or old); not thread-safe (the store's
    write lock covers it). Its events are compressed as they come, into one zstd frame:
    joining a block's batches first cost ~0.15 µs per event here, in copies of megabytes
    into fresh pages."""

    zstd: zstandard.ZstdCompressor = field(default_factory=compressor)
    chunks: list[bytes] = field(default_factory=list)  # the frame so far
    _frame: zstandard.ZstdCompressionObj | None = None
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
        frame = self._open(b",")
        self.chunks.append(frame.compress(memoryview(batch.json())[1:-1]))
        self._account(batch.events, batch.procs)

    def _open(self, sep: bytes) -> zstandard.ZstdCompressionObj:
        """The block's frame: opened with "[" at its first piece, else `sep` written."""
        frame = self._frame
        if frame is None:
            frame = self._frame = self.zstd.compressobj()
            self.chunks.append(frame.compress(b"["))
        elif sep:
            self.chunks.append(frame.compress(sep))
        return frame

    def _account(self, evs: list[Event], procs: list[Any]) -> None:
        """The batch's aggregates: counted in one C pass (_tally.c) where it was built, else
        column by column here (_tally_py). tests/unit/store/test_blocks.py holds both equal
        to a plain per-event loop."""
        idxs = self._idxs(evs, procs)
        self.idx.extend(idxs)
        if _tally is not None:
            got = _tally.tally(evs, idxs, KIND_BITS, OTHER_KIND)
            if got is not None:  # None: a value the C pass does not take (Python does)
                self._merge(evs, idxs, *got)
                return
        self._tally_py(evs, idxs)

    def _idxs(self, evs: list[Event], procs: list[Any]) -> list[int]:
        """Each event's row index (facts rows added as they come)."""
        rows = self.rows
        # The pipeline hands the same facts object for every event of a process in a batch.
        row_of: dict[int, ProcRow] = {}
        ids = list(map(id, procs))
        for proc in dict(zip(ids, procs, strict=True)).values():
            if proc is not None:
                key = (proc.pid, proc.comm, proc.unit, proc.exe, proc.cgroup)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = ProcRow(len(rows), key)
                row_of[id(proc)] = row
        if len(row_of) == len(set(ids)):  # every event has facts: one C-level pass
            idx_of = {i: row.idx for i, row in row_of.items()}
            return list(map(idx_of.__getitem__, ids))
        idxs: list[int] = []
        for ev, proc in zip(evs, procs, strict=True):
            row = row_of.get(id(proc)) if proc is not None else None
            if row is None:  # no facts were read: what the event says of itself
                key = (ev["pid"], ev.get("comm"), ev.get("unit"), None, None)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = ProcRow(len(rows), key)
            idxs.append(row.idx)
        return idxs

    def _merge(self, evs: list[Event], idxs: list[int],
               rows: dict[int, tuple[int, float, float, int, int]],
               keys: dict[tuple[int, str], tuple[int, float, int]],
               lat: dict[tuple[int, str, int], int], errs: list[int]) -> None:
        """Add one batch's tally (from _tally.c) to the block's aggregates."""
        by_idx = {r.idx: r for r in self.rows.values()}
        for i, (n, lo, hi, kinds, payload) in rows.items():
            row = by_idx[i]
            row.n += n
            row.ts_min = min(row.ts_min, lo)
            row.ts_max = max(row.ts_max, hi)
            row.kinds |= kinds
            row.payload += payload
            self.ts_min = min(self.ts_min, lo)
            self.ts_max = max(self.ts_max, hi)
        stats = self.stats
        for k, (count, lat_sum, nbytes) in keys.items():
            st = stats.get(k)
            if st is None:
                st = stats[k] = Stat()
            st.count += count
            st.lat_sum += lat_sum
            st.bytes += nbytes
        mine = self.lat
        for lk, n in lat.items():
            mine[lk] = mine.get(lk, 0) + n
        for j in errs:
            self._error(evs[j], idxs[j])

    def _error(self, ev: Event, i: int) -> None:
        """A failed call: counted per (row, syscall) and per (errno, path or peer)."""
        sc = ev["syscall"]
        self.stats[(i, sc)].errors += 1
        ek = (i, sc, ev["errno"], ev.get("path") or ev.get("peer") or "")
        got = self.errors.get(ek)
        if got is None:
            self.errors[ek] = [1, ev["ts"]]
        else:
            got[0] += 1
            got[1] = max(got[1], ev["ts"])

    def _tally_py(self, evs: list[Event], idxs: list[int]) -> None:
        """The aggregates column by column: list comprehensions and C-level counting
        (Counter over zipped keys) instead of one Python step per field per event."""
        by_idx = {r.idx: r for r in self.rows.values()}
        tss = [ev["ts"] for ev in evs]
        self.ts_min = min(self.ts_min, min(tss))
        self.ts_max = max(self.ts_max, max(tss))
        counts = Counter(idxs)
        if len(counts) == 1:
            (i,) = counts
            spans = {i: (min(tss), max(tss))}
        else:
            spans = {}
            for i, ts in zip(idxs, tss, strict=True):
                lo_hi = spans.get(i)
                spans[i] = (ts, ts) if lo_hi is None else (min(lo_hi[0], ts),
                                                           max(lo_hi[1], ts))
        for (i, kind) in set(zip(idxs, [ev["kind"] for ev in evs], strict=True)):
            by_idx[i].kinds |= KIND_BITS.get(kind, OTHER_KIND)
        for i, n in Counter([i for i, ev in zip(idxs, evs, strict=True)
                             if "payload" in ev]).items():
            by_idx[i].payload += n
        for i, n in counts.items():
            row = by_idx[i]
            row.n += n
            lo, hi = spans[i]
            row.ts_min = min(row.ts_min, lo)
            row.ts_max = max(row.ts_max, hi)
        # Per (process, syscall): only events with a syscall (not exec/fork/exit/data).
        sel = [j for j, ev in enumerate(evs) if "syscall" in ev]
        if not sel:
            return
        if len(sel) != len(evs):
            evs = [evs[j] for j in sel]
            idxs = [idxs[j] for j in sel]
        keys = list(zip(idxs, [ev["syscall"] for ev in evs], strict=True))
        lats = [ev.get("latency_us", 0.0) for ev in evs]
        stats, lat = self.stats, self.lat
        for (i, sc, b), n in Counter(zip(idxs, [k[1] for k in keys], buckets(lats),
                                         strict=True)).items():
            lat[(i, sc, b)] = lat.get((i, sc, b), 0) + n
        for k, n in Counter(keys).items():
            st = stats.get(k)
            if st is None:
                st = stats[k] = Stat()
            st.count += n
        for k, ms in zip(keys, lats, strict=True):
            stats[k].lat_sum += ms
        for j, ev in enumerate(evs):
            if ev.get("errno") is not None:
                self._error(ev, idxs[j])
            elif "direction" in ev:
                ret = ev.get("ret", 0)
                if ret > 0:
                    stats[keys[j]].bytes += ret

    def build(self) -> Block:
        """The block of everything added (call once; then start a new builder)."""
        frame = self._open(b"")
        self.chunks.append(frame.compress(b"]"))
        self.chunks.append(frame.flush())
        self._frame = None
        return Block(self.ts_min, self.ts_max, len(self.idx), b"".join(self.chunks),
                     self.zstd.compress(self.idx.tobytes()), list(self.rows.values()),
                     self.stats, self.lat, self.errors)


def decode(events: bytes, procs: bytes) -> tuple[list[Event], array[int]]:
    """A stored block's events (oldest first) and each one's facts index. The events' frame
    does not say its size (it was streamed; older blocks' frames do): decompressobj reads
    both."""
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    evs = orjson.loads(dctx.decompressobj().decompress(events))
    idx: array[int] = array("H")
    idx.frombytes(dctx.decompress(procs))
    if len(idx) != len(evs):
        raise ValueError(f"block holds {len(evs)} events but {len(idx)} process indexes")
    return evs, idx

