"""EventStore: batched multi-row inserts keep every row and its body, retention by id,
the row tally, and reads on their own connection."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import orjson
import pytest

from collector.store.store import EventStore

NOW = time.time() - 1000


def ev(i: int, **kw: object) -> dict[str, object]:
    e: dict[str, object] = {"ts": round(NOW + i / 1000, 6), "kind": "syscall", "pid": 100 + i % 3,
                            "tid": 1, "target": 1, "syscall": "write", "ret": i}
    e.update(kw)
    return e


def everyone(_facts: dict[str, object]) -> str:
    return "payload"


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
    got = list(st.query(everyone, limit=10**6))
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
        t = threading.Thread(target=lambda: got.extend(st.query(everyone)))
        t.start()
        t.join(5)
    assert len(got) == 1
    st.close()
