"""Connection and L7 tables: one row per connection, filters and the access decision in SQL,
pages that enumerate every row once, retention, and a database shared with the events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.capture.events import Batch
from collector.proc.facts import ProcFacts
from collector.selectors import ALL, Level, View, Visibility, parse_selector
from collector.store.l7query import L7Query, Status, compile_l7
from collector.store.l7store import L7Store, verb
from collector.store.split import SplitSink
from collector.store.store import EventStore

NOW = time.time() - 1000
EVERYONE = Visibility((View(Level.PAYLOAD, (ALL,)),))
META_ONLY = Visibility((View(Level.META, (ALL,)),))
WEB = ProcFacts(101, "web", "/usr/sbin/web", 0, "root", "/system.slice/web.service",
                "web.service")
DB = ProcFacts(102, "db", "/usr/sbin/db", 0, "root", "/system.slice/db.service", "db.service")


def conn(cid: str, proc: ProcFacts, ts: float, state: str, peer: str, **kw: Any) -> dict[str, Any]:
    return {"ts": ts, "kind": "conn", "pid": proc.pid, "target": 1, "conn": cid, "fd": 5,
            "state": state, "role": "client", "peer": peer, "bytes_in": 0, "bytes_out": 0,
            "calls_in": 0, "calls_out": 0, **kw}


def req(proc: ProcFacts, ts: float, proto: str, **kw: Any) -> dict[str, Any]:
    return {"ts": ts, "kind": "l7", "pid": proc.pid, "target": 1, "proto": proto,
            "conn": "c1-ab", "peer": "10.0.0.5:80", "req_bytes": 1, "resp_bytes": 1,
            "partial": False, "error": False, **kw}


def add(s: L7Store, events: list[dict[str, Any]], procs: list[ProcFacts]) -> None:
    s.add_many(events, [orjson.dumps(e) for e in events], list(procs))


@pytest.fixture
def store(tmp_path: Path) -> L7Store:
    return L7Store(tmp_path / "events.db")


def q(s: L7Store, kind: str = "http", vis: Visibility = EVERYONE, **kw: Any) -> list[Any]:
    return s.page(L7Query(vis, kind, **kw)).rows


def test_one_row_per_connection_updated_by_its_records(store: L7Store) -> None:
    add(store, [conn("c1-ab", WEB, NOW, "open", "10.0.0.5:80")], [WEB])
    add(store, [conn("c1-ab", WEB, NOW, "closed", "10.0.0.5:80", end=NOW + 2, proto="http",
                     errors={"reset": 1})], [WEB])
    (row,) = q(store, "conns")
    assert (row["state"], row["proto"], row["errors"]) == ("closed", "http", {"reset": 1})
    assert [r["conn"] for r in q(store, "conns", errors_only=True)] == ["c1-ab"]
    # alive in [since, until]: opened before until, last seen after since
    assert q(store, "conns", since=NOW + 1) and q(store, "conns", until=NOW + 1)
    assert not q(store, "conns", since=NOW + 3) and not q(store, "conns", until=NOW - 1)


def test_levels_meta_sees_connections_without_protocol_and_no_l7(store: L7Store) -> None:
    add(store, [conn("c1-ab", WEB, NOW, "closed", "10.0.0.5:80", proto="http"),
                req(WEB, NOW, "http", method="GET", path="/", status=200)], [WEB, WEB])
    (c,) = q(store, "conns", META_ONLY)
    assert "proto" not in c and c["conn"] == "c1-ab"
    assert q(store, "http", META_ONLY) == []
    assert len(q(store, "http")) == 1
    mixed = Visibility((View(Level.PAYLOAD, (parse_selector("comm:db"),)),
                        View(Level.META, (ALL,))))
    assert q(store, "http", mixed) == []  # web is seen at meta only


def test_filters_status_slow_errors_method_peer(store: L7Store) -> None:
    rows = [req(WEB, NOW + 1, "http", method="GET", path="/a", status=200, latency_ms=5.0),
            req(WEB, NOW + 2, "http", method="POST", path="/b", status=503, latency_ms=350.0,
                error=True, peer="10.0.0.6:8080"),
            req(WEB, NOW + 3, "http", method="GET", path="/c", status=404, latency_ms=250.0,
                error=True, peer="[::1]:8080"),
            req(DB, NOW + 4, "pgsql", query="select ? from t", status="SELECT 1"),
            req(DB, NOW + 5, "mysql", query="SELEC oops", status="1064", error=True),
            req(DB, NOW + 6, "redis", command="get k", status="bulk"),
            req(DB, NOW + 7, "dns", qname="x.test", qtype="AAAA", rcode="NXDOMAIN",
                error=True)]
    add(store, rows, [WEB, WEB, WEB, DB, DB, DB, DB])

    def paths(**kw: Any) -> list[str]:
        return [r["path"] for r in q(store, "http", **kw)]

    assert paths() == ["/a", "/b", "/c"]
    assert paths(status=Status.parse("5xx")) == ["/b"]
    assert paths(status=Status.parse("4xx")) == ["/c"]
    assert paths(status=Status.parse("404")) == ["/c"]
    assert paths(slow_ms=200) == ["/b", "/c"]
    assert paths(errors_only=True, slow_ms=300) == ["/b"]
    assert paths(method="get") == ["/a", "/c"]
    assert paths(peer="10.0.0.6") == ["/b"] and paths(peer="10.0.0.6:8080") == ["/b"]
    assert paths(peer="10.0.0.6:80") == [] and paths(peer=":8080") == ["/b", "/c"]
    assert paths(peer="::1") == ["/c"] and paths(peer="[::1]:8080") == ["/c"]
    assert paths(filters=(parse_selector("unit:db.service"),)) == []
    assert paths(since=NOW + 1.5, until=NOW + 2.5) == ["/b"]
    assert [r["proto"] for r in q(store, "sql")] == ["pgsql", "mysql"]
    assert [r["status"] for r in q(store, "sql", status=Status.parse("1064"))] == ["1064"]
    assert [r["query"] for r in q(store, "sql", method="SELECT")] == ["select ? from t"]
    assert [r["command"] for r in q(store, "redis", method="GET")] == ["get k"]
    assert [r["qname"] for r in q(store, "dns", status=Status.parse("NXDOMAIN"),
                                  method="aaaa")] == ["x.test"]


def test_pages_enumerate_every_row_once_newest_first(store: L7Store) -> None:
    add(store, [req(WEB, NOW + i, "http", path=f"/{i}", status=200) for i in range(25)],
        [WEB] * 25)
    seen: list[str] = []
    before = None
    while True:
        page = store.page(L7Query(EVERYONE, "http", limit=10, before=before))
        seen = [r["path"] for r in page.rows] + seen
        assert len(page.rows) <= 10
        if not page.more:
            break
        before = page.before
    assert seen == [f"/{i}" for i in range(25)]


def test_verb_is_what_was_asked() -> None:
    assert verb({"proto": "http", "method": "PATCH"}) == "PATCH"
    assert verb({"proto": "pgsql", "query": "  (select 1)"}) == "SELECT"
    assert verb({"proto": "redis", "command": "hgetall user:1"}) == "HGETALL"
    assert verb({"proto": "dns", "qtype": "MX"}) == "MX"
    assert verb({"proto": "mysql"}) is None


def test_nothing_visible_is_no_sql(store: L7Store) -> None:
    assert compile_l7(L7Query(Visibility(()), "http"))[0].endswith("WHERE 0")
    assert compile_l7(L7Query(META_ONLY, "http"))[0].endswith("WHERE 0")


def test_retention_drops_old_rows(tmp_path: Path) -> None:
    clock = [NOW]
    s = L7Store(tmp_path / "events.db", retention_s=100, clock=lambda: clock[0])
    add(s, [req(WEB, NOW - 200, "http", path="/old", status=200),
            req(WEB, NOW - 10, "http", path="/new", status=200),
            conn("c9-ab", WEB, NOW - 300, "closed", "1.2.3.4:5", end=NOW - 250)], [WEB] * 3)
    s._prune()
    assert [r["path"] for r in q(s, "http")] == ["/new"] and q(s, "conns") == []
    assert s.pruned == 2


def test_shares_the_database_with_the_events(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    events, l7 = EventStore(path), L7Store(path)
    sink = SplitSink(events, l7)
    batch = [{"ts": NOW, "kind": "syscall", "pid": 101, "tid": 101, "target": 1,
              "syscall": "close", "ret": 0, "fd": 5},
             req(WEB, NOW, "http", path="/x", status=200),
             conn("c2-ab", WEB, NOW, "open", "10.0.0.5:80")]
    sink(Batch(batch, [WEB] * 3))
    events.flush()
    assert events.count() == 1 and len(q(l7, "http")) == 1 and len(q(l7, "conns")) == 1
    events.close()
    l7.close()
    again = L7Store(path)  # opening again migrates nothing and keeps the rows
    assert len(q(again, "http")) == 1


def test_rows_are_written_soon_after_traffic_stops(tmp_path: Path) -> None:
    """Rows wait for a batch of them, but never longer than FLUSH_S when nothing follows."""
    import sqlite3

    from collector.store import l7store

    s = L7Store(tmp_path / "events.db")
    add(s, [req(WEB, NOW, "http", path="/late", status=200)], [WEB])

    def on_disk() -> int:
        with sqlite3.connect(tmp_path / "events.db") as c:
            return int(c.execute("SELECT COUNT(*) FROM l7").fetchone()[0])

    deadline = time.monotonic() + 10 * l7store.FLUSH_S
    while on_disk() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert on_disk() == 1
    s.close()


def test_the_size_cap_is_shared_with_the_event_blocks(tmp_path: Path) -> None:
    """One file, one cap: over it the blocks and the L7 rows each give up their share, so
    heavy L7 traffic does not push every event out (nor the reverse), and the file stays
    under the cap."""
    import random

    r = random.Random(12)
    cap = 3 << 20
    path = tmp_path / "events.db"
    events, l7 = EventStore(path, max_bytes=cap), L7Store(path, max_bytes=None)
    events.tenants.append(l7)
    sink = SplitSink(events, l7)
    for b in range(30):
        batch: list[dict[str, Any]] = [
            {"ts": NOW + b, "kind": "syscall", "pid": 101, "tid": 101, "target": 1,
             "syscall": "write", "ret": 1, "fd": 5, "payload": f"{r.getrandbits(1024):0256x}"}
            for _ in range(300)]
        batch += [req(WEB, NOW + b, "http", method="GET", path=f"/{r.getrandbits(2048):0512x}",
                      status=200) for _ in range(600)]
        sink(Batch(batch, [WEB] * len(batch)))
        events.flush()
        l7.flush()
        events._prune()
        assert events.disk_bytes() <= cap, (b, events.disk_bytes())
    assert events.pruned > 0 and l7.pruned > 0  # both gave up rows ...
    assert events.count() > 0 and len(q(l7, "http", limit=5)) == 5  # ... and both keep some
    newest = q(l7, "http", limit=1)[0]
    assert newest["ts"] == NOW + 29  # the oldest went, not the newest
    events.close()
    l7.close()
