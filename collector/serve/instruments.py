"""The daemon's own prometheus_client instruments: figures it sets when something happens
(ready, a session starting or ending), as opposed to values read at scrape time
(collector/serve/metrics.py). Nothing here runs per event."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

# Session lengths: from a quick look to the longest role limit (8 h by default).
SESSION_BUCKETS = (1.0, 10.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 28800.0)
# Why sessions end (the handlers' fixed strings), shown at 0 before the first one does.
END_REASONS = ("deadline", "client_closed", "slow_reader", "revoked", "shutdown")
_LEVELS = ("meta", "payload")


class Instruments:
    """Built unregistered (one per daemon, so tests can build many); metrics.registry()
    registers them. Label values are fixed strings from the code paths that call these."""

    def __init__(self) -> None:
        self.ready_seconds = Gauge(
            "periscope_ready_seconds", "Seconds from the daemon's start to serving its socket",
            registry=None)
        self.sessions_started = Counter(
            "periscope_sessions_started", "Trace sessions started, by capture level and "
            "export level (none when the session is not exported)", ["level", "export"],
            registry=None)
        self.sessions_ended = Counter(
            "periscope_sessions_ended", "Trace sessions ended, by reason (deadline, "
            "client_closed, slow_reader, revoked, shutdown)", ["reason"], registry=None)
        self.session_duration = Histogram(
            "periscope_session_duration_seconds", "How long trace sessions streamed",
            buckets=SESSION_BUCKETS, registry=None)
        for i, level in enumerate(_LEVELS):  # every series from the start, at 0
            for export in ("none", *_LEVELS[:i + 1]):
                self.sessions_started.labels(level, export)
        for reason in END_REASONS:
            self.sessions_ended.labels(reason)

    def register(self, registry: CollectorRegistry) -> None:
        for metric in (self.ready_seconds, self.sessions_started, self.sessions_ended,
                       self.session_duration):
            registry.register(metric)

    def session_started(self, level: str, export: str | None) -> None:
        self.sessions_started.labels(level, export or "none").inc()

    def session_ended(self, reason: str, seconds: float) -> None:
        self.sessions_ended.labels(reason).inc()
        self.session_duration.observe(max(0.0, seconds))
