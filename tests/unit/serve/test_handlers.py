"""Every unary handler, called the way the server calls it (gate.check, then the handler the
dispatch table names), against a real store, grants, audit log and a tracer on a fake probe."""

from __future__ import annotations

from typing import Any

import pytest

from collector.access.auth import Principal
from collector.errors import BadRequest, Denied, NotFound
from collector.protocol import Op
from collector.serve.dispatch import HANDLERS, Unary
from probes.layout import F_DATA_OUT, F_PAYLOAD, Sc
from tests.unit.pipeline_corpus import _inet, sys_rec
from tests.unit.serve.conftest import NOBODY, ROOT, SAM, VERA, Host, capture, proc_exited, who

SHOP, OTHER = 4242, 5000
GET = b"GET /orders?id=7 HTTP/1.1\n"


def call(h: Host, caller: Principal, op: Op, args: dict[str, Any] | None = None) -> Any:
    scope = h.svc.gate.check(caller, op, args or {})
    route = HANDLERS[op]
    assert isinstance(route, Unary)
    return route.fn(h.svc, caller, scope)


def workload(h: Host) -> None:
    """Each process: an HTTP write (released), an EAGAIN read, a connect, a write whose
    bytes stay held; then the shop process exits."""
    recs = []
    for pid in (SHOP, OTHER):
        recs += [sys_rec(Sc.WRITE, 5, len(GET), GET, F_PAYLOAD | F_DATA_OUT, pid=pid, arg=64),
                 sys_rec(Sc.READ, 5, -11, b"", 0, pid=pid, arg=64),
                 sys_rec(Sc.CONNECT, 6, 0, b"", 0, pid=pid),
                 sys_rec(Sc.WRITE, 7, 4, b"half", F_PAYLOAD | F_DATA_OUT, pid=pid, arg=4)]
    capture(h, recs)
    proc_exited(h, SHOP)  # gone from /proc: its rows are still decided on their stored facts


def test_hello_is_identity_and_is_audited(host: Host) -> None:
    assert call(host, NOBODY, Op.HELLO) == {"uid": 65534, "user": "nobody",
                                            "groups": ["nobody"]}
    rec = call(host, ROOT, Op.AUDIT_SHOW, {"limit": 2})[0]
    assert (rec["op"], rec["user"], rec["decision"], rec["reason"]) == (
        "hello", "nobody", "allow", "identity query")


def test_status_reports_the_parts(host: Host) -> None:
    workload(host)
    st = call(host, ROOT, Op.STATUS)
    assert st["stored_events"] == host.svc.store.count() == 8
    assert st["probes_attached"] is False and st["targets"] == [] and st["sessions"] == []
    assert st["pipeline"]["events"] == 8 and st["pipeline"]["backlog"] == 0
    assert st["audit_head"][0] == 1  # this request, audited before it ran
    assert st["export"] is None  # no exporter enabled
    with pytest.raises(Denied):
        call(host, VERA, Op.STATUS)


def test_events_under_each_callers_decision(host: Host) -> None:
    workload(host)
    everything = call(host, ROOT, Op.EVENTS)
    assert [(e["pid"], e["syscall"]) for e in everything] == [
        (p, s) for p in (SHOP, OTHER) for s in ("write", "read", "connect", "write")]
    assert everything[0]["payload"] == "GET /orders?id=# HTTP/#.#\\n"  # the fake masks digits
    # the viewer: every process, never payload
    meta = call(host, VERA, Op.EVENTS, {"level": "payload"})
    assert [(e["pid"], e["syscall"]) for e in meta] == [
        (e["pid"], e["syscall"]) for e in everything]
    assert not any({"payload", "captured", "held"} & set(e) for e in meta)
    # the shop role: its unit only (the process exited, the stored facts still say so)
    with pytest.raises(Denied, match="reason is required"):
        call(host, SAM, Op.EVENTS)
    shop = call(host, SAM, Op.EVENTS, {"reason": "INC-1"})
    assert {e["pid"] for e in shop} == {SHOP} and "payload" in shop[0]
    # requested targets filter on top and never widen
    assert call(host, SAM, Op.EVENTS, {"reason": "x", "targets": ["comm:other"]}) == []
    assert call(host, ROOT, Op.EVENTS, {"targets": ["comm:other"]}) == everything[4:]
    assert call(host, ROOT, Op.EVENTS, {"pid": OTHER, "limit": 2}) == everything[6:]
    assert call(host, ROOT, Op.EVENTS, {"kind": "exit"}) == []
    with pytest.raises(BadRequest):
        call(host, ROOT, Op.EVENTS, {"kind": "shell"})
    with pytest.raises(BadRequest):
        call(host, ROOT, Op.EVENTS, {"limit": 0})
    with pytest.raises(BadRequest):
        call(host, ROOT, Op.EVENTS, {"targets": ["pod:x"]})


def test_errors_and_top(host: Host) -> None:
    workload(host)
    errors = call(host, ROOT, Op.ERRORS)  # grouped: one row per process, call and errno
    assert sorted((e["pid"], e["syscall"], e["errno"], e["count"]) for e in errors) == [
        (SHOP, "read", "EAGAIN", 1), (OTHER, "read", "EAGAIN", 1)]
    assert call(host, ROOT, Op.ERRORS, {"errno": "ENOENT"}) == []
    top = call(host, ROOT, Op.TOP)
    assert top[0] == {"pid": SHOP, "comm": "fakesrv", "unit": "shop.service",
                      "syscall": "write", "count": 2, "errors": 0, "bytes": len(GET) + 4,
                      "total_us": 3.0, "p50_us": top[0]["p50_us"], "p99_us": top[0]["p99_us"]}
    assert 1.3 < top[0]["p50_us"] < 1.7 and 1.3 < top[0]["p99_us"] < 1.7  # every call 1.5 µs
    assert sum(r["count"] for r in top) == 8 and sum(r["errors"] for r in top) == 2
    assert [r["syscall"] for r in call(host, ROOT, Op.TOP, {"syscall": "read"})] == ["read"] * 2


def http_workload(h: Host) -> None:
    """Each process: a connection to 10.0.0.5:80 carrying one HTTP exchange (the shop's
    answered 500 after 300 ms, the other's 200 at once), then closed."""
    recs = []
    for pid, status, took in ((SHOP, b"500 Internal Server Error", 300), (OTHER, b"200 OK", 1)):
        req = b"GET /orders?id=7&token=s3cr3tt0ken HTTP/1.1\r\nHost: shop\r\n\r\n"
        resp = b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n"
        t0 = 10**9 + pid * 10**6
        recs += [sys_rec(Sc.CONNECT, 6, 0, _inet(80, "10.0.0.5"), 0, pid=pid, aux=1,
                         ktime=t0),
                 sys_rec(Sc.WRITE, 6, len(req), req, F_PAYLOAD | F_DATA_OUT, pid=pid,
                         arg=len(req), ktime=t0 + 1000),
                 sys_rec(Sc.READ, 6, len(resp), resp, F_PAYLOAD, pid=pid, arg=4096,
                         ktime=t0 + 1000 + took * 10**6),
                 sys_rec(Sc.CLOSE, 6, 0, pid=pid, ktime=t0 + 2000 + took * 10**6)]
    capture(h, recs)
    proc_exited(h, SHOP)


def test_conns_and_http_under_each_callers_decision(host: Host) -> None:
    http_workload(host)
    page = call(host, ROOT, Op.CONNS)
    assert page["more"] is False and page["before"] is None
    assert [(c["pid"], c["state"], c["role"], c["peer"], c["proto"], c["calls_out"],
             c["calls_in"]) for c in page["rows"]] == [
        (p, "closed", "client", "10.0.0.5:80", "http", 1, 1) for p in (SHOP, OTHER)]
    one = call(host, ROOT, Op.CONNS, {"limit": 1})  # the newest, and a cursor to the rest
    assert [c["pid"] for c in one["rows"]] == [OTHER] and one["more"] is True
    rest = call(host, ROOT, Op.CONNS, {"limit": 1, "before": one["before"]})
    assert [c["pid"] for c in rest["rows"]] == [SHOP] and rest["more"] is False
    reqs = call(host, ROOT, Op.HTTP)["rows"]
    assert [(r["pid"], r["method"], r["path"], r["status"]) for r in reqs] == [
        (SHOP, "GET", "/orders?id=7&token=[REDACTED:secret]", 500),
        (OTHER, "GET", "/orders?id=7&token=[REDACTED:secret]", 200)]
    assert reqs[0]["latency_ms"] >= 300 > reqs[1]["latency_ms"]
    assert [r["pid"] for r in call(host, ROOT, Op.HTTP, {"status": "5xx"})["rows"]] == [SHOP]
    assert [r["pid"] for r in call(host, ROOT, Op.HTTP, {"slow": 200})["rows"]] == [SHOP]
    assert [r["pid"] for r in call(host, ROOT, Op.HTTP, {"errors": True})["rows"]] == [SHOP]
    assert call(host, ROOT, Op.HTTP, {"method": "POST"})["rows"] == []
    assert len(call(host, ROOT, Op.HTTP, {"peer": "10.0.0.5"})["rows"]) == 2
    assert call(host, ROOT, Op.SQL)["rows"] == []  # HTTP is not SQL
    l7 = call(host, ROOT, Op.STATUS)["l7"]  # the stage's and its store's counters
    assert l7["l7_records"] == 2 and l7["store_written"] >= 4 and l7["store_write_errors"] == 0
    # the viewer (meta): connections without the protocol read from their bytes, no L7
    meta = call(host, VERA, Op.CONNS)["rows"]
    assert len(meta) == 2 and not any("proto" in c for c in meta)
    assert call(host, VERA, Op.HTTP)["rows"] == []
    # the shop role: its unit only, decided on the stored facts (the process is gone)
    assert [r["pid"] for r in call(host, SAM, Op.HTTP, {"reason": "x"})["rows"]] == [SHOP]
    with pytest.raises(BadRequest, match="status"):
        call(host, ROOT, Op.HTTP, {"status": "fine"})
    with pytest.raises(BadRequest, match="takes no"):
        call(host, ROOT, Op.CONNS, {"slow": 5})
    assert "s3cr3tt0ken" not in (host.root / "events.db").read_bytes().decode("latin-1")
    audited = call(host, ROOT, Op.AUDIT_SHOW, {"limit": 100})
    assert {"conns", "http", "sql"} <= {r["op"] for r in audited}  # every query, audited


def test_events_filters_apply_before_the_limit_and_pages_say_so(host: Host) -> None:
    workload(host)
    reads = call(host, ROOT, Op.EVENTS, {"syscall": "read", "limit": 1})
    assert [(e["pid"], e["syscall"]) for e in reads] == [(OTHER, "read")]
    assert [e["pid"] for e in call(host, ROOT, Op.EVENTS, {"errno": ["EAGAIN"]})] == [
        SHOP, OTHER]
    page = call(host, ROOT, Op.EVENTS, {"kind": "syscall", "limit": 3, "page": True})
    assert len(page["events"]) == 3 and page["more"] and page["next"]
    rest = call(host, ROOT, Op.EVENTS, {"kind": "syscall", "limit": 10, "page": True,
                                        "before": page["next"]})
    assert not rest["more"] and rest["next"] is None
    assert rest["events"] + page["events"] == call(host, ROOT, Op.EVENTS)
    ts = call(host, ROOT, Op.EVENTS)[0]["ts"]  # the synthetic records share one time
    assert call(host, ROOT, Op.EVENTS, {"since": ts, "until": ts + 0.001}) == \
        call(host, ROOT, Op.EVENTS)
    assert call(host, ROOT, Op.EVENTS, {"until": ts}) == []
    for bad in ({"until": 1.0, "since": 2.0}, {"before": "x"}, {"errno": "enoent"},
                {"syscall": ["write; drop"]}):
        with pytest.raises(BadRequest):
            call(host, ROOT, Op.EVENTS, bad)


def test_grants_add_list_revoke(host: Host) -> None:
    g = call(host, ROOT, Op.GRANT_ADD, {"principal": "vera", "target": "unit:shop.service",
                                        "level": "payload", "for": "2h", "reason": "INC-2"})
    assert (g["principal"], g["target"], g["level"], g["created_by"]) == (
        "vera", "unit:shop.service", "payload", "root")
    assert g["expires"] - g["created"] == 7200
    assert call(host, ROOT, Op.GRANT_LIST) == [g]
    workload(host)
    # the grant lifts the viewer to payload on the unit it names, and only there
    seen = call(host, VERA, Op.EVENTS)
    assert {e["pid"] for e in seen if "payload" in e} == {SHOP}
    assert {e["pid"] for e in seen} == {SHOP, OTHER}
    for bad, match in (({"target": "pod:x"}, "bad selector"), ({"for": "2 hours"}, "duration"),
                       ({"level": "raw"}, "capture level"), ({"principal": "a b"}, "principal"),
                       ({"reason": 5}, "reason")):
        args = {"principal": "vera", "target": "pid:1", "for": "1h", "reason": "r", **bad}
        with pytest.raises(BadRequest, match=match):
            call(host, ROOT, Op.GRANT_ADD, args)
    assert call(host, ROOT, Op.GRANT_REVOKE, {"id": g["id"]}) == {"revoked": g["id"],
                                                                   "sessions_ended": 0}
    assert call(host, ROOT, Op.GRANT_LIST) == []
    with pytest.raises(NotFound):
        call(host, ROOT, Op.GRANT_REVOKE, {"id": g["id"]})
    with pytest.raises(Denied):
        call(host, who("sam"), Op.GRANT_LIST, {"reason": "x"})


def test_audit_show_and_verify(host: Host) -> None:
    call(host, ROOT, Op.HELLO)
    with pytest.raises(Denied):
        call(host, NOBODY, Op.EVENTS)
    shown = call(host, ROOT, Op.AUDIT_SHOW, {"limit": 10})
    assert [(r["op"], r["user"], r["decision"]) for r in shown] == [
        ("hello", "root", "allow"), ("events", "nobody", "deny"), ("audit.show", "root", "allow")]
    assert [r["seq"] for r in shown] == [1, 2, 3]
    v = call(host, ROOT, Op.AUDIT_VERIFY)
    assert v["ok"] and v["count"] == 4 and v["last_seq"] == 4 and v["anchors"] == 0
