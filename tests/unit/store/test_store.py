"""EventStore: blocks keep every event, its body and its process facts; retention and the
size cap by whole blocks (the WAL counted); the tally; reads on their own connection;
paging; top and errors against a reference computed from the events; schema migration."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import orjson
import pytest

from collector.capture.events import Batch
from collector.proc.facts import ProcFacts
from collector.selectors import ALL, Level, View, Visibility, parse_selector
from collector.store import blocks
from collector.store.query import MAX_LIMIT, Query
from collector.store.store import SCHEMA_VERSION, EventStore

NOW = time.time() - 1000


def ev(i: int, **kw: object) -> dict[str, object]:
    e: dict[str, object] = {"ts": round(NOW + i / 1000, 6), "kind": "syscall", "pid": 100 + i % 3,
                            "tid": 1, "target": 1, "syscall": "write", "ret": i}
    e.update(kw)
    return e


EVERYONE = Query(Visibility((View(Level.PAYLOAD, (ALL,)),)), limit=MAX_LIMIT)


@pytest.mark.parametrize("sizes", [[0], [1], [7, 1], [1024], [1500, 3, 1024, 255],
                                   [5000, 4000]])
def test_every_event_stored_in_order_with_its_body(tmp_path: Path, sizes: list[int]) -> None:
    st = EventStore(tmp_path / "e.db")
    sent = []
    i = 0
    for n in sizes:
        batch = [ev(i + j, payload="x" if (i + j) % 2 else None) for j in range(n)]
        for e in batch:
            if e["payload"] is None:
                del e["payload"]
        i += n
        sent += batch
        st(Batch(batch))  # the pipeline's sink call: blocks are written when full
    assert st.count() == len(sent) == st.written
    got = st.query(EVERYONE)
    assert got == sent[-MAX_LIMIT:]
    db = sqlite3.connect(tmp_path / "e.db")
    stored = []
    for events, procs in db.execute("SELECT events, procs FROM blocks ORDER BY id"):
        evs, _idx = blocks.decode(events, procs)
        stored += evs
    assert stored == sent  # byte for byte what the pipeline serialized, in order
    (n,) = db.execute("SELECT COALESCE(SUM(n), 0) FROM blocks").fetchone()
    assert n == len(sent)
    st.close()


def test_retention_prunes_old_blocks_and_keeps_the_tally(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db", retention_s=3600)
    now = time.time()
    st.add_many([ev(i, ts=now - 7200 + i) for i in range(10)])  # older than retention
    st.add_many([ev(i, ts=now - 10 + i) for i in range(5)])
    st._last_prune = 0.0
    st.add_many([ev(99, ts=now)])  # triggers the prune
    assert st.pruned == 10
    assert st.count() == 6
    (n,) = sqlite3.connect(tmp_path / "e.db").execute("SELECT SUM(n) FROM blocks").fetchone()
    assert n == 6
    for table in ("block_procs", "block_stats", "block_lat"):  # side rows go with them
        (left,) = sqlite3.connect(tmp_path / "e.db").execute(
            f"SELECT COUNT(DISTINCT block) FROM {table}").fetchone()
        assert left == 2, table
    st.close()
    again = EventStore(tmp_path / "e.db")  # the tally starts from what is on disk
    assert again.count() == 6
    again.close()


def test_the_size_cap_holds_for_everything_on_disk(tmp_path: Path) -> None:
    """Random payloads (incompressible) far past the cap: the database, its WAL and shared
    memory stay under max_bytes, and what went is counted."""
    import random

    r = random.Random(7)
    cap = 2 << 20
    st = EventStore(tmp_path / "e.db", max_bytes=cap)
    sent = 0
    for b in range(40):
        batch = [ev(b * 1000 + j, payload=f"{r.getrandbits(1024):0256x}")
                 for j in range(1000)]
        st(Batch(batch))
        sent += len(batch)
        assert st.disk_bytes() <= cap, (b, st.disk_bytes())
    st.close()
    assert st.disk_bytes() <= cap
    assert st.pruned > 0 and st.count() == sent - st.pruned
    again = EventStore(tmp_path / "e.db", max_bytes=cap)
    assert again.count() == st.count()
    again.close()


def test_queries_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db")
    st.add_many([ev(1)])
    got: list[object] = []
    with st._lock:  # the writing connection is busy (nothing pending: no flush needed)
        t = threading.Thread(target=lambda: got.extend(st._read("SELECT n FROM blocks", [])))
        t.start()
        t.join(5)
    assert len(got) == 1
    st.close()


def test_events_carry_the_facts_of_their_process_at_capture(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db")
    web = ProcFacts(7, "web", "/usr/bin/web", 0, "root", "/system.slice/web.service",
                    "web.service")
    gone = ProcFacts(8, None, None, None, None, None, None)  # exited before it was read
    st.add_many([ev(0, pid=7, comm="web", unit="web.service"), ev(1, pid=8), ev(2, pid=9),
                 ev(3, pid=7, comm="web", unit="web.service")], procs=[web, gone, None, web])
    db = sqlite3.connect(tmp_path / "e.db")
    rows = db.execute("SELECT pid, comm, unit, exe, cgroup, n FROM block_procs "
                      "ORDER BY idx").fetchall()
    assert rows == [(7, "web", "web.service", "/usr/bin/web", "/system.slice/web.service", 2),
                    (8, None, None, None, None, 1), (9, None, None, None, None, 1)]
    (events, procs), = db.execute("SELECT events, procs FROM blocks")
    assert list(blocks.decode(events, procs)[1]) == [0, 1, 2, 0]
    st.close()


def _many(st: EventStore, n: int) -> list[dict[str, object]]:
    sent = [ev(i, pid=100 + i % 3, **({"errno": "EAGAIN", "ret": -11} if i % 7 == 0 else {}))
            for i in range(n)]
    for i in range(0, n, 1000):
        st(Batch(sent[i:i + 1000]))
    return sent


def test_limit_counts_after_the_filters_and_pages_never_repeat(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db")
    sent = _many(st, 12_000)
    want = [e for e in sent if e["pid"] == 101 and "errno" in e]
    q = Query(EVERYONE.visibility, pid=101, errnos=("EAGAIN",), limit=100)
    got: list[object] = []
    before = None
    pages = 0
    while True:
        page = st.query(Query(q.visibility, pid=101, errnos=("EAGAIN",), limit=100,
                              before=before))
        pages += 1
        got = list(page) + got
        if not page.more:
            break
        assert len(page) == 100 and page.cursor is not None
        before = page.cursor
    assert got == want and pages == -(-len(want) // 100)
    st.close()


def _reference_top(sent: list[dict[str, object]], since: float | None = None,
                   until: float | None = None) -> dict[tuple[object, str], tuple[int, int, int]]:
    out: dict[tuple[object, str], list[int]] = {}
    for e in sent:
        ts = float(e["ts"])  # type: ignore[arg-type]
        if (since is not None and ts < since) or (until is not None and ts >= until):
            continue
        row = out.setdefault((e["pid"], str(e["syscall"])), [0, 0, 0])
        row[0] += 1
        row[1] += "errno" in e
        row[2] += int(e["ret"]) if "direction" in e and int(e["ret"]) > 0 else 0  # type: ignore
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def test_top_sums_the_whole_range_exactly_at_its_edges(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db")
    sent = [ev(i, pid=100 + i % 3, syscall=("read", "write")[i % 2], latency_us=i % 50 + 0.5,
               direction="out", **({"errno": "EIO", "ret": -5} if i % 11 == 0 else {}))
            for i in range(9000)]
    for i in range(0, len(sent), 700):
        st(Batch(sent[i:i + 700]))
    for since, until in ((None, None), (NOW + 1.234567, None), (NOW + 0.5, NOW + 7.77)):
        q = Query(EVERYONE.visibility, since=since, until=until, limit=MAX_LIMIT)
        got = {(r["pid"], r["syscall"]): (r["count"], r["errors"], r["bytes"])
               for r in st.top(q)}
        assert got == _reference_top(sent, since, until), (since, until)
    rows = st.top(EVERYONE)
    for r in rows:  # latencies 0.5 .. 49.5 µs, uniform: p50 near 25, p99 near 49
        assert 20 <= r["p50_us"] <= 31 and 40 <= r["p99_us"] <= 60, r
    st.close()


def test_errors_group_by_errno_and_path_or_peer(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db")
    st.add_many([ev(0, pid=5, syscall="openat", ret=-2, errno="ENOENT", path="/etc/x"),
                 ev(1, pid=5, syscall="openat", ret=-2, errno="ENOENT", path="/etc/x"),
                 ev(2, pid=5, syscall="openat", ret=-13, errno="EACCES", path="/etc/y"),
                 ev(3, pid=5, syscall="connect", ret=-111, errno="ECONNREFUSED",
                    peer="10.0.0.1:5"),
                 ev(4, pid=5, syscall="write", ret=5)])
    got = [(r["syscall"], r["errno"], r.get("detail"), r["count"]) for r in st.errors(EVERYONE)]
    assert got == [("openat", "ENOENT", "/etc/x", 2), ("connect", "ECONNREFUSED",
                                                       "10.0.0.1:5", 1),
                   ("openat", "EACCES", "/etc/y", 1)]
    only = Query(EVERYONE.visibility, errnos=("EACCES",))
    assert [r["detail"] for r in st.errors(only)] == ["/etc/y"]
    st.close()


V0_SCHEMA = """
CREATE TABLE events (id INTEGER PRIMARY KEY, ts REAL NOT NULL, pid INTEGER NOT NULL,
    kind TEXT NOT NULL, syscall TEXT, comm TEXT, unit TEXT, exe TEXT,
    has_payload INTEGER NOT NULL, body BLOB NOT NULL);
CREATE INDEX events_pid_id ON events(pid);
"""


@pytest.mark.parametrize("rows", [50, 10_000])
def test_an_old_store_is_migrated_on_start_and_keeps_every_row(tmp_path: Path,
                                                               rows: int) -> None:
    path = tmp_path / "e.db"
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(V0_SCHEMA)
    before = [ev(i, comm="old", unit="old.service") for i in range(rows)]
    old.executemany("INSERT INTO events(ts,pid,kind,syscall,comm,unit,exe,has_payload,body) "
                    "VALUES (?,?,?,?,?,?,?,?,?)",
                    [(e["ts"], e["pid"], "syscall", "write", "old", "old.service", None, 0,
                      orjson.dumps(e)) for e in before])
    old.commit()
    old.close()
    st = EventStore(path)
    assert st.count() == rows and st.migrated == rows
    st.add_many([ev(rows)], procs=[ProcFacts(100, "new", "/bin/new", 0, "root", "/x.slice",
                                             None)])
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchone() is None
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on
    cgroups = db.execute("SELECT cgroup, SUM(n) FROM block_procs GROUP BY cgroup ORDER BY 2"
                         ).fetchall()
    assert cgroups == [("/x.slice", 1), (None, rows)]
    # old rows are still decided on the facts they have (comm, unit), and returned whole
    unit_only = Query(Visibility((View(Level.PAYLOAD, (parse_selector("unit:old.service"),)),)),
                      limit=MAX_LIMIT)
    assert st.query(unit_only) == before[-MAX_LIMIT:]
    st.close()
    again = EventStore(path)  # migrating twice is a no-op
    assert again.count() == rows + 1 and again.migrated == 0
    again.close()
