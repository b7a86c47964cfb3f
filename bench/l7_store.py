"""python -m bench.l7_store [--rows N]: stored L7 queries over a store of N (1M) HTTP records.

Fills a fresh events.db through L7Store.add_many (the sink's path: ingest rate printed),
then times each query the handlers run (visibility, filters and LIMIT in SQL, rows parsed
and narrowed), median of 5, with SQLite's plan. 1% of the requests are slow (>= 200 ms),
2% answered 5xx, 0.01% took over 5 s; four units share the traffic. No root needed.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from collector.proc.facts import ProcFacts
from collector.selectors import ALL, Level, View, Visibility, parse_selector
from collector.store.l7query import L7Query, Status, compile_l7
from collector.store.l7store import L7Store

UNITS = ["checkout.service", "search.service", "cart.service", "auth.service"]
PATHS = ["/api/items?page=[REDACTED:num]", "/api/cart", "/login", "/health", "/api/search"]


def _row(i: int, t0: float, rnd: random.Random) -> tuple[dict[str, Any], ProcFacts]:
    unit = UNITS[i % 4]
    pid = 1000 + i % 4
    r = rnd.random()
    latency = 6000.0 if r < 0.0001 else (250.0 + r * 100 if r < 0.01 else 1.0 + r * 20)
    status = 503 if 0.5 < r < 0.52 else 200
    ev = {"ts": t0 + i * 0.001, "proto": "http", "latency_ms": round(latency, 3),
          "req_bytes": 560, "resp_bytes": 1200, "partial": False, "error": status >= 400,
          "method": "GET" if i % 5 else "POST", "path": PATHS[i % 5], "status": status,
          "headers": {"host": "shop", "user-agent": "curl/8.0"}, "kind": "l7", "pid": pid,
          "target": 1, "conn": f"c{i // 50:x}-ab12", "fd": 7, "role": "server",
          "peer": f"10.0.{i % 7}.{i % 200}:{40000 + i % 20000}", "comm": "gunicorn",
          "unit": unit}
    facts = ProcFacts(pid, "gunicorn", "/usr/bin/python3", 0, "root",
                      f"/system.slice/{unit}", unit)
    return ev, facts


def fill(path: Path, n: int) -> float:
    """n records through the store's sink path; seconds taken."""
    store = L7Store(path, retention_s=10 * 365 * 86400, max_bytes=1 << 40)
    rnd = random.Random(7)
    t0 = time.time() - n * 0.001 - 60
    started = time.perf_counter()
    for lo in range(0, n, 4096):
        rows = [_row(i, t0, rnd) for i in range(lo, min(n, lo + 4096))]
        evs = [e for e, _f in rows]
        store.add_many(evs, [orjson.dumps(e) for e in evs], [f for _e, f in rows])
    took = time.perf_counter() - started
    store.close()
    return took


def timed(store: L7Store, q: L7Query, runs: int = 5) -> tuple[float, int]:
    """(median ms, rows returned)."""
    times, got = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        got = len(store.page(q).rows)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), got


def plan(path: Path, q: L7Query) -> str:
    sql, params = compile_l7(q)
    with sqlite3.connect(path) as c:
        rows = c.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return "; ".join(r[-1] for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.l7_store", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="periscope-l7store-") as tmp:
        path = Path(tmp) / "events.db"
        took = fill(path, a.rows)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        print(f"{a.rows:,} HTTP records stored in {took:.1f} s ({a.rows / took:,.0f}/s through "
              f"L7Store.add_many); database {size / 1e6:.0f} MB")
        store = L7Store(path, retention_s=10 * 365 * 86400, max_bytes=1 << 40)
        everyone = Visibility((View(Level.PAYLOAD, (ALL,)),))
        role = Visibility((View(Level.PAYLOAD, (parse_selector("unit:checkout.service"),)),))
        since = time.time() - 15 * 60
        cases = {
            "http --limit 100": L7Query(everyone, "http"),
            "http --slow 200ms": L7Query(everyone, "http", slow_ms=200),
            "http --slow 5s (rare)": L7Query(everyone, "http", slow_ms=5000),
            "http --status 5xx": L7Query(everyone, "http", status=Status.parse("5xx")),
            "http -u search --slow 200ms": L7Query(
                everyone, "http", filters=(parse_selector("unit:search.service"),),
                slow_ms=200),
            "http --since 15m --slow 200ms": L7Query(everyone, "http", since=since,
                                                     slow_ms=200),
            "http --method POST --errors": L7Query(everyone, "http", method="POST",
                                                   errors_only=True),
            "http --peer 10.0.3.1": L7Query(everyone, "http", peer="10.0.3.1"),
            "one unit's role, --slow 200ms": L7Query(role, "http", slow_ms=200),
            "http --limit 10000": L7Query(everyone, "http", limit=10_000),
        }
        print(f"{'query':34} {'ms':>8} {'rows':>6}  plan")
        for name, q in cases.items():
            ms, n = timed(store, q)
            print(f"{name:34} {ms:8.1f} {n:6d}  {plan(path, q)}")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
