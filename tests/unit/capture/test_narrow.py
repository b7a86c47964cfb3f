"""narrow(): the one rule of what a capture level may see, as a table and against ground
truth: meta sees exactly what a meta-only capture of the same calls would have produced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collector.capture.events import narrow
from collector.capture.pipeline import Pipeline
from collector.proc.facts import Enricher
from collector.selectors import Level
from probes.layout import F_PAYLOAD, F_TRUNCATED
from tests.unit.pipeline_corpus import IO, FakeRedactor, sys_rec

PROC = Path(__file__).parents[2] / "data" / "proc"
META, PAYLOAD = Level.META, Level.PAYLOAD
IO_EV = {"ts": 1.0, "kind": "syscall", "pid": 7, "tid": 7, "target": 1, "syscall": "write",
         "ret": 5, "latency_us": 1.0, "fd": 3, "size": 5, "direction": "out", "comm": "x"}
OPEN_EV = {"ts": 1.0, "kind": "syscall", "pid": 7, "syscall": "openat", "ret": 4, "dirfd": -100,
           "path": "/a/very/long/pa", "flags": "O_RDONLY", "truncated": True}
L7_HTTP = {"ts": 1.0, "kind": "l7", "pid": 7, "proto": "http", "conn": "c1-7", "method": "GET",
           "path": "/orders?id=[REDACTED:secret]", "status": 200, "latency_ms": 1.5,
           "peer": "10.0.0.5:80"}
CONN = {"ts": 1.0, "kind": "conn", "pid": 7, "conn": "c1-7", "fd": 3, "state": "closed",
        "role": "client", "peer": "10.0.0.5:80", "local": "10.0.0.1:40000", "bytes_in": 9,
        "bytes_out": 5, "calls_in": 1, "calls_out": 1, "errors": {"reset": 1}}


@pytest.mark.parametrize(("ev", "meta"), [
    (IO_EV, IO_EV),                                                       # nothing to hide
    ({**IO_EV, "captured": 5, "payload": "hello"}, IO_EV),
    ({**IO_EV, "captured": 5, "held": True}, IO_EV),                       # bytes held back
    ({**IO_EV, "captured": 3, "truncated": True, "payload": "hel"}, IO_EV),  # payload cut short
    ({**IO_EV, "payload_shed": True}, IO_EV),                              # shed under load
    (OPEN_EV, OPEN_EV),                     # a truncated path is meta: it stays
    ({"kind": "data", "pid": 7, "payload": "tail", "flushed": True, "fd": 3}, None),
    ({"kind": "exec", "pid": 7, "filename": "/bin/x", "argv": "x [REDACTED:password]"},
     {"kind": "exec", "pid": 7, "filename": "/bin/x", "argv": "x [REDACTED:password]"}),
    # L7 records are payload-level whatever they carry: path, SQL text, Redis key, DNS name
    (L7_HTTP, None),
    ({**L7_HTTP, "proto": "postgres", "query": "SELECT * FROM users WHERE id = $1"}, None),
    ({**L7_HTTP, "proto": "redis", "command": "GET session:[REDACTED:secret]"}, None),
    ({**L7_HTTP, "proto": "dns", "qname": "internal.example.com", "qtype": "A"}, None),
    # a connection at meta: its tuple, sizes and errors, never the protocol read from bytes
    ({**CONN, "proto": "http"}, CONN),
    (CONN, CONN),
])
def test_narrow_table(ev: dict[str, Any], meta: dict[str, Any] | None) -> None:
    before = dict(ev)
    assert narrow(ev, PAYLOAD) is ev
    got = narrow(ev, META)
    assert got == meta
    assert ev == before  # never mutates: the same event object goes to every sink
    if meta == ev:
        assert got is ev  # unchanged events are not copied (a session reuses their bytes)
    if got is not None:
        assert list(got) == [k for k in ev if k in got]  # key order kept


def _run(records: list[bytes]) -> list[dict[str, Any]]:
    p = Pipeline(FakeRedactor(), [], Enricher(procfs=PROC))
    p.clock.offset = 1_700_000_000.0
    return p.process(records)


def test_meta_equals_a_meta_only_capture() -> None:
    line = b"GET /x?token=abc HTTP/1.1\r\nAuthorization: Bearer 1234567890\r\n\r\n"
    calls = []  # (nr, fd, ret, captured bytes, flags, arg): released, held, cut short
    for i, nr in enumerate(IO):
        out = 2 if i % 2 else 0
        calls += [(nr, 3 + i, len(line), line, F_PAYLOAD | out, 64),
                  (nr, 3 + i, 5, b"hello", F_PAYLOAD | out, 64),
                  (nr, 3 + i, 500, b"password=h", F_PAYLOAD | F_TRUNCATED | out, 500)]
    with_payload = _run([sys_rec(nr, fd, ret, data, fl, arg=arg)
                         for nr, fd, ret, data, fl, arg in calls])
    # what the kernel writes for a target without payload capture: no bytes, no flags
    meta_only = _run([sys_rec(nr, fd, ret, b"", fl & ~(F_PAYLOAD | F_TRUNCATED), arg=arg)
                      for nr, fd, ret, _data, fl, arg in calls])
    assert any("payload" in e for e in with_payload) and any("held" in e for e in with_payload)
    assert [narrow(e, META) for e in with_payload] == meta_only
