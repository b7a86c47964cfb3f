"""Per-target RED figures for /metrics: syscalls and L7 requests, aggregated per batch.

A pipeline sink, after the store and the sessions (on the pipeline's sink thread). Per
event it does one dict update, keyed by (pid, syscall, latency bucket, failed); the label
values are resolved once per key and batch, and the shared totals are updated under one
lock per batch. The scrape reads a copy. Label values come only from fixed
tables (syscall class, protocol) and the bounded target table (a process's systemd unit,
else its comm, never a pid: `collector.export.red.TargetLabels`), so the series count
is bounded by (max_targets + 2) x classes, whatever the traced processes do.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from collector.capture.events import Batch, Event
from collector.export.red import DURATION_BUCKETS, PROTOCOLS, UNKNOWN, TargetLabels

# Syscall classes: what a dashboard groups by. A name not listed is "other".
SYSCALL_CLASS: dict[str, str] = {
    **dict.fromkeys(("read", "write", "readv", "writev", "pread64", "pwrite64"), "io"),
    **dict.fromkeys(("sendto", "recvfrom", "sendmsg", "recvmsg", "connect", "accept",
                     "accept4"), "net"),
    **dict.fromkeys(("openat", "openat2", "close"), "file"),
    **dict.fromkeys(("clone", "clone3", "fork", "vfork", "execve", "execveat"), "process"),
    **dict.fromkeys(("ssl_read", "ssl_write"), "tls"),
}
CLASSES = (*sorted(set(SYSCALL_CLASS.values())), "other")
# Syscall latency buckets (seconds): 1-5-10 steps from 1 µs to 5 s; events carry
# latency_us, so the bounds are compared in µs.
SYSCALL_BUCKETS = (1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
                   1.0, 5.0)
SYSCALL_BOUNDS_US = tuple(round(b * 1e6) for b in SYSCALL_BUCKETS)
# L7 latency buckets: the OTLP RED histogram's; records carry latency_ms.
L7_BOUNDS_MS = tuple(b * 1000 for b in DURATION_BUCKETS)
_NS = len(SYSCALL_BUCKETS) + 1  # buckets per syscall series, +Inf last
_NL = len(DURATION_BUCKETS) + 1
_SYSCALL_LE = [floatToGoString(b) for b in SYSCALL_BUCKETS] + ["+Inf"]
_L7_LE = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]


def _histogram(name: str, doc: str, labels: list[str], les: list[str],
               series: dict[tuple[str, str], list[float]], scale: float) -> HistogramMetricFamily:
    """A family from non-cumulative bucket counts (+Inf last) and a sum in the source unit."""
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for key, h in sorted(series.items()):
        running, buckets = 0.0, []
        for le, n in zip(les, h[:-1], strict=True):
            running += n
            buckets.append((le, running))
        fam.add_metric(list(key), buckets, h[-1] * scale)
    return fam


class TargetRed:
    """The sink and its scrape-time view. Call from one thread; collect() from any."""

    def __init__(self, max_targets: int) -> None:
        self.targets = TargetLabels(max_targets)
        self._lock = threading.Lock()
        # (target, class) -> bucket counts then the latency sum (µs)
        self._syscalls: dict[tuple[str, str], list[float]] = {}
        self._syscall_errors: Counter[tuple[str, str]] = Counter()
        # (target, protocol) -> bucket counts then the latency sum (ms)
        self._l7: dict[tuple[str, str], list[float]] = {}
        self._l7_requests: Counter[tuple[str, str]] = Counter()
        self._l7_errors: Counter[tuple[str, str]] = Counter()
        self.store_lag_s = 0.0

    def __call__(self, batch: Batch) -> None:
        """Pipeline sink (sink thread): reads the batch's events, serializes nothing."""
        events = batch.events
        if not events:
            return
        first = events[0].get("ts")
        # Sinks run in order: the store and the sessions have this batch by now.
        lag = time.time() - first if isinstance(first, int | float) else 0.0
        # (pid, syscall, bucket, failed) -> [count, latency sum in µs, an event for labels]
        agg: dict[tuple[int, str | None, int, bool], list[Any]] = {}
        get = agg.get
        l7: list[Event] = []
        bounds = SYSCALL_BOUNDS_US
        for ev in events:
            lat = ev.get("latency_us")
            if lat is None:  # exec, fork, exit, data, and the records of other stages
                if ev.get("kind") == "l7":
                    l7.append(ev)
                continue
            # .get: a record of another stage with a latency but no syscall is "other"
            key = (ev["pid"], ev.get("syscall"), bisect_left(bounds, lat), "errno" in ev)
            a = get(key)
            if a is None:
                agg[key] = [1, lat, ev]
            else:
                a[0] += 1
                a[1] += lat
        with self._lock:
            self.store_lag_s = max(0.0, lag)
            for (_pid, syscall, bucket, failed), (n, total, ev) in agg.items():
                series = (self.targets.label(ev.get("unit"), ev.get("comm"), n),
                          SYSCALL_CLASS.get(syscall, "other") if syscall else "other")
                h = self._syscalls.get(series)
                if h is None:
                    h = self._syscalls[series] = [0.0] * (_NS + 1)
                h[bucket] += n
                h[_NS] += total
                if failed:
                    self._syscall_errors[series] += n
            for rec in l7:
                self._request(rec)

    def _request(self, rec: Event) -> None:
        proto = rec.get("proto")
        key = (self.targets.label(rec.get("unit"), rec.get("comm")),
               proto if proto in PROTOCOLS else UNKNOWN)
        self._l7_requests[key] += 1
        if rec.get("error"):
            self._l7_errors[key] += 1
        lat = rec.get("latency_ms")
        if isinstance(lat, int | float) and not isinstance(lat, bool) and lat >= 0:
            h = self._l7.get(key)
            if h is None:
                h = self._l7[key] = [0.0] * (_NL + 1)
            h[bisect_left(L7_BOUNDS_MS, lat)] += 1
            h[_NL] += lat

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            syscalls = {k: list(v) for k, v in self._syscalls.items()}
            errors = dict(self._syscall_errors)
            l7 = {k: list(v) for k, v in self._l7.items()}
            requests, l7_errors = dict(self._l7_requests), dict(self._l7_errors)
            lag, targets, overflowed = (self.store_lag_s, len(self.targets),
                                        self.targets.overflowed)
        yield _histogram("periscope_syscall_duration_seconds",
                         "Latency of traced syscalls, entry to exit, per target and syscall "
                         "class (the count is the syscall rate)", ["target", "class"],
                         _SYSCALL_LE, syscalls, 1e-6)
        fam = CounterMetricFamily("periscope_syscall_errors", "Traced syscalls that failed "
                                  "(returned an errno), per target and syscall class",
                                  labels=["target", "class"])
        for key, n in sorted(errors.items()):
            fam.add_metric(list(key), n)
        yield fam
        fam = CounterMetricFamily("periscope_l7_requests", "L7 requests seen in traced "
                                  "processes, per target and protocol",
                                  labels=["target", "protocol"])
        for key, n in sorted(requests.items()):
            fam.add_metric(list(key), n)
        yield fam
        fam = CounterMetricFamily("periscope_l7_request_errors", "L7 requests that failed "
                                  "(HTTP 4xx/5xx, SQL error, Redis error, DNS rcode other than "
                                  "NOERROR), per target and protocol",
                                  labels=["target", "protocol"])
        for key, n in sorted(l7_errors.items()):
            fam.add_metric(list(key), n)
        yield fam
        yield _histogram("periscope_l7_request_duration_seconds",
                         "L7 request latency, first request byte to last response byte, per "
                         "target and protocol", ["target", "protocol"], _L7_LE, l7, 1e-3)
        yield GaugeMetricFamily("periscope_metrics_targets", "Distinct target label values "
                                "in use (at most metrics.max_targets, then _overflow)",
                                value=targets)
        yield CounterMetricFamily("periscope_metrics_targets_overflowed",
                                  "Events and requests counted under target=\"_overflow\" "
                                  "because metrics.max_targets was reached", value=overflowed)
        yield GaugeMetricFamily("periscope_store_lag_seconds",
                                "Age of the first event of the last batch when the store and "
                                "the sessions had taken it", value=lag)
