"""RED metrics (rate, errors, duration) of L7 requests per target and protocol, bounded labels.

Label values are a target name (systemd unit, else comm) and a protocol from a fixed set.
Never a payload, path or peer. At most `max_targets` distinct targets get their own label;
every later one is folded into OVERFLOW, so the series count is bounded by
(max_targets + 1) x (protocols + 1) whatever the traced processes do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

OVERFLOW = "_overflow"
UNKNOWN = "_unknown"
PROTOCOLS = frozenset({"http", "pgsql", "mysql", "redis", "dns"})
# Seconds; the latency range of requests from a local cache hit to a slow report query.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
TARGET = "periscope.target"
PROTOCOL = "periscope.proto"


class _Counter(Protocol):
    def add(self, amount: int, attributes: Mapping[str, str]) -> None: ...


class _Histogram(Protocol):
    def record(self, amount: float, attributes: Mapping[str, str]) -> None: ...


class TargetLabels:
    """The one rule for a target's label value, shared by OTLP RED and /metrics: a
    process's systemd unit, else its comm (never a pid); the first `cap` distinct names
    keep their own value, every later one becomes OVERFLOW. Not thread-safe: one owner."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._known: set[str] = set()
        self.overflowed = 0  # items folded into OVERFLOW (a label-cap signal for operators)

    def __len__(self) -> int:
        return len(self._known)

    def label(self, unit: object, comm: object, n: int = 1) -> str:
        """The label of `n` items of a process with this unit and comm."""
        name = unit or comm
        if not isinstance(name, str) or not name:
            return UNKNOWN
        if name in self._known:
            return name
        if len(self._known) >= self.cap:
            self.overflowed += n
            return OVERFLOW
        self._known.add(name)
        return name


class MeterLike(Protocol):
    """The part of opentelemetry.metrics.Meter used here (a fake in unit tests)."""
    def create_counter(self, name: str, unit: str = ..., description: str = ...) -> Any: ...
    def create_histogram(self, name: str, unit: str = ..., description: str = ..., *,
                         explicit_bucket_boundaries_advisory: Sequence[float] | None = ...
                         ) -> Any: ...


class RedMetrics:
    """Records one L7 record into three instruments; call from one thread (the converter)."""

    def __init__(self, meter: MeterLike, max_targets: int) -> None:
        self.max_targets = max_targets
        self.targets = TargetLabels(max_targets)
        self._requests: _Counter = meter.create_counter(
            "periscope.l7.requests", unit="{request}",
            description="L7 requests seen in traced processes, per target and protocol")
        self._errors: _Counter = meter.create_counter(
            "periscope.l7.errors", unit="{request}",
            description="L7 requests that failed (HTTP 4xx/5xx, SQL error, Redis error, "
                        "DNS rcode != NOERROR), per target and protocol")
        self._duration: _Histogram = meter.create_histogram(
            "periscope.l7.duration", unit="s",
            description="First request byte to last response byte",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self._labels: dict[tuple[str, str], dict[str, str]] = {}

    @property
    def overflowed(self) -> int:
        """Records folded into OVERFLOW."""
        return self.targets.overflowed

    def target_of(self, rec: Mapping[str, Any]) -> str:
        return self.targets.label(rec.get("unit"), rec.get("comm"))

    def record(self, rec: Mapping[str, Any]) -> None:
        proto = rec.get("proto")
        key = (self.target_of(rec), proto if proto in PROTOCOLS else UNKNOWN)
        labels = self._labels.get(key)
        if labels is None:  # bounded: targets are capped, protocols a fixed set
            labels = self._labels[key] = {TARGET: key[0], PROTOCOL: key[1]}
        self._requests.add(1, labels)
        if rec.get("error"):
            self._errors.add(1, labels)
        latency = rec.get("latency_ms")
        if isinstance(latency, int | float) and not isinstance(latency, bool) and latency >= 0:
            self._duration.record(latency / 1000.0, labels)
