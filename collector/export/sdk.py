"""OpenTelemetry SDK objects from redacted items: log records, spans, resources, metrics.

semconv.py decides the fields; this module wraps them in the SDK's ReadableLogRecord and
ReadableSpan (each with the Resource of its own process) for the official exporters, and
sets up the MeterProvider whose metric exports are counted with the logs' and spans'.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from collector.export.handoff import Counts
from collector.export.semconv import (
    RawData,
    log_fields,
    resource_attributes,
    resource_key,
    span_fields,
)

log = logging.getLogger("periscope.export.otlp")

RESOURCE_CACHE = 4096              # processes whose Resource is kept (LRU)
_KINDS = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ERROR_STATUS = Status(StatusCode.ERROR)
_UNSET_STATUS = Status(StatusCode.UNSET)


class _Resource(Resource):
    """A Resource that hashes once: the OTLP encoder hashes it per record to group by it."""

    def __init__(self, attributes: Mapping[str, Any]) -> None:
        super().__init__(dict(attributes))
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class Builder:
    """Builds SDK records; one per exporter, used from its converter thread only."""

    def __init__(self, host: str, session_of: Callable[[int], str | None] | None) -> None:
        self.host = host
        self._session_of = session_of
        self._resources: OrderedDict[tuple[Any, ...], Resource] = OrderedDict()
        self._scope = InstrumentationScope("periscope")

    def resource(self, item: Mapping[str, Any]) -> Resource:
        target = item.get("target")
        # Looked up per item (a dict read): a target outlives sessions, so the exporting
        # session is part of the key, never a cached guess.
        session = (self._session_of(target) if self._session_of and isinstance(target, int)
                   else None)
        key = (*resource_key(item), session)
        res = self._resources.get(key)
        if res is not None:
            self._resources.move_to_end(key)
            return res
        res = self._resources[key] = _Resource(resource_attributes(item, self.host, session))
        if len(self._resources) > RESOURCE_CACHE:
            self._resources.popitem(last=False)
        return res

    def log(self, ev: Mapping[str, Any]) -> ReadableLogRecord:
        f = log_fields(ev)  # type: ignore[arg-type]  # refuses raw data (RawData)
        rec = LogRecord(timestamp=f.ts_ns, observed_timestamp=time.time_ns(),
                        severity_number=SeverityNumber(f.severity_number),
                        severity_text=f.severity_text, body=f.body, attributes=f.attributes,
                        event_name=f.event_name)
        return ReadableLogRecord(log_record=rec, resource=self.resource(ev),
                                 instrumentation_scope=self._scope)

    def span(self, rec: Mapping[str, Any]) -> ReadableSpan:
        f = span_fields(rec)  # refuses raw data (RawData)
        ctx = SpanContext(random.getrandbits(128), random.getrandbits(64), is_remote=False,
                          trace_flags=_SAMPLED)
        status = (Status(StatusCode.ERROR, f.error_type) if f.error_type
                  else _ERROR_STATUS if f.error else _UNSET_STATUS)
        return ReadableSpan(name=f.name, context=ctx, resource=self.resource(rec),
                            attributes=f.attributes, kind=_KINDS[f.kind], status=status,
                            start_time=f.start_ns, end_time=f.end_ns,
                            instrumentation_scope=self._scope)


def check_record(rec: object) -> None:
    """What RED alone (spans off) requires of an L7 record."""
    if not isinstance(rec, Mapping):
        raise RawData(f"L7 record must be a redacted dict, got {type(rec).__name__}")


class CountingMetricExporter(MetricExporter):
    """The OTLP metric exporter, its results counted with the logs' and spans'.

    Metrics are cumulative: a failed export loses nothing, the next one carries the totals.
    """

    def __init__(self, inner: MetricExporter, counters: Counts) -> None:
        super().__init__()
        self.inner = inner
        self.counters = counters

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:  # an exporter bug must not kill the SDK's reader thread
            log.exception("OTLP metric export raised")
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            self.counters.add("export_sent_metrics", 1)
        else:
            self.counters.add("export_failed", 1)
            self.counters.add("export_failed_metrics", 1)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def meter_provider(host: str, exporter: MetricExporter, counters: Counts,
                   interval_s: float, timeout_s: float) -> MeterProvider:
    """A MeterProvider exporting every interval_s through `exporter`, results counted."""
    reader = PeriodicExportingMetricReader(CountingMetricExporter(exporter, counters),
                                           export_interval_millis=interval_s * 1000,
                                           export_timeout_millis=timeout_s * 1000)
    return MeterProvider(resource=Resource({"host.name": host, "service.name": "periscope"}),
                         metric_readers=[reader], shutdown_on_exit=False)


__all__ = ["Builder", "CountingMetricExporter", "OTLPMetricExporter", "check_record",
           "meter_provider"]
