"""Per-target RED figures: exact counts, buckets and sums for batches the test built; labels
only from the fixed tables and the capped target table."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.registry import CollectorRegistry

from collector.capture.events import Batch
from collector.export.red import OVERFLOW, UNKNOWN
from collector.serve.red import CLASSES, SYSCALL_BUCKETS, SYSCALL_CLASS, TargetRed


def sc(pid: int, syscall: str, latency_us: float, *, errno: str | None = None,
       unit: str | None = None, comm: str | None = "app", **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"ts": 1.0, "kind": "syscall", "pid": pid, "tid": pid, "target": 1,
                          "syscall": syscall, "ret": -11 if errno else 1,
                          "latency_us": latency_us, **extra}
    if errno:
        ev["errno"] = errno
    if comm:
        ev["comm"] = comm
    if unit:
        ev["unit"] = unit
    return ev


def l7(proto: str, latency_ms: float | None, error: bool = False, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"ts": 1.0, "kind": "l7", "pid": 7, "target": 1, "proto": proto,
                           "error": error, "comm": "api", "unit": "api.service"}
    if latency_ms is not None:
        rec["latency_ms"] = latency_ms
    rec.update(over)
    return rec


def feed(red: TargetRed, events: list[dict[str, Any]]) -> None:
    """One pipeline batch to the sink, as the pipeline hands it over."""
    red(Batch(events))


def reader(red: TargetRed) -> Any:
    reg = CollectorRegistry()
    reg.register(red)
    return reg.get_sample_value


def test_syscalls_counted_exactly_per_target_and_class() -> None:
    red = TargetRed(10)
    value = reader(red)
    # shop.service: 3 reads at 3 µs, 2 writes at 700 µs (one failed), 1 openat at 2 ms
    # a process without a unit, named cron: 4 connects at 0.5 µs; then an exec (no latency)
    batch = ([sc(1, "read", 3.0, unit="shop.service")] * 3
             + [sc(1, "write", 700.0, unit="shop.service"),
                sc(1, "write", 700.0, unit="shop.service", errno="EAGAIN"),
                sc(2, "openat", 2000.0, unit="shop.service", errno="ENOENT")]
             + [sc(3, "connect", 0.5, comm="cron")] * 4
             + [{"ts": 1.0, "kind": "exec", "pid": 3, "target": 1, "argv": "x"}])
    feed(red, batch)
    feed(red, batch[:3])  # a second batch adds up
    io = {"target": "shop.service", "class": "io"}
    assert value("periscope_syscall_duration_seconds_count", io) == 8
    assert value("periscope_syscall_duration_seconds_sum", io) == pytest.approx(
        (6 * 3.0 + 2 * 700.0) / 1e6)
    assert value("periscope_syscall_duration_seconds_bucket", {**io, "le": "1e-06"}) == 0
    assert value("periscope_syscall_duration_seconds_bucket", {**io, "le": "5e-06"}) == 6
    assert value("periscope_syscall_duration_seconds_bucket", {**io, "le": "0.0005"}) == 6
    assert value("periscope_syscall_duration_seconds_bucket", {**io, "le": "0.001"}) == 8
    assert value("periscope_syscall_duration_seconds_bucket", {**io, "le": "+Inf"}) == 8
    assert value("periscope_syscall_errors_total", io) == 1
    f = {"target": "shop.service", "class": "file"}
    assert value("periscope_syscall_duration_seconds_count", f) == 1
    assert value("periscope_syscall_errors_total", f) == 1
    net = {"target": "cron", "class": "net"}
    assert value("periscope_syscall_duration_seconds_bucket", {**net, "le": "1e-06"}) == 4
    assert value("periscope_syscall_errors_total", net) is None
    assert value("periscope_metrics_targets") == 2


def test_a_latency_on_a_bound_is_in_that_bucket() -> None:
    red = TargetRed(10)
    feed(red, [sc(1, "read", 5.0), sc(1, "read", 5.001)])
    value = reader(red)
    labels = {"target": "app", "class": "io"}
    assert value("periscope_syscall_duration_seconds_bucket", {**labels, "le": "5e-06"}) == 1
    assert value("periscope_syscall_duration_seconds_bucket", {**labels, "le": "1e-05"}) == 2


def test_l7_requests_errors_and_latency_per_protocol() -> None:
    red = TargetRed(10)
    feed(red, [l7("http", 12.0), l7("http", 300.0, error=True), l7("http", None, partial=True),
         l7("pgsql", 0.2), l7("gopher", 1.0)])
    value = reader(red)
    http = {"target": "api.service", "protocol": "http"}
    assert value("periscope_l7_requests_total", http) == 3
    assert value("periscope_l7_request_errors_total", http) == 1
    assert value("periscope_l7_request_duration_seconds_count", http) == 2  # one had none
    assert value("periscope_l7_request_duration_seconds_sum", http) == pytest.approx(0.312)
    assert value("periscope_l7_request_duration_seconds_bucket", {**http, "le": "0.025"}) == 1
    assert value("periscope_l7_request_duration_seconds_bucket", {**http, "le": "0.5"}) == 2
    pg = {"target": "api.service", "protocol": "pgsql"}
    assert value("periscope_l7_request_duration_seconds_bucket", {**pg, "le": "0.0005"}) == 1
    # a protocol outside the fixed set is never a label value
    assert value("periscope_l7_requests_total", {"target": "api.service",
                                                 "protocol": UNKNOWN}) == 1


def test_target_labels_are_capped_and_never_pids() -> None:
    red = TargetRed(3)
    feed(red, [sc(pid, "read", 1.0, comm=f"w{pid}") for pid in range(100, 150)]
        + [sc(999, "read", 1.0, comm=None)])
    reg = CollectorRegistry()
    reg.register(red)
    seen = {s.labels["target"] for fam in reg.collect() for s in fam.samples
            if "target" in s.labels}
    assert seen == {"w100", "w101", "w102", OVERFLOW, UNKNOWN}
    value = reg.get_sample_value
    assert value("periscope_syscall_duration_seconds_count",
                 {"target": OVERFLOW, "class": "io"}) == 47
    assert value("periscope_metrics_targets_overflowed_total") == 47
    classes = {s.labels["class"] for fam in reg.collect() for s in fam.samples
               if "class" in s.labels}
    assert classes <= set(CLASSES)


def test_classes_are_a_fixed_table() -> None:
    red = TargetRed(10)
    conn = {"ts": 1.0, "kind": "conn", "pid": 1, "comm": "app", "latency_us": 9.0}
    feed(red, [sc(1, "ssl_write", 2.0), sc(1, "io_uring_enter", 2.0), conn])
    value = reader(red)
    assert value("periscope_syscall_duration_seconds_count", {"target": "app",
                                                              "class": "tls"}) == 1
    assert value("periscope_syscall_duration_seconds_count", {"target": "app",
                                                              "class": "other"}) == 2
    assert set(SYSCALL_CLASS.values()) | {"other"} == set(CLASSES)
    assert list(SYSCALL_BUCKETS) == sorted(SYSCALL_BUCKETS)


def test_store_lag_is_the_age_of_the_batch() -> None:
    red = TargetRed(10)
    feed(red, [{**sc(1, "read", 1.0), "ts": time.time() - 2.0}])
    lag = reader(red)("periscope_store_lag_seconds")
    assert lag is not None and 2.0 <= lag < 60
