"""Stored queries under a decision: the SQL form of a selector equals Selector.matches, rows
are seen on the facts stored with them, at their level, and LIMIT counts only visible rows."""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from collector.capture.events import narrow
from collector.proc.facts import ProcFacts
from collector.selectors import (
    ALL,
    Level,
    Selector,
    TargetFacts,
    View,
    Visibility,
    parse_selector,
    unit_from_cgroup,
)
from collector.store.query import Query, candidates, selector_sql
from collector.store.store import EventStore

META, PAYLOAD = Level.META, Level.PAYLOAD
NOW = time.time() - 100

# Facts as the store keeps them: unit derived from the cgroup at capture (the enricher's
# rule), or, for rows stored before cgroups were kept, the unit alone.
CGROUPS = [None, "/", "/system.slice", "/system.slice/a.service", "/system.slice/a.service/w",
           "/system.slice/ab.service", "/user.slice/user-1.slice/session-2.scope",
           "/x_y", "/xzy", "/x%y/sub", "/x\\y", "/a.slice/a.service"]
ROWS = [TargetFacts(pid, comm, exe, cg, unit_from_cgroup(cg))
        for pid, (comm, exe, cg) in enumerate(itertools.product(
            [None, "nginx", "ngin_", "a%"], [None, "/usr/bin/x", "/usr/bin/x_"], CGROUPS), 1)]
ROWS.append(TargetFacts(9000, "old", None, None, "a.service"))  # a pre-migration row
SELECTORS = ["*", "pid:3", "pid:9000", "comm:nginx", "comm:ngin_", "comm:a%", "exe:/usr/bin/x",
             "exe:/usr/bin/x_", "unit:a.service", "unit:ab.service", "unit:session-2.scope",
             "cgroup:/", "cgroup:/system.slice", "cgroup:/system.slice/a.service",
             "cgroup:/system", "cgroup:/x_y", "cgroup:/x%y", "cgroup:/x\\y", "cgroup:/a.slice"]


@pytest.mark.parametrize("text", SELECTORS)
def test_selector_sql_equals_selector_matches(text: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE events (pid, comm, exe, cgroup, unit)")
    db.executemany("INSERT INTO events VALUES (?,?,?,?,?)",
                   [(f.pid, f.comm, f.exe, f.cgroup, f.unit) for f in ROWS])
    sel = parse_selector(text)
    sql, params = selector_sql(sel)
    got = {r[0] for r in db.execute(f"SELECT pid FROM events WHERE {sql}", params)}
    want = {f.pid for f in ROWS if sel.matches(f)}
    assert got == want


def test_the_table_exercises_both_outcomes() -> None:
    """The differential above means something only if selectors match some rows, not all
    (cgroup:/system is there to match none: /system.slice is not inside it)."""
    for text in SELECTORS[1:]:
        hits = sum(parse_selector(text).matches(f) for f in ROWS)
        assert (hits == 0) if text == "cgroup:/system" else (0 < hits < len(ROWS)), text


def _facts(pid: int, comm: str, exe: str, cgroup: str) -> ProcFacts:
    return ProcFacts(pid, comm, exe, 0, "root", cgroup, unit_from_cgroup(cgroup))


WEB = _facts(4000001, "web", "/usr/sbin/web", "/system.slice/web.service")  # never a live pid
DB = _facts(4000002, "db", "/usr/sbin/db", "/system.slice/db.service")
SHELL = _facts(4000003, "bash", "/usr/bin/bash", "/user.slice/user-1.slice/session-1.scope")


def _io(p: ProcFacts, i: int, **kw: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"ts": round(NOW + i / 1000, 6), "kind": "syscall", "pid": p.pid,
                          "tid": p.pid, "target": 1, "syscall": "write", "ret": 5,
                          "latency_us": 1.5, "fd": 3, "size": 5, "direction": "out", **kw}
    ev.update({"comm": p.comm, "unit": p.unit} if p.unit else {"comm": p.comm})
    return ev


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    st = EventStore(tmp_path / "events.db")
    evs, procs = [], []
    for i in range(30):
        p = (WEB, DB, SHELL)[i % 3]
        if i % 5 == 0:
            ev = _io(p, i, captured=5, payload=f"GET /{i} HTTP/1.1")
        elif i % 5 == 1:
            ev = _io(p, i, captured=5, held=True, truncated=True)
        elif i % 5 == 2:
            ev = {"ts": round(NOW + i / 1000, 6), "kind": "data", "pid": p.pid, "tid": p.pid,
                  "target": 1, "direction": "in", "payload": "tail", "flushed": True, "fd": 3,
                  "comm": p.comm}
        elif i % 5 == 3:
            ev = _io(p, i, ret=-11, errno="EAGAIN")
        else:
            ev = _io(p, i, payload_shed=True, payload='x"errno":1')
        evs.append(ev)
        procs.append(p)
    st.add_many(evs, procs=list(procs))
    st.stored = evs  # type: ignore[attr-defined]
    return st


def _vis(*views: tuple[Level, tuple[str, ...]]) -> Visibility:
    return Visibility(tuple(View(lv, tuple(parse_selector(s) for s in sels))
                            for lv, sels in views))


def _want(store: EventStore, vis: Visibility, keep: Any = lambda ev: True) -> list[Any]:
    """The reference: every stored event, decided in Python on the facts of its process."""
    by_pid = {p.pid: p for p in (WEB, DB, SHELL)}
    out = []
    for ev in store.stored:  # type: ignore[attr-defined]
        p = by_pid[ev["pid"]]
        level = vis.level_for(TargetFacts(p.pid, p.comm, p.exe, p.cgroup, p.unit))
        seen = None if level is None else narrow(ev, level)
        if seen is not None and keep(seen):
            out.append(seen)
    return out


VISIBILITIES = [
    _vis((PAYLOAD, ("*",))),
    _vis((META, ("*",))),
    _vis((PAYLOAD, ("unit:web.service",)), (META, ("*",))),
    _vis((PAYLOAD, ("exe:/usr/sbin/db",)), (META, ("comm:bash",))),
    _vis((META, ("cgroup:/user.slice",))),
    _vis((PAYLOAD, ("pid:1",))),  # matches nothing stored
]


@pytest.mark.parametrize("vis", VISIBILITIES)
def test_rows_are_seen_on_their_stored_facts_at_their_level(store: EventStore,
                                                            vis: Visibility) -> None:
    # The processes never existed on this host: only the facts stored with the rows count.
    assert store.query(Query(vis, limit=1000)) == _want(store, vis)


def test_a_meta_only_row_never_shows_payload(store: EventStore) -> None:
    meta = _vis((META, ("*",)))
    got = store.query(Query(meta, limit=1000))
    assert got, "there are meta-visible rows"
    for ev in got:
        assert ev["kind"] != "data"
        assert not {"payload", "captured", "held", "payload_shed", "truncated"} & set(ev), ev


def test_filters_narrow_and_never_widen(store: EventStore) -> None:
    vis = _vis((PAYLOAD, ("unit:web.service",)))
    web_only = _want(store, vis)
    both = (parse_selector("comm:web"), parse_selector("comm:db"))
    assert store.query(Query(vis, filters=both, limit=1000)) == web_only  # db stays invisible
    assert store.query(Query(vis, filters=(parse_selector("comm:db"),), limit=1000)) == []
    assert store.query(Query(vis, pid=WEB.pid, limit=1000)) == web_only
    assert store.query(Query(vis, pid=DB.pid, limit=1000)) == []


def test_limit_counts_visible_rows_only(tmp_path: Path) -> None:
    st = EventStore(tmp_path / "e.db")
    st.add_many([_io(WEB, i) for i in range(5)], procs=[WEB] * 5)  # older, visible
    st.add_many([_io(DB, 10 + i) for i in range(2000)], procs=[DB] * 2000)  # newer, hidden
    got = st.query(Query(_vis((META, ("comm:web",))), limit=5))
    assert [e["ts"] for e in got] == [round(NOW + i / 1000, 6) for i in range(5)]
    got = st.query(Query(_vis((META, ("comm:web",))), limit=3))
    assert [e["ts"] for e in got] == [round(NOW + i / 1000, 6) for i in range(2, 5)]  # newest 3
    st.close()


def test_errors_and_payload_prefixes_are_exact(store: EventStore) -> None:
    everyone = _vis((PAYLOAD, ("*",)))
    errors = store.query(Query(everyone, errors_only=True, limit=1000))
    # a payload that contains the text "errno": is not an error
    assert errors == _want(store, everyone, lambda e: "errno" in e) and errors
    gets = store.query(Query(everyone, kinds=("syscall",), payload_prefixes=("GET ",),
                             limit=1000))
    assert gets == _want(store, everyone, lambda e: e["kind"] == "syscall"
                         and str(e.get("payload", "")).startswith("GET ")) and gets
    # at meta nothing has a payload, so nothing starts with anything
    meta = _vis((META, ("*",)))
    assert store.query(Query(meta, payload_prefixes=("GET ",), limit=1000)) == []


def test_kinds_syscalls_and_since(store: EventStore) -> None:
    everyone = _vis((PAYLOAD, ("*",)))
    data = store.query(Query(everyone, kinds=("data",), limit=1000))
    assert data == _want(store, everyone, lambda e: e["kind"] == "data") and data
    assert store.query(Query(everyone, syscalls=("connect",), limit=1000)) == []
    cut = round(NOW + 20 / 1000, 6)
    assert store.query(Query(everyone, since=cut, limit=1000)) == _want(
        store, everyone, lambda e: e["ts"] >= cut)


def test_no_view_sees_nothing(store: EventStore) -> None:
    sql, params = candidates(Query(Visibility(()), limit=5))
    assert sqlite3.connect(store.path).execute(sql, params).fetchall() == []
    assert store.query(Query(Visibility(()), limit=5)) == []
    assert store.top(Query(Visibility(()))) == store.errors(Query(Visibility(()))) == []


def test_sql_reads_newest_first_without_sorting(store: EventStore) -> None:
    """The plan walks the process rows by block backwards: no temp b-tree for ORDER BY."""
    sql, params = candidates(Query(_vis((PAYLOAD, ("unit:web.service",)), (META, ("*",))),
                                   filters=(parse_selector("comm:web"),), limit=10))
    db = sqlite3.connect(store.path)
    plan = " ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert "TEMP B-TREE" not in plan, plan


def test_selector_kinds_are_all_covered() -> None:
    from collector.selectors import SELECTOR_KINDS

    for kind in (*SELECTOR_KINDS, "*"):
        sel = ALL if kind == "*" else Selector(kind, "/x" if kind in ("cgroup", "exe") else "1")
        sql, _params = selector_sql(sel)
        assert sql
