"""OTLP export against a real OTLP/HTTP receiver in the test: what arrives, and what a dead
endpoint costs (counters, never time or memory)."""

from __future__ import annotations

import dataclasses
import gc
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from collector import config
from collector.config import OtlpExport
from collector.export.otlp import OtlpExporter
from tests.unit.export import samples
from tests.unit.export.receiver import BlackHole, Receiver, any_value, attrs


def body_of(lr: Any) -> Any:
    """A log's body: the event's JSON, as the pipeline serialized it."""
    return orjson.loads(any_value(lr.body))


def otlp_cfg(endpoint: str, **over: Any) -> OtlpExport:
    base = config.load(text="").export.otlp
    settings: dict[str, Any] = {"enabled": True, "endpoint": endpoint, "flush_interval_s": 0.05,
                                "timeout_s": 2.0, "metrics": False}
    settings.update(over)
    return dataclasses.replace(base, **settings)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def started(cfg: OtlpExport, **kw: Any) -> OtlpExporter:
    ex = OtlpExporter(cfg, host="testhost", **kw)
    ex.start()
    return ex


def settled(ex: OtlpExporter, offered: int) -> bool:
    c = ex.counters
    return c["export_sent"] + c["export_dropped"] + c["export_rejected"] == offered


def test_events_arrive_as_logs_with_their_own_process_resource(rx: Receiver) -> None:
    sessions = {1: "s1-aaaaaa", 2: "s2-bbbbbb"}
    ex = started(otlp_cfg(rx.endpoint), session_of=sessions.get)
    events = [samples.event(i) for i in range(5)] + [samples.failed_open()]
    ex(events)
    ex.close(10)
    got = rx.logs()
    assert len(got) == 6
    by_ts = {lr.time_unix_nano: (res, lr) for res, lr in got}
    for ev in events:
        res, lr = by_ts[round(ev["ts"] * 1e6) * 1000]
        assert body_of(lr) == ev  # the redacted event, exactly
        a = attrs(lr.attributes)
        assert a["periscope.kind"] == "syscall" and a["periscope.syscall"] == ev["syscall"]
        assert a["thread.id"] == ev["tid"]
        assert lr.event_name == "periscope.syscall"
        assert res["process.pid"] == ev["pid"]
        assert res["host.name"] == "testhost"
        assert res["periscope.session"] == sessions[ev["target"]]
    res, lr = by_ts[round(samples.failed_open()["ts"] * 1e6) * 1000]
    assert (lr.severity_text, lr.severity_number) == ("WARN", 13)  # errno -> WARN
    assert attrs(lr.attributes)["periscope.errno"] == "ENOENT"
    assert res["service.name"] == "curl"  # no unit: comm
    res, lr = by_ts[round(events[0]["ts"] * 1e6) * 1000]
    assert (lr.severity_text, lr.severity_number) == ("INFO", 9)
    assert res["service.name"] == "checkout.service"
    assert res["process.executable.name"] == "python3"
    # Two processes -> two resources in the request (the exporter groups by resource).
    req = rx.requests["/v1/logs"]
    assert sum(len(r.resource_logs) for r in req) == 2 * len(req)
    assert ex.counters["export_sent"] == ex.counters["export_sent_logs"] == 6
    assert ex.counters["export_failed"] == ex.counters["export_dropped"] == 0


def test_l7_records_arrive_as_spans_following_semconv(rx: Receiver) -> None:
    recs = [
        samples.http(0),
        samples.http(1, status=503, error=True, latency_ms=250.0),
        samples.http(2, role="client", method="PURGE", peer="[2001:db8::1]:8443", status=404,
                     error=True),
        samples.pgsql(ts=samples.T0 + 11),
        samples.pgsql(ts=samples.T0 + 12, error=True, status="23505",
                      query="INSERT INTO users (id) VALUES ($1)"),
        samples.pgsql(ts=samples.T0 + 13, proto="mysql", peer="127.0.0.1:3306",
                      query="UPDATE t SET a = ?", status="OK"),
        samples.pgsql(ts=samples.T0 + 14, proto="redis", peer="127.0.0.1:6379", query=None,
                      command="AUTH [REDACTED]", status="ERR", error=True),
        samples.pgsql(ts=samples.T0 + 15, proto="dns", peer="127.0.0.53:53", query=None,
                      status=None, qname="db.internal.example", qtype="A", rcode="NXDOMAIN",
                      answers=[], error=True),
    ]
    recs = [{k: v for k, v in r.items() if v is not None} for r in recs]
    ex = started(otlp_cfg(rx.endpoint))
    ex.requests(recs)
    ex.close(10)
    spans = {sp.start_time_unix_nano: (res, sp) for res, sp in rx.spans()}
    assert len(spans) == len(recs)

    def span(rec: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        res, sp = spans[round(rec["ts"] * 1e6) * 1000]
        assert sp.end_time_unix_nano - sp.start_time_unix_nano == round(rec["latency_ms"] * 1e6)
        assert (sp.status.code == 2) == rec["error"]  # STATUS_CODE_ERROR
        return res, sp, attrs(sp.attributes)

    res, sp, a = span(recs[0])
    assert sp.name == "GET" and sp.kind == 2  # SPAN_KIND_SERVER
    assert a["http.request.method"] == "GET" and a["url.path"] == "/item/0"
    assert a["url.query"] == "token=[REDACTED]" and a["http.response.status_code"] == 200
    assert (a["client.address"], a["client.port"]) == ("10.1.2.3", 51000)
    assert "error.type" not in a
    assert res["service.name"] == "checkout.service" and res["process.pid"] == 100
    _, sp, a = span(recs[1])
    assert a["http.response.status_code"] == 503 and a["error.type"] == "503"
    assert sp.end_time_unix_nano - sp.start_time_unix_nano == 250_000_000
    _, sp, a = span(recs[2])
    assert sp.kind == 3 and sp.name == "HTTP"  # SPAN_KIND_CLIENT; unknown method
    assert a["http.request.method"] == "_OTHER" and a["http.request.method_original"] == "PURGE"
    assert (a["server.address"], a["server.port"]) == ("2001:db8::1", 8443)
    _, sp, a = span(recs[3])
    assert sp.name == "SELECT" and sp.kind == 3
    assert a["db.system.name"] == "postgresql" and a["db.operation.name"] == "SELECT"
    assert a["db.query.text"] == recs[3]["query"] and "db.response.status_code" not in a
    _, sp, a = span(recs[4])
    assert a["db.response.status_code"] == "23505" and a["error.type"] == "23505"
    assert sp.status.message == "23505"
    _, sp, a = span(recs[5])
    assert a["db.system.name"] == "mysql" and sp.name == "UPDATE"
    _, sp, a = span(recs[6])
    assert a["db.system.name"] == "redis" and a["db.operation.name"] == "AUTH"
    assert a["db.query.text"] == "AUTH [REDACTED]" and a["db.response.status_code"] == "ERR"
    _, sp, a = span(recs[7])
    assert sp.name == "DNS A" and a["dns.question.name"] == "db.internal.example"
    assert a["periscope.dns.rcode"] == "NXDOMAIN" and a["error.type"] == "NXDOMAIN"
    assert ex.counters["export_sent_spans"] == len(recs)


def test_exports_exactly_what_it_was_given_and_nothing_else(rx: Receiver) -> None:
    """Redaction is upstream: a secret-looking value is sent as given, and no byte that was
    not in the input (or the fixed vocabulary of keys and resource facts) goes out."""
    secret = "AKIAIOSFODNN7EXAMPLE"
    ev = samples.event(0, payload=f"Authorization: {secret}\\r\\n")
    rec = samples.http(0, path=f"/login?key={secret}")
    ex = started(otlp_cfg(rx.endpoint), session_of={1: "s1-x"}.get)
    ex([ev])
    ex.requests([rec])
    ex.close(10)
    [(res, lr)] = rx.logs()
    assert body_of(lr) == ev
    given = set(ev.values()) | set(rec.values()) | {"/login", f"key={secret}"}
    fixed = {"testhost", "s1-x", "syscall", "periscope.syscall", "INFO", "GET", "http"}
    for value in attrs(lr.attributes).values():
        assert value in given
    [(sres, sp)] = rx.spans()
    for value in attrs(sp.attributes).values():
        assert value in given | fixed or value == "10.1.2.3" or value == 51000
    for value in (*res.values(), *sres.values()):
        assert value in given | fixed
    # The secret travels once in each, as given, and nowhere else.
    assert sum(body.count(secret.encode()) for body in rx.bodies) == 2


def test_raw_data_is_refused_and_counted(rx: Receiver) -> None:
    ex = started(otlp_cfg(rx.endpoint))
    ex([samples.event(0, payload=b"raw bytes"), samples.event(1)])
    ex.requests([("not", "a", "record"), samples.http(0)])  # type: ignore[list-item]
    ex.close(10)
    assert ex.counters["export_rejected"] == 2
    assert len(rx.logs()) == 1 and len(rx.spans()) == 1
    assert b"raw bytes" not in b"".join(rx.bodies)


def test_close_flushes_what_is_queued(rx: Receiver) -> None:
    ex = started(otlp_cfg(rx.endpoint, flush_interval_s=30.0, batch_size=1000))
    events = [samples.event(i) for i in range(250)]
    ex(events)
    ex.close(10)  # well before the 30 s linger
    assert len(rx.logs()) == 250
    assert ex.counters["export_sent"] == 250 and settled(ex, 250)


def test_switches_select_signals(rx: Receiver) -> None:
    ex = started(otlp_cfg(rx.endpoint, logs=False))
    ex([samples.event(0)])
    ex.requests([samples.http(0)])
    ex.close(10)
    assert rx.logs() == [] and len(rx.spans()) == 1
    assert rx.requests["/v1/logs"] == []


def test_black_hole_endpoint_costs_the_caller_nothing_and_memory_stays_bounded() -> None:
    """An endpoint that accepts and never answers holds the sender in its first request
    (timeout 60 s) for the whole test: every sink call still returns, new items are dropped
    and counted, and what the exporter holds never exceeds its queue bounds."""
    with BlackHole() as hole:
        cfg = otlp_cfg(hole.endpoint, queue_size=1000, batch_size=100, timeout_s=60.0)
        ex = started(cfg)
        # Held at most: the inbox (queue_size), built batches (queue_size // batch_size of
        # them), the batch being built and the one in flight.
        bound = cfg.queue_size + (cfg.queue_size // cfg.batch_size) * cfg.batch_size \
            + 2 * cfg.batch_size
        offered = 0
        for b in range(300):  # 30k events
            ex([samples.event(b * 100 + i) for i in range(100)])
            offered += 100
            assert ex.backlog() <= bound
        # Not one request has finished: the sink calls never waited for the sender.
        assert ex.counters["export_sent"] == 0 and ex.counters["export_failed"] == 0
        assert ex.counters["export_dropped_queue_full"] >= offered - bound

        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(600):  # 60k more, all of them dropped
            ex([samples.event(i) for i in range(100)])
            offered += 100
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        # Keeping even 5% of what was offered would be > 2 MB (~650 B per event); the
        # bounded queues move by at most ~1 MB here (test events queued or released).
        assert grown < 2 << 20, f"memory grew by {grown} bytes while the endpoint was dead"
        assert ex.backlog() <= bound

        ex.close(0.5)  # bounded even though the request in flight never ends
        ex._threads[0].join(10)  # the converter ends once its inbox is closed and empty
        assert ex.counters["export_dropped_shutdown"] > 0
        # Everything is accounted for: only the batch in flight is still unsettled.
        assert 0 < ex.backlog() <= cfg.batch_size
        assert ex.counters["export_dropped"] + ex.backlog() == offered


def test_refused_endpoint_counts_failures_and_a_restarted_receiver_gets_new_data() -> None:
    with Receiver() as probe:
        port, endpoint = probe.port, probe.endpoint
    # Nothing listens on `port` now: connection refused.
    ex = started(otlp_cfg(endpoint, timeout_s=0.3), retries=1, backoff_s=(0.05, 0.05))
    ex([samples.event(i) for i in range(10)])
    deadline = time.monotonic() + 20
    while ex.counters["export_dropped_retries"] < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ex.counters["export_failed"] >= 2  # the try and its retry
    assert ex.counters["export_dropped_retries"] == 10 and ex.counters["export_sent"] == 0
    with Receiver(port=port) as rx:
        ex([samples.event(100 + i) for i in range(10)])
        assert rx.wait_for(lambda: len(rx.logs()) == 10)
        ex.close(10)
        assert {body_of(lr)["ts"] for _, lr in rx.logs()} == {
            samples.event(100 + i)["ts"] for i in range(10)}
    assert ex.counters["export_sent"] == 10 and settled(ex, 20)


@pytest.mark.parametrize("status", [400, 503])
def test_refusing_endpoint_counts_failures(status: int) -> None:
    with Receiver(status=status) as rx:
        ex = started(otlp_cfg(rx.endpoint, timeout_s=0.3), retries=1, backoff_s=(0.05, 0.05))
        ex([samples.event(i) for i in range(5)])
        assert rx.wait_for(lambda: ex.counters["export_dropped_retries"] == 5)
        ex.close(5)
    assert ex.counters["export_failed"] == 2 and ex.counters["export_sent"] == 0
    assert settled(ex, 5)


def test_red_metrics_per_target_with_a_label_cap(rx: Receiver) -> None:
    ex = started(otlp_cfg(rx.endpoint, metrics=True, spans=False, max_targets=2,
                          metrics_interval_s=3600))
    recs = [samples.http(i, latency_ms=10.0 * (i + 1), error=i % 4 == 0) for i in range(8)]
    recs += [samples.pgsql(ts=samples.T0 + i, latency_ms=2.0) for i in range(3)]
    recs += [samples.pgsql(comm=f"worker{i}", pid=400 + i) for i in range(3)]  # over the cap
    ex.requests(recs)
    ex.close(10)  # the final collection is exported at shutdown
    assert rx.spans() == []  # spans off; metrics still count every record
    metrics = {m["name"]: m for m in rx.metrics()}

    def points(name: str) -> dict[tuple[str, str], dict[str, Any]]:
        m = metrics[name]
        data = m.get("sum") or m["histogram"]
        return {(attrs_of(p)["periscope.target"], attrs_of(p)["periscope.proto"]): p
                for p in data["dataPoints"]}

    requests = points("periscope.l7.requests")
    assert {k: int(p["asInt"]) for k, p in requests.items()} == {
        ("checkout.service", "http"): 8, ("app", "pgsql"): 3, ("_overflow", "pgsql"): 3}
    errors = points("periscope.l7.errors")
    assert {k: int(p["asInt"]) for k, p in errors.items()} == {("checkout.service", "http"): 2}
    hist = points("periscope.l7.duration")[("checkout.service", "http")]
    assert int(hist["count"]) == 8
    assert hist["sum"] == pytest.approx(sum(10.0 * (i + 1) for i in range(8)) / 1000)
    assert metrics["periscope.l7.duration"]["unit"] == "s"
    assert ex.counters["export_sent_metrics"] >= 1


def test_red_metrics_count_every_record_while_the_span_endpoint_is_dead(rx: Receiver) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from collector.export.otlp import SPANS
    with BlackHole() as hole:
        cfg = otlp_cfg(hole.endpoint, metrics=True, logs=False, queue_size=500, batch_size=50,
                       metrics_interval_s=3600)
        ex = started(cfg, exporters={SPANS: OTLPSpanExporter(endpoint=f"{hole.endpoint}/v1/traces",
                                                            timeout=60)},
                     metric_exporter=OTLPMetricExporter(endpoint=f"{rx.endpoint}/v1/metrics"))
        for b in range(100):
            ex.requests([samples.http(b * 50 + i, error=i == 0) for i in range(50)])
            # Let the converter take them (not a timing assertion): records refused at a
            # full inbox never reach RED, and this test is about the sender being stuck.
            deadline = time.monotonic() + 10
            while len(ex._inbox) and time.monotonic() < deadline:
                time.sleep(0.001)
        ex.close(1.0)
    assert ex.counters["export_sent"] == 0 and ex.counters["export_dropped"] > 4000
    requests = {attrs_of(p)["periscope.proto"]: int(p["asInt"]) for m in rx.metrics()
                if m["name"] == "periscope.l7.requests" for p in m["sum"]["dataPoints"]}
    errors = [int(p["asInt"]) for m in rx.metrics() if m["name"] == "periscope.l7.errors"
              for p in m["sum"]["dataPoints"]]
    assert requests == {"http": 5000} and errors == [100]


def attrs_of(point: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"]["stringValue"] for a in point["attributes"]}


def test_export_package_does_not_load_the_sdk_unless_otlp_is_used() -> None:
    code = ("import sys, collector.config, collector.export, collector.export.jsonlog; "
            "sys.exit(any(m.startswith('opentelemetry') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
