"""Prometheus metrics, read at scrape time from the daemon's counters (no per-event work)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from collector.serve.handlers.status import thread_cpu

if TYPE_CHECKING:
    from collector.serve.services import Services

# Label values come from fixed code paths only (never from traced data), so no redaction is
# needed for metric labels.


class PeriscopeCollector(Collector):
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        svc = self.svc
        kernel = CounterMetricFamily("periscope_kernel_records",
                                     "Kernel-side record counters by outcome", labels=["outcome"])
        for name, v in svc.tracer.stats().items():
            kernel.add_metric([name], v)
        yield kernel
        pipe = CounterMetricFamily("periscope_pipeline", "Pipeline counters", labels=["counter"])
        for name, v in sorted(svc.pipeline.counters.items()):
            pipe.add_metric([name], v)
        yield pipe
        if svc.stage is not None or svc.l7store is not None:
            l7 = CounterMetricFamily("periscope_l7", "Connection and L7 stage counters "
                                     "(records, detections, gaps, resyncs) and their store's "
                                     "(rows written, pruned, lost to a failed write)",
                                     labels=["counter"])
            counts = dict(svc.stage.counters) if svc.stage is not None else {}
            if svc.l7store is not None:
                counts |= svc.l7store.stats()
            for name, v in sorted(counts.items()):
                l7.add_metric([name], v)
            yield l7
        red = CounterMetricFamily("periscope_redactions", "Redaction hits by rule",
                                  labels=["rule"])
        counters = getattr(svc.pipeline.redactor, "counters", None)
        if callable(counters):
            for rule, v in sorted(counters().items()):
                red.add_metric([rule], v)
        yield red
        srv = CounterMetricFamily("periscope_server", "Server counters", labels=["counter"])
        for name, v in sorted(svc.counters.items()):
            srv.add_metric([name], v)
        for name, v in sorted(svc.router.counters.items()):
            srv.add_metric([name], v)
        yield srv
        cpu = CounterMetricFamily("periscope_thread_cpu_seconds",
                                  "CPU time of each daemon thread", labels=["thread"])
        for name, secs in sorted(thread_cpu().items()):
            cpu.add_metric([name], secs)
        yield cpu
        yield GaugeMetricFamily("periscope_sessions", "Live trace sessions",
                                value=len(svc.router.sessions))
        yield GaugeMetricFamily("periscope_probes_attached", "1 while probes are attached",
                                value=int(svc.tracer.attached))
        yield GaugeMetricFamily("periscope_tls_attach_failed",
                                "Libraries whose TLS uprobes failed (plaintext not captured)",
                                value=svc.tracer.tls_failures())
        yield GaugeMetricFamily("periscope_pipeline_backlog", "Records waiting for the pipeline",
                                value=svc.pipeline.backlog())
        yield GaugeMetricFamily("periscope_stored_events", "Events in the store",
                                value=svc.store.written - svc.store.pruned)


def registry(svc: Services) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(PeriscopeCollector(svc))
    return reg
