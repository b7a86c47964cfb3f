"""Which redacted events leave the host, and at which level: the sink in front of the exporters.

Export is a policy decision made per trace session (`trace --export`, the role key `export`,
collector/access/decide.py). The session router publishes, per target cookie, the level
its exporting sessions allow; this sink passes on only events of those targets, each
narrowed to that level with `capture.events.narrow` (what a session at that level would
see), and routes by kind: L7 request records ("l7") become OTLP spans and RED metrics
(`OtlpExporter.requests`), every other event an OTLP log; the JSON-lines sink gets both.
An L7 record is payload-level data (method, path, query text), so it leaves only with a
session exported at payload. With no exporting session the call costs one truth test.
Nothing is serialized here: the exporters take event dicts onto their own queues and
build their wire formats on their own threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from collector.capture.events import Batch, Event, narrow
from collector.config import Export
from collector.export.handoff import Counts
from collector.export.jsonlog import JsonLogSink, open_sink
from collector.selectors import Level

if TYPE_CHECKING:
    from collector.export.otlp import OtlpExporter

log = logging.getLogger("periscope.export")

COUNTERS = ("export_offered_events", "export_offered_l7")
CLOSE_TIMEOUT_S = 5.0  # each exporter's flush on stop; what is left is dropped and counted


class ExportLevels(Protocol):
    """Where the levels come from (collector.serve.sessions.Router): per target cookie,
    the level exported and the exporting session's id."""

    @property
    def exports(self) -> Mapping[int, tuple[Level, str]]: ...


def endpoint_name(url: str) -> str:
    """An endpoint as the audit log and the client see it: no user:password part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class ExportRoute:
    """The pipeline sink for export (its sink thread): policy, narrowing, routing by kind.

    start() and close() start and flush the exporters it feeds.
    """

    def __init__(self, sessions: ExportLevels, otlp: OtlpExporter | None = None,
                 jsonlog: JsonLogSink | None = None,
                 destinations: Sequence[str] = ()) -> None:
        self.sessions = sessions
        self.otlp = otlp
        self.jsonlog = jsonlog
        self.destinations = tuple(destinations)
        self.counters = Counts(COUNTERS)

    def __call__(self, batch: Batch) -> None:
        """Pipeline sink (sink thread): the batch's exported events to the exporters."""
        levels = self.sessions.exports
        if not levels:
            return
        out: list[Event] = []
        logs: list[Event] = []
        l7: list[Event] = []
        for ev in batch.events:
            got = levels.get(ev.get("target"))  # type: ignore[arg-type]
            if got is None:
                continue  # no exporting session on this target: it stays on the host
            level = got[0]
            if ev.get("kind") == "l7":
                if level < Level.PAYLOAD:
                    continue  # L7 fields are payload: a meta export never carries them
                seen = ev
                l7.append(ev)
            else:
                narrowed = narrow(ev, level)
                if narrowed is None:
                    continue
                seen = narrowed
                logs.append(seen)
            out.append(seen)
        if not out:
            return
        self.counters.add("export_offered_events", len(logs))
        self.counters.add("export_offered_l7", len(l7))
        if self.otlp is not None:
            if logs:
                self.otlp(logs)
            if l7:
                self.otlp.requests(l7)  # type: ignore[arg-type]  # JSON-ready L7 records
        if self.jsonlog is not None:
            self.jsonlog(out)

    def start(self) -> None:
        for sink in (self.otlp, self.jsonlog):
            if sink is not None:
                sink.start()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Flush both exporters (each within timeout_s); the rest is dropped and counted."""
        for sink in (self.otlp, self.jsonlog):
            if sink is not None:
                try:
                    sink.close(timeout_s)
                except Exception:  # stopping must go on: the other exporter still flushes
                    log.exception("closing an exporter failed")

    def backlog(self) -> dict[str, int]:
        out = {}
        if self.otlp is not None:
            out["otlp"] = self.otlp.backlog()
        if self.jsonlog is not None:
            out["jsonlog"] = self.jsonlog.backlog()
        return out


def open_exporters(cfg: Export, sessions: ExportLevels,
                   session_of: Callable[[int], str | None] | None = None
                   ) -> ExportRoute | None:
    """The exporters [export.*] enables, behind one route (not started), or None.

    Raises ExportError when one cannot start (its file cannot be opened, journald
    support is missing). `session_of(cookie)` names the exporting session in the OTLP
    resource. The OpenTelemetry SDK is imported only when OTLP is enabled.
    """
    jsonlog = open_sink(cfg.jsonlog)
    otlp = None
    destinations = []
    if cfg.otlp.enabled:
        from collector.export.otlp import OtlpExporter

        otlp = OtlpExporter(cfg.otlp, session_of=session_of)
        destinations.append(f"otlp {endpoint_name(cfg.otlp.endpoint)}")
    if jsonlog is not None:
        destinations.append(f"jsonlog {cfg.jsonlog.path}")
    if otlp is None and jsonlog is None:
        return None
    return ExportRoute(sessions, otlp, jsonlog, destinations)
