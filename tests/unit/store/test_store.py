"""EventStore: batched multi-row inserts keep every row, its body and its process facts,
retention by id, the row tally, reads on their own connection, and schema migration."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import orjson
import pytest

from collector.proc.facts import ProcFacts
from collector.selectors import ALL, Level, View, Visibility, parse_selector
from collector.store.query import MAX_LIMIT, Query
from collector.store.store import SCHEMA_VERSION, EventStore

NOW = time.time() - 1000


def ev(i: int, **kw: object) -> dict[str, object]:
    e: dict[str, object] = {"ts": round(NOW + i / 1000, 6), "kind": "syscall", "pid": 100 + i % 3,
                            "tid": 1, "target": 1, "syscall": "write", "ret": i}
    e.update(kw)
    return e


EVERYONE = Query(Visibility((View(Level.PAYLOAD, (ALL,)),)), limit=MAX_LIMIT)


@pytest.mark.parametrize("sizes", [[0], [1], [7, 1], [1024], [1500, 3, 1024, 255]])
def test_every_row_stored_in_order_with_its_body(tmp_path: Path, sizes: list[int]) -> None:
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
        st.add_many(batch)
    assert st.count() == len(sent) == st.written
    db = sqlite3.connect(tmp_path / "e.db")
    rows = db.execute("SELECT ts, pid, kind, syscall, comm, unit, exe, has_payload, body "
                      "FROM events ORDER BY id").fetchall()
    assert rows == [(e["ts"], e["pid"], "syscall", "write", None, None, None,
                     int("payload" in e), orjson.dumps(e)) for e in sent]
    got = st.query(EVERYONE)
    assert got == sent
    st.close()


def test_retention_prunes_old_rows_and_keeps_the_tally(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db", retention_s=3600)
    now = time.time()
    st.add_many([ev(i, ts=now - 7200 + i) for i in range(10)])  # older than retention
    st.add_many([ev(i, ts=now - 10 + i) for i in range(5)])
    st._last_prune = 0.0
    st.add_many([ev(99, ts=now)])  # triggers the prune
    assert st.pruned == 10
    assert st.count() == 6
    (n,) = sqlite3.connect(tmp_path / "e.db").execute("SELECT COUNT(*) FROM events").fetchone()
    assert n == 6
    st.close()
    again = EventStore(tmp_path / "e.db")  # the tally starts from what is on disk
    assert again.count() == 6
    again.close()


def test_queries_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db")
    st.add_many([ev(1)])
    got: list[object] = []
    with st._lock:  # the writing connection is busy
        t = threading.Thread(target=lambda: got.extend(st.query(EVERYONE)))
        t.start()
        t.join(5)
    assert len(got) == 1
    st.close()


def test_rows_carry_the_facts_of_their_process_at_capture(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db")
    web = ProcFacts(7, "web", "/usr/bin/web", 0, "root", "/system.slice/web.service",
                    "web.service")
    gone = ProcFacts(8, None, None, None, None, None, None)  # exited before it was read
    st.add_many([ev(0, pid=7, comm="web", unit="web.service"), ev(1, pid=8), ev(2, pid=9)],
                procs=[web, gone, None])
    rows = sqlite3.connect(tmp_path / "e.db").execute(
        "SELECT pid, comm, unit, exe, cgroup FROM events ORDER BY id").fetchall()
    assert rows == [(7, "web", "web.service", "/usr/bin/web", "/system.slice/web.service"),
                    (8, None, None, None, None), (9, None, None, None, None)]
    st.close()


V0_SCHEMA = """
CREATE TABLE events (id INTEGER PRIMARY KEY, ts REAL NOT NULL, pid INTEGER NOT NULL,
    kind TEXT NOT NULL, syscall TEXT, comm TEXT, unit TEXT, exe TEXT,
    has_payload INTEGER NOT NULL, body BLOB NOT NULL);
CREATE INDEX events_pid_id ON events(pid);
"""


def test_an_old_store_is_migrated_on_start_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    old = sqlite3.connect(path)
    old.executescript(V0_SCHEMA)
    before = [ev(i, comm="old", unit="old.service") for i in range(50)]
    old.executemany("INSERT INTO events(ts,pid,kind,syscall,comm,unit,exe,has_payload,body) "
                    "VALUES (?,?,?,?,?,?,?,?,?)",
                    [(e["ts"], e["pid"], "syscall", "write", "old", "old.service", None, 0,
                      orjson.dumps(e)) for e in before])
    old.commit()
    old.close()
    st = EventStore(path)
    assert st.count() == 50
    st.add_many([ev(50)], procs=[ProcFacts(100, "new", "/bin/new", 0, "root", "/x.slice",
                                           None)])
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [r[0] for r in db.execute("SELECT cgroup FROM events ORDER BY id")] == \
        [None] * 50 + ["/x.slice"]
    # old rows are still decided on the facts they have (comm, unit), and returned whole
    unit_only = Query(Visibility((View(Level.PAYLOAD, (parse_selector("unit:old.service"),)),)),
                      limit=1000)
    assert st.query(unit_only) == before
    st.close()
    again = EventStore(path)  # migrating twice is a no-op
    assert again.count() == 51
    again.close()
