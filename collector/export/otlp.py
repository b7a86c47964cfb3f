"""OTLP export: redacted events -> logs, L7 records -> spans, RED -> metrics; never blocks.

Behind the export route (collector/export/route.py, a pipeline sink). The sink calls
(__call__ for events, requests() for L7 records) only append to a bounded queue and
return; a converter thread builds the SDK's ReadableLogRecord/ReadableSpan objects, each
with the Resource of its own process, and records the RED metrics; a sender thread
exports batches through the official OTLP/HTTP exporters, retrying with backoff. A full
queue drops new items and counts them, so a dead or slow endpoint costs the pipeline
counters, never time or memory:

    offered = export_sent + export_dropped + export_rejected + export_metrics_only
              (+ backlog(): what is still queued or in flight)

Import this module only when export is enabled: the SDK costs ~16 MB RSS and 0.2 s.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from collector.capture.events import Event
from collector.config import OtlpExport
from collector.export.handoff import Counts, Handoff
from collector.export.red import RedMetrics
from collector.export.sdk import Builder, check_record, meter_provider
from collector.export.semconv import L7Record, RawData

log = logging.getLogger("periscope.export.otlp")

LOGS, SPANS = 0, 1                 # hand-off tags: what a queued item or batch is
_EVENT, _L7 = 0, 1
_SIGNALS = {LOGS: "logs", SPANS: "spans"}
MAX_RETRIES = 3                    # after the exporter's own retries within timeout_s
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 30.0
_SUCCESS = (SpanExportResult.SUCCESS, LogRecordExportResult.SUCCESS)
COUNTERS = ("export_sent", "export_failed", "export_dropped", "export_rejected",
            "export_dropped_queue_full", "export_dropped_retries", "export_dropped_shutdown",
            "export_metrics_only", "export_sent_logs", "export_sent_spans",
            "export_sent_metrics", "export_failed_metrics", "export_errors")


class BatchExporter(Protocol):
    """What the sender needs of an SDK exporter (OTLPLogExporter, OTLPSpanExporter)."""
    def export(self, batch: Sequence[Any]) -> Any: ...
    def shutdown(self) -> Any: ...


class OtlpExporter:
    """The OTLP sink. start(), feed it, close(timeout_s). `counters` is read at scrape time.

    Counters: export_sent (items), export_failed (export requests that failed: refused,
    timed out, unreachable), export_dropped (items never sent: the sum of
    export_dropped_queue_full, _retries and _shutdown), export_rejected (items that were
    not redacted, JSON-ready records: never exported), export_metrics_only (L7 records
    counted in RED metrics while spans are off). Per signal: export_sent_logs,
    export_sent_spans, export_sent_metrics (exports), export_failed_metrics.
    """

    def __init__(self, cfg: OtlpExport, *, host: str | None = None,
                 session_of: Callable[[int], str | None] | None = None,
                 exporters: Mapping[int, BatchExporter] | None = None,
                 metric_exporter: MetricExporter | None = None,
                 retries: int = MAX_RETRIES,
                 backoff_s: tuple[float, float] = (BACKOFF_FIRST_S, BACKOFF_MAX_S)) -> None:
        self.cfg = cfg
        self.retries, self.backoff_s = retries, backoff_s
        self.counters = Counts(COUNTERS)
        self.host = host or socket.gethostname()
        self._build = Builder(self.host, session_of)
        self._inbox: Handoff[Mapping[str, Any]] = Handoff(cfg.queue_size)
        # Built batches waiting for the sender: a second bound, so RED metrics keep counting
        # every record while a dead endpoint holds the sender.
        self._outbox: Handoff[list[Any]] = Handoff(max(2, cfg.queue_size // cfg.batch_size))
        self._built = 0  # items the converter took and the sender has not settled
        self._built_lock = threading.Lock()
        self._give_up = threading.Event()  # set at the close deadline: no more retries
        self._failing = False
        kw: dict[str, Any] = {"headers": dict(cfg.headers), "timeout": cfg.timeout_s,
                              "compression": Compression(cfg.compression)}
        if exporters is None:
            exporters = {}
            if cfg.logs:
                exporters[LOGS] = OTLPLogExporter(endpoint=cfg.url("logs"), **kw)
            if cfg.spans:
                exporters[SPANS] = OTLPSpanExporter(endpoint=cfg.url("traces"), **kw)
        self._exporters = dict(exporters)
        self._meters: MeterProvider | None = None
        self._red: RedMetrics | None = None
        if cfg.metrics:
            self._meters = meter_provider(
                self.host, metric_exporter or OTLPMetricExporter(endpoint=cfg.url("metrics"),
                                                                 **kw),
                self.counters, cfg.metrics_interval_s, cfg.timeout_s)
            self._red = RedMetrics(self._meters.get_meter("periscope"), cfg.max_targets)
        self._threads = [threading.Thread(target=self._convert_run, name="otlp-convert",
                                          daemon=True),
                         threading.Thread(target=self._send_run, name="otlp-send", daemon=True)]

    # -- sink side (the pipeline's sink thread): one append per call, never blocks -------
    def __call__(self, events: list[Event]) -> None:
        """Route sink (the pipeline's sink thread): redacted events become OTLP logs."""
        if LOGS in self._exporters:
            self._offer(events, _EVENT)

    def requests(self, records: Sequence[L7Record]) -> None:
        """L7 sink: redacted request/response records become spans and RED metrics."""
        if SPANS in self._exporters or self._red is not None:
            self._offer(records, _L7)

    def _offer(self, items: Sequence[Any], tag: int) -> None:
        took = self._inbox.offer(items, tag)
        if took < len(items):
            self._drop("shutdown" if self._inbox.closed else "queue_full", len(items) - took)

    def _drop(self, reason: str, n: int) -> None:
        self.counters.add("export_dropped", n)
        self.counters.add(f"export_dropped_{reason}", n)

    def _settle(self, n: int) -> None:
        """Items leave the backlog; callers count where they went first, so a reader sees
        sent + dropped + rejected + backlog() >= offered, never less."""
        with self._built_lock:
            self._built -= n

    def backlog(self) -> int:
        """Items queued, being built or in flight: not yet sent, dropped or rejected."""
        return len(self._inbox) + self._built

    def start(self) -> None:
        for t in self._threads:
            t.start()

    # -- converter thread ------------------------------------------------------------------
    def _convert_run(self) -> None:
        size, linger = self.cfg.batch_size, self.cfg.flush_interval_s
        while True:
            chunks = self._inbox.take(size, linger)
            if chunks is None:
                break
            with self._built_lock:
                self._built += sum(len(items) for _tag, items in chunks)
            logs: list[Any] = []
            spans: list[Any] = []
            # The sender is behind (a slow or dead endpoint): building records that would
            # be dropped at the outbox is wasted CPU, so drop them now (RED still counts).
            behind = len(self._outbox) >= self._outbox.cap
            for tag, items in chunks:
                if behind and (tag == _EVENT or SPANS in self._exporters):
                    self._shed(tag, items)
                    continue
                for item in items:
                    try:
                        if tag == _EVENT:
                            logs.append(self._build.log(item))
                        else:
                            self._l7(item, spans)
                    except Exception as err:  # RawData, or a bug: the thread must go on
                        self._reject(err)
            for tag, batch in ((LOGS, logs), (SPANS, spans)):
                if batch and not self._outbox.offer([batch], tag):
                    self._drop("shutdown" if self._outbox.closed else "queue_full", len(batch))
                    self._settle(len(batch))
        self._outbox.close()

    def _reject(self, err: Exception) -> None:
        self.counters.add("export_rejected", 1)
        self._settle(1)
        if self.counters["export_rejected"] == 1:  # once: the counter says the rest
            log.error("OTLP export refused a record (counted as export_rejected from now "
                      "on): %s", err, exc_info=not isinstance(err, RawData))

    def _shed(self, tag: int, items: list[Any]) -> None:
        if tag == _L7 and self._red is not None:
            for rec in items:
                if isinstance(rec, Mapping):
                    self._red.record(rec)
        self._drop("queue_full", len(items))
        self._settle(len(items))

    def _l7(self, rec: Mapping[str, Any], spans: list[Any]) -> None:
        if SPANS in self._exporters:
            spans.append(self._build.span(rec))  # refuses raw data before RED counts it
        else:
            check_record(rec)
            self.counters.add("export_metrics_only", 1)
            self._settle(1)
        if self._red is not None:
            self._red.record(rec)

    # -- sender thread ---------------------------------------------------------------------
    def _send_run(self) -> None:
        while True:
            chunks = self._outbox.take(1, 0)
            if chunks is None:
                return
            for tag, batches in chunks:
                for batch in batches:
                    try:
                        self._send(tag, batch)
                    finally:
                        self._settle(len(batch))

    def _send(self, tag: int, batch: list[Any]) -> None:
        exporter, n, signal = self._exporters[tag], len(batch), _SIGNALS[tag]
        for attempt in range(self.retries + 1):
            if self._give_up.is_set():
                self._drop("shutdown", n)
                return
            if self._export(exporter, batch):
                self.counters.add("export_sent", n)
                self.counters.add(f"export_sent_{signal}", n)
                if self._failing:
                    self._failing = False
                    log.warning("OTLP export to %s works again", self.cfg.endpoint)
                return
            self.counters.add("export_failed", 1)
            if not self._failing:  # once per outage, not per batch: the counters say the rest
                self._failing = True
                log.warning("OTLP export to %s is failing; retrying with backoff, new items "
                            "are dropped and counted while the queue is full",
                            self.cfg.endpoint)
            if attempt < self.retries:
                wait = min(self.backoff_s[1], self.backoff_s[0] * 2 ** attempt)
                if self._give_up.wait(wait * random.uniform(0.8, 1.2)):
                    self._drop("shutdown", n)
                    return
        self._drop("retries", n)

    def _export(self, exporter: BatchExporter, batch: list[Any]) -> bool:
        try:
            return exporter.export(batch) in _SUCCESS
        except Exception:  # the SDK's exporters report, not raise; a bug must not kill us
            self.counters.add("export_errors", 1)
            if self.counters["export_errors"] == 1:
                log.exception("OTLP exporter raised (counted as export_errors from now on)")
            return False

    # -- shutdown --------------------------------------------------------------------------
    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued within timeout_s; whatever is left is dropped and counted.

        RED metrics get their last export first (they are final once the converter is
        done), so a stuck span endpoint cannot starve them. A request still in flight at
        the deadline ends within the exporter's timeout_s on its own (daemon) thread and
        is counted when it does.
        """
        deadline = time.monotonic() + timeout_s
        self._inbox.close()
        convert, send = self._threads
        started = convert.ident is not None
        if started:
            convert.join(max(0.0, deadline - time.monotonic()))
        if self._meters is not None:
            left = max(0.0, deadline - time.monotonic())
            self._meters.shutdown(timeout_millis=max(500.0, left * 500))
        if started:
            send.join(max(0.0, deadline - time.monotonic()))
        if not started or convert.is_alive() or send.is_alive():
            self._give_up.set()  # stop backoff waits
            for _tag, items in self._inbox.discard():
                self._drop("shutdown", len(items))
            for _tag, batches in self._outbox.discard():
                for batch in batches:
                    self._drop("shutdown", len(batch))
                    self._settle(len(batch))
        for exporter in self._exporters.values():
            try:
                exporter.shutdown()  # also aborts the exporter's own retry waits
            except Exception:
                log.exception("OTLP exporter shutdown failed")
