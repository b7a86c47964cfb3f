"""RED metrics: every record counted, label values bounded by the target cap."""

from __future__ import annotations

from collections import Counter
from typing import Any

from collector.export.red import OVERFLOW, UNKNOWN, RedMetrics
from tests.unit.export import samples


class FakeInstrument:
    def __init__(self) -> None:
        self.values: Counter[tuple[str, str]] = Counter()
        self.samples: list[float] = []

    def add(self, amount: int, attributes: dict[str, str]) -> None:
        self.values[(attributes["periscope.target"], attributes["periscope.proto"])] += amount

    def record(self, amount: float, attributes: dict[str, str]) -> None:
        self.add(1, attributes)
        self.samples.append(amount)


class FakeMeter:
    def __init__(self) -> None:
        self.made: dict[str, FakeInstrument] = {}
        self.kwargs: dict[str, dict[str, Any]] = {}

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        self.made[name] = FakeInstrument()
        return self.made[name]

    def create_histogram(self, name: str, unit: str = "", description: str = "",
                         **kw: Any) -> Any:
        self.kwargs[name] = {"unit": unit, **kw}
        self.made[name] = FakeInstrument()
        return self.made[name]


def test_counts_requests_errors_and_seconds_per_target_and_protocol() -> None:
    meter = FakeMeter()
    red = RedMetrics(meter, max_targets=10)
    for i in range(6):
        red.record(samples.http(i, error=i < 2, latency_ms=1500.0))
    red.record(samples.pgsql())
    red.record({"proto": "smtp", "latency_ms": 1.0})  # no name, unknown protocol
    assert meter.made["periscope.l7.requests"].values == {
        ("checkout.service", "http"): 6, ("app", "pgsql"): 1, (UNKNOWN, UNKNOWN): 1}
    assert meter.made["periscope.l7.errors"].values == {("checkout.service", "http"): 2}
    assert meter.made["periscope.l7.duration"].samples[0] == 1.5  # seconds
    assert meter.kwargs["periscope.l7.duration"]["unit"] == "s"


def test_target_labels_are_capped_with_an_overflow_label() -> None:
    meter = FakeMeter()
    red = RedMetrics(meter, max_targets=3)
    for i in range(50):
        red.record(samples.pgsql(comm=f"job{i}", pid=1000 + i))
    labels = set(meter.made["periscope.l7.requests"].values)
    assert labels == {("job0", "pgsql"), ("job1", "pgsql"), ("job2", "pgsql"),
                      (OVERFLOW, "pgsql")}
    assert meter.made["periscope.l7.requests"].values[(OVERFLOW, "pgsql")] == 47
    assert red.overflowed == 47


def test_labels_never_carry_paths_peers_or_payload() -> None:
    meter = FakeMeter()
    red = RedMetrics(meter, max_targets=100)
    for i in range(20):
        red.record(samples.http(i))
    for target, proto in meter.made["periscope.l7.requests"].values:
        assert "/" not in target and ":" not in target and proto == "http"
