"""Prometheus metrics, following the conventions: one family per figure, base units.

The daemon keeps plain counters where the work happens (the kernel's stats map, the
pipeline's and the server's Counters, the exporters' Counts); HealthCollector reads them
at scrape time, so no per-event work is added for metrics, and shows each counter as
the family and label collector/serve/metric_names.py gives it. Per-target RED figures
come from collector/serve/red.py, the figures set by events (ready, sessions) from
collector/serve/instruments.py, and process_* (RSS, CPU, open fds) from
prometheus_client's ProcessCollector.

Label values come from fixed code paths (counter names, op and fault names, thread
names with their numbers dropped) or from the bounded target table only: never from
traced data. docs/operations.md ("Metrics") lists every family and the old names.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import ProcessCollector, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from collector.protocol import Fault, Op
from collector.selectors import Level
from collector.serve.handlers.status import thread_cpu
from collector.serve.metric_names import (
    COUNTER_FAMILIES,
    EXPORT,
    EXPORT_FAMILIES,
    TABLES,
    Route,
    route,
)

if TYPE_CHECKING:
    from collector.serve.services import Services

_THREAD_NUMBER = re.compile(r"[-_]\d+")


def thread_label(name: str) -> str:
    """A thread's name without its sequence numbers ("Thread-7 (process_request_thread)",
    "asyncio_3"): one series per kind of thread, not one per thread ever started."""
    return _THREAD_NUMBER.sub("", name)


class _Families:
    """Counter families being filled for one scrape: every known series starts at 0."""

    def __init__(self, families: Mapping[str, tuple[str, tuple[str, ...]]]) -> None:
        self.families = families
        self.values: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)

    def add(self, series: Route | None, value: float) -> None:
        if series is not None:
            got = self.values[series[0]]
            got[series[1]] = got.get(series[1], 0) + value

    def emit(self) -> Iterator[Metric]:
        for name, (doc, labels) in self.families.items():
            fam = CounterMetricFamily(name, doc, labels=list(labels))
            for values, v in sorted(self.values.get(name, {}).items()):
                fam.add_metric(list(values), v)
            yield fam


class HealthCollector(Collector):
    """Everything read from the daemon's own state at scrape time."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        counts = _Families(COUNTER_FAMILIES)
        for table in TABLES.values():  # the fixed series exist from the start
            for series in table.values():
                counts.add(series, 0)
        for op in Op:
            counts.add(route("server", f"op_{op.value}"), 0)
        for fault in Fault:
            counts.add(route("server", f"fault_{fault.name.lower()}"), 0)
        for source, values in (("kernel", svc.tracer.stats()),
                               ("pipeline", svc.pipeline.counters),
                               ("server", svc.counters), ("server", svc.router.counters),
                               ("l7", svc.stage.counters if svc.stage is not None else {}),
                               ("l7", svc.l7store.stats() if svc.l7store is not None else {})):
            for name, v in list(values.items()):
                counts.add(route(source, name), v)
        yield from counts.emit()
        yield from self._gauges()
        yield from self._store()
        yield from self._access()
        yield from self._export()
        red = CounterMetricFamily("periscope_redactions", "Redaction hits by rule id",
                                  labels=["rule"])
        rules = getattr(svc.pipeline.redactor, "counters", None)
        if callable(rules):
            for rule, v in sorted(rules().items()):
                red.add_metric([rule], v)
        yield red
        cpu = CounterMetricFamily("periscope_thread_cpu_seconds",
                                  "CPU time of the daemon's threads, by thread kind",
                                  labels=["thread"])
        per: dict[str, float] = defaultdict(float)
        for name, secs in thread_cpu().items():
            per[thread_label(name)] += secs
        for name, secs in sorted(per.items()):
            cpu.add_metric([name], secs)
        yield cpu

    def _gauges(self) -> Iterator[Metric]:
        tracer = self.svc.tracer
        yield GaugeMetricFamily("periscope_probes_attached", "1 while probes are attached",
                                value=int(tracer.attached))
        yield GaugeMetricFamily("periscope_probe_load_seconds", "Seconds the last probe "
                                "compile, load and attach took", value=tracer.last_load_seconds)
        yield CounterMetricFamily("periscope_probe_attaches", "Times the probes were "
                                  "attached (at a first session after none)",
                                  value=tracer.attach_count)
        yield GaugeMetricFamily("periscope_tls_attach_failed", "Libraries whose TLS uprobes "
                                "failed while attached (their plaintext is not captured)",
                                value=tracer.tls_failures())
        used, peak, size = tracer.ring_usage()
        yield GaugeMetricFamily("periscope_ring_buffer_size_bytes", "Size of the ring buffer "
                                "(0 while detached)", value=size)
        yield GaugeMetricFamily("periscope_ring_buffer_used_bytes", "Bytes waiting in the "
                                "ring buffer now", value=used)
        yield GaugeMetricFamily("periscope_ring_buffer_used_max_bytes", "Most bytes seen "
                                "waiting in the ring buffer since the probes were attached",
                                value=peak)
        yield GaugeMetricFamily("periscope_pipeline_backlog", "Records and events waiting in "
                                "the pipeline", value=self.svc.pipeline.backlog())

    def _store(self) -> Iterator[Metric]:
        store = self.svc.store
        yield GaugeMetricFamily("periscope_store_events", "Events in the store",
                                value=store.count())
        yield CounterMetricFamily("periscope_store_events_written", "Events written to the "
                                  "store", value=store.written)
        yield CounterMetricFamily("periscope_store_events_pruned", "Events removed from the "
                                  "store by retention (age or size)", value=store.pruned)
        yield GaugeMetricFamily("periscope_store_size_bytes", "Size of the store on disk "
                                "(database, write-ahead log and shared memory: what "
                                "store.max_bytes caps)", value=store.disk_bytes())

    def _access(self) -> Iterator[Metric]:
        svc = self.svc
        sessions = GaugeMetricFamily("periscope_sessions", "Live trace sessions, by capture "
                                     "level and export level (none: not exported)",
                                     labels=["level", "export"])
        live: dict[tuple[str, str], int] = {("meta", "none"): 0, ("payload", "none"): 0}
        for s in list(svc.router.sessions.values()):
            level = str(Level.PAYLOAD if s.payload else Level.META)
            key = (level, "none" if s.export is None else str(s.export))
            live[key] = live.get(key, 0) + 1
        for key, n in sorted(live.items()):
            sessions.add_metric(list(key), n)
        yield sessions
        yield GaugeMetricFamily("periscope_grants", "Active grants",
                                value=len(svc.grants.list(time.time())))
        audit = svc.gate.audit
        yield CounterMetricFamily("periscope_audit_records", "Audit records appended",
                                  value=audit.records)
        yield CounterMetricFamily("periscope_audit_write_failures", "Audit appends that "
                                  "failed (the request was denied: fail closed)",
                                  value=audit.write_failures)
        yield CounterMetricFamily("periscope_audit_anchor_failures", "Audit anchors that "
                                  "could not be published", value=audit.anchor_failures)

    def _export(self) -> Iterator[Metric]:
        ex = self.svc.exporters
        counts = _Families(EXPORT_FAMILIES)
        backlog = GaugeMetricFamily("periscope_export_backlog", "Items waiting in an exporter",
                                    labels=["exporter"])
        if ex is not None:
            sources = {"route": ex.counters}
            if ex.otlp is not None:
                sources["otlp"] = ex.otlp.counters
            if ex.jsonlog is not None:
                sources["jsonlog"] = ex.jsonlog.counters
            for (source, name), series in EXPORT.items():
                if source in sources:
                    counts.add(series, sources[source][name])
            for name, n in sorted(ex.backlog().items()):
                backlog.add_metric([name], n)
        yield from counts.emit()
        yield backlog


def registry(svc: Services) -> CollectorRegistry:
    """A registry of everything /metrics serves for this daemon (its own, not the global)."""
    # No *_created series: they double the counters' series and no dashboard reads them.
    disable_created_metrics()
    reg = CollectorRegistry()
    reg.register(HealthCollector(svc))
    if svc.red is not None:
        reg.register(svc.red)
    svc.metrics.register(reg)
    ProcessCollector(registry=reg)  # process_*: RSS, CPU seconds, open fds of the daemon
    return reg
