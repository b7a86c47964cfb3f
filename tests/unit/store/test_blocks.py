"""BlockBuilder's aggregates (the C tally, and the Python column passes) equal a plain
per-event loop over the same batches, and its block decodes to the events added."""

from __future__ import annotations

import math
import threading
from array import array
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.capture.events import Batch
from collector.proc.facts import ProcFacts
from collector.store import blocks
from collector.store.blocks import KIND_BITS, OTHER_KIND, BlockBuilder, Stat, bucket, buckets

C_TALLY = blocks._tally
PROCS = [ProcFacts(10, "web", "/usr/bin/web", 0, "root", "/a", "web.service"),
         ProcFacts(11, "db", "/usr/bin/db", 0, "root", "/b", None),
         ProcFacts(12, "job", None, None, None, None, None), None]
SYSCALLS = ["read", "write", "openat", "connect", "sendto", "recvfrom", "close"]


@st.composite
def events(draw: Any) -> tuple[dict[str, Any], ProcFacts | None]:
    proc = draw(st.sampled_from(PROCS))
    pid = proc.pid if proc is not None else draw(st.sampled_from([20, 21]))
    kind = draw(st.sampled_from(["syscall", "syscall", "syscall", "tls", "exec", "exit",
                                 "conn"]))
    ev: dict[str, Any] = {"ts": draw(st.floats(1e9, 1e9 + 100)), "kind": kind, "pid": pid}
    if proc is None and draw(st.booleans()):
        ev["comm"] = "x"
    if kind in ("syscall", "tls"):
        ev["syscall"] = draw(st.sampled_from(SYSCALLS))
        ret = draw(st.integers(-4095, 4096))
        ev["ret"] = ret
        if draw(st.booleans()):
            ev["latency_us"] = draw(st.floats(0, 1e6))
        if ret < 0 and draw(st.booleans()):
            ev["errno"] = draw(st.sampled_from(["ENOENT", "EAGAIN"]))
            if draw(st.booleans()):
                ev["path"] = draw(st.sampled_from(["/etc/x", "/tmp/y"]))
        if draw(st.booleans()):
            ev["direction"] = draw(st.sampled_from(["in", "out"]))
        if draw(st.booleans()):
            ev["payload"] = "abc"
    return ev, proc


def reference(batches: list[list[tuple[dict[str, Any], ProcFacts | None]]]) -> dict[str, Any]:
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    stats: dict[tuple[int, str], Stat] = {}
    lat: dict[tuple[int, str, int], int] = {}
    errors: dict[tuple[int, str, str, str], list[Any]] = {}
    idx: list[int] = []
    def row_of(key: tuple[Any, ...]) -> dict[str, Any]:
        return rows.setdefault(key, {"idx": len(rows), "n": 0, "lo": math.inf,
                                     "hi": -math.inf, "kinds": 0, "payload": 0})

    for batch in batches:
        for _ev, p in batch:  # a batch's processes with facts first (their rows' order)
            if p is not None:
                row_of((p.pid, p.comm, p.unit, p.exe, p.cgroup))
        for ev, p in batch:
            key = ((p.pid, p.comm, p.unit, p.exe, p.cgroup) if p is not None
                   else (ev["pid"], ev.get("comm"), ev.get("unit"), None, None))
            row = row_of(key)
            i = row["idx"]
            idx.append(i)
            row["n"] += 1
            row["lo"], row["hi"] = min(row["lo"], ev["ts"]), max(row["hi"], ev["ts"])
            row["kinds"] |= KIND_BITS.get(ev["kind"], OTHER_KIND)
            row["payload"] += "payload" in ev
            if "syscall" not in ev:
                continue
            k = (i, ev["syscall"])
            s = stats.setdefault(k, Stat())
            s.count += 1
            ms = ev.get("latency_us", 0.0)
            s.lat_sum += ms
            b = (i, ev["syscall"], bucket(ms))
            lat[b] = lat.get(b, 0) + 1
            if ev.get("errno") is not None:
                s.errors += 1
                ek = (i, ev["syscall"], ev["errno"], ev.get("path") or ev.get("peer") or "")
                got = errors.setdefault(ek, [0, ev["ts"]])
                got[0] += 1
                got[1] = max(got[1], ev["ts"])
            elif "direction" in ev and ev.get("ret", 0) > 0:
                s.bytes += ev["ret"]
    return {"rows": {k: (r["idx"], r["n"], r["lo"], r["hi"], r["kinds"], r["payload"])
                     for k, r in rows.items()},
            "stats": stats, "lat": lat, "errors": errors, "idx": idx}


# BlockBuilder's two ways to count a batch: the C pass where it was built, and Python's.
PATHS = [pytest.param(None, id="python"),
         pytest.param(blocks._tally, id="c", marks=pytest.mark.skipif(
             blocks._tally is None, reason="C tally not built (no compiler)"))]


@pytest.mark.parametrize("tally", PATHS)
@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(events(), min_size=1, max_size=40), min_size=1, max_size=4))
def test_aggregates_equal_a_per_event_loop(tally: Any, batches: list[list[Any]]) -> None:
    blocks._tally = tally
    try:
        check_against_reference(batches)
    finally:
        blocks._tally = C_TALLY


def test_the_c_tally_gives_way_on_values_it_does_not_take() -> None:
    """An int timestamp or latency, a ret past 64 bits: None, and the Python path counts."""
    if C_TALLY is None:
        pytest.skip("C tally not built")
    ok = {"ts": 1.0, "kind": "syscall", "pid": 1, "syscall": "read", "ret": 3,
          "latency_us": 2.0, "direction": "in"}
    assert C_TALLY.tally([ok], [0], KIND_BITS, OTHER_KIND) is not None
    for bad in ({"ts": 1}, {"latency_us": 2}, {"ret": 2**70}, {"latency_us": math.nan}):
        assert C_TALLY.tally([ok | bad], [0], KIND_BITS, OTHER_KIND) is None, bad
    assert C_TALLY.tally([{"kind": "exit"}], [0], KIND_BITS, OTHER_KIND) is None  # no ts
    for bad_batch in ([ok | {"ts": 1}], [ok | {"latency_us": 2}]):
        check_against_reference([[(ev, None) for ev in bad_batch]])


def check_against_reference(batches: list[list[Any]]) -> None:
    b = BlockBuilder()
    for batch in batches:
        b.add(Batch([ev for ev, _p in batch], [p for _ev, p in batch]))
    want = reference(batches)
    assert list(b.idx) == want["idx"]
    assert {k: (r.idx, r.n, r.ts_min, r.ts_max, r.kinds, r.payload)
            for k, r in b.rows.items()} == want["rows"]
    assert b.lat == want["lat"]
    assert b.errors == want["errors"]
    assert b.stats.keys() == want["stats"].keys()
    for k, s in b.stats.items():
        w = want["stats"][k]
        assert (s.count, s.errors, s.bytes) == (w.count, w.errors, w.bytes), k
        assert math.isclose(s.lat_sum, w.lat_sum, rel_tol=1e-9, abs_tol=1e-6), k
    block = b.build()
    evs, idx = blocks.decode(block.events, block.procs)
    assert evs == [ev for batch in batches for ev, _p in batch]
    assert list(idx) == want["idx"]


def test_blocks_in_turn_share_one_compressor_and_older_frames_still_decode() -> None:
    """A store's builders use its compressor one after the other; a block written before
    the frames were streamed (one-shot, its size in the frame header) still decodes."""
    z = blocks.compressor()
    got = []
    for n in (3, 0, 2):
        b = BlockBuilder(z)
        for i in range(n):
            b.add(Batch([{"ts": 1.0 + i, "kind": "exit", "pid": n}], [None]))
        block = b.build()
        got.append(blocks.decode(block.events, block.procs))
    assert [[ev["pid"] for ev in evs] for evs, _idx in got[::2]] == [[3] * 3, [2] * 2]
    assert got[1][0] == []
    events = [{"ts": 1.0, "kind": "exit", "pid": 7}]
    old = zstandard.ZstdCompressor(level=1)
    evs, idx = blocks.decode(old.compress(orjson.dumps(events)),
                             old.compress(array("H", [0]).tobytes()))
    assert evs == events and list(idx) == [0]


@given(st.lists(st.one_of(st.floats(0, 1e9), st.sampled_from([0.0, 0.001, 0.0005, 1.0]))))
def test_buckets_equal_bucket_of_each(lats: list[float]) -> None:
    assert buckets(lats) == [bucket(x) for x in lats]


def test_queries_decode_blocks_on_several_threads_at_once() -> None:
    """A zstd context is not thread-safe, and queries decode on the executor's threads."""
    built = []
    for t in range(4):
        b = BlockBuilder()
        b.add(Batch([{"ts": float(i), "kind": "exit", "pid": t, "x": "ab" * (i % 50 + t)}
                     for i in range(3000)]))
        block = b.build()
        built.append((block.events, block.procs, t))
    wrong: list[int] = []

    def decode_often(events: bytes, procs: bytes, t: int) -> None:
        for _ in range(40):
            try:
                evs, _idx = blocks.decode(events, procs)
            except Exception:  # a context shared between threads fails here, or decodes wrong
                wrong.append(t)
                continue
            if len(evs) != 3000 or {ev["pid"] for ev in evs} != {t}:
                wrong.append(t)

    threads = [threading.Thread(target=decode_often, args=args) for args in built]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []
