"""The export route: only targets of exporting sessions leave, each event narrowed to the
export level; L7 records become spans (payload only), other events logs; JSON lines get
both. Real exporters behind it: the OTLP/HTTP receiver of this package, a 0600 file."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector import config
from collector.capture.events import Batch
from collector.errors import PeriscopeError
from collector.export import ExportError
from collector.export.jsonlog import JsonLogSink, RotatingFile
from collector.export.otlp import OtlpExporter
from collector.export.route import ExportRoute, endpoint_name, open_exporters
from collector.selectors import Level
from tests.unit.export import samples
from tests.unit.export.receiver import Receiver, any_value, attrs

META, PAYLOAD = Level.META, Level.PAYLOAD


class Sessions:
    """What the router publishes: cookie -> (level exported, session id)."""

    def __init__(self, exports: Mapping[int, tuple[Level, str]] | None = None) -> None:
        self.exports: Mapping[int, tuple[Level, str]] = exports or {}


class Recorder:
    """An exporter stand-in that keeps what it was handed."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []
        self.spans: list[dict[str, Any]] = []

    def __call__(self, events: list[dict[str, Any]]) -> None:
        self.logs += events

    def requests(self, records: list[dict[str, Any]]) -> None:
        self.spans += records


def batch() -> list[dict[str, Any]]:
    """cookie 1: a payload write, a held-back data event, an L7 record, an exit;
    cookie 2: a failed open."""
    return [samples.event(0), {"ts": samples.T0 + 0.1, "kind": "data", "pid": 100, "tid": 100,
                               "target": 1, "direction": "in", "payload": "rest", "fd": 7,
                               "flushed": True},
            {**samples.http(0), "kind": "l7"}, {"ts": samples.T0 + 0.2, "kind": "exit",
                                                 "pid": 100, "tid": 100, "target": 1,
                                                 "code": 0},
            samples.failed_open()]


def routed(exports: Mapping[int, tuple[Level, str]]) -> tuple[Recorder, Recorder]:
    otlp, jsonlog = Recorder(), Recorder()
    route = ExportRoute(Sessions(exports), otlp, jsonlog)  # type: ignore[arg-type]
    route(Batch(batch()))
    return otlp, jsonlog


def test_nothing_leaves_without_an_exporting_session() -> None:
    otlp, jsonlog = routed({})
    assert otlp.logs == otlp.spans == jsonlog.logs == []


def test_payload_export_passes_its_targets_events_whole() -> None:
    otlp, jsonlog = routed({1: (PAYLOAD, "s1")})
    events = batch()
    assert otlp.logs == [events[0], events[1], events[3]]  # not cookie 2's open
    assert otlp.spans == [events[2]]  # the L7 record, as a span
    assert jsonlog.logs == events[:4]  # JSON lines: everything, in order


def test_meta_export_is_what_a_meta_session_sees() -> None:
    otlp, jsonlog = routed({1: (META, "s1"), 2: (META, "s2")})
    events = batch()
    write = {k: v for k, v in events[0].items()
             if k not in ("payload", "captured", "held", "payload_shed")}
    assert otlp.logs == [write, events[3], events[4]]  # no data event, payload stripped
    assert otlp.spans == []  # L7 fields are payload: never in a meta export
    assert jsonlog.logs == otlp.logs
    assert "payload" not in str(jsonlog.logs) and "rest" not in str(jsonlog.logs)


def test_counts_what_it_offered() -> None:
    otlp, jsonlog = Recorder(), Recorder()
    route = ExportRoute(Sessions({1: (PAYLOAD, "s1")}), otlp, jsonlog)  # type: ignore[arg-type]
    route(Batch(batch()))
    assert route.counters["export_offered_events"] == 3
    assert route.counters["export_offered_l7"] == 1


def test_endpoint_names_carry_no_credentials() -> None:
    assert endpoint_name("https://user:secret@collector.example:4318/base") == \
        "https://collector.example:4318/base"
    assert endpoint_name("http://[::1]:4318") == "http://[::1]:4318"


def test_open_exporters_builds_what_the_config_enables(tmp_path: Path) -> None:
    base = config.load(text="").export
    assert open_exporters(base, Sessions()) is None  # both off by default
    cfg = dataclasses.replace(base, jsonlog=dataclasses.replace(
        base.jsonlog, path=str(tmp_path / "e.jsonl")), otlp=dataclasses.replace(
        base.otlp, enabled=True, endpoint="http://u:pw@127.0.0.1:4318"))
    route = open_exporters(cfg, Sessions())
    assert route is not None and route.otlp is not None and route.jsonlog is not None
    assert route.destinations == ("otlp http://127.0.0.1:4318",
                                  f"jsonlog {tmp_path / 'e.jsonl'}")
    route.close(1)


def test_an_exporter_that_cannot_start_is_an_export_error(tmp_path: Path) -> None:
    base = config.load(text="").export
    cfg = dataclasses.replace(base, jsonlog=dataclasses.replace(
        base.jsonlog, path=str(tmp_path / "missing" / "e.jsonl")))
    with pytest.raises(ExportError, match="cannot open") as exc:
        open_exporters(cfg, Sessions())
    assert isinstance(exc.value, PeriscopeError)  # the daemon's exit 2, one line


def test_through_real_exporters(tmp_path: Path) -> None:
    """Real OTLP/HTTP and a real file: the exported session's logs and spans arrive, the
    other target's events appear in neither."""
    with Receiver() as rx:
        cfg = dataclasses.replace(config.load(text="").export.otlp, enabled=True,
                                  endpoint=rx.endpoint, flush_interval_s=0.05, metrics=False)
        sessions = Sessions({1: (PAYLOAD, "s1-abc")})
        otlp = OtlpExporter(cfg, host="h", session_of=lambda c: sessions.exports[c][1])
        path = tmp_path / "e.jsonl"
        jsonlog = JsonLogSink(RotatingFile(str(path), 1 << 20, 1), 64)
        route = ExportRoute(sessions, otlp, jsonlog)
        route.start()
        events = batch()
        route(Batch(events))
        route.close(10)
        logs = rx.logs()
        assert sorted(orjson.loads(any_value(lr.body))["kind"] for _r, lr in logs) == \
            ["data", "exit", "syscall"]
        assert {res["periscope.session"] for res, _lr in logs} == {"s1-abc"}
        [(_res, span)] = rx.spans()
        a = attrs(span.attributes)
        assert (a["http.request.method"], a["url.path"], a["http.response.status_code"]) == \
            ("GET", "/item/0", 200)
        lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        assert lines == events[:4]
        assert all(b"ENOENT" not in body for body in rx.bodies)  # cookie 2 stayed home
