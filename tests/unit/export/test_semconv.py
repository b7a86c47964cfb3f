"""Events and L7 records -> OpenTelemetry fields, table-tested on plain data."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector.export.semconv import (
    RawData,
    log_fields,
    resource_attributes,
    span_fields,
    split_peer,
    ts_ns,
)
from tests.unit.export import samples


@pytest.mark.parametrize(("peer", "want"), [
    ("1.2.3.4:80", ("1.2.3.4", 80)),
    ("[::1]:443", ("::1", 443)),
    ("::1", ("::1", None)),
    ("/run/app.sock", ("/run/app.sock", None)),
    ("host:http", ("host:http", None)),
])
def test_split_peer(peer: str, want: tuple[str, int | None]) -> None:
    assert split_peer(peer) == want


def test_timestamps_keep_microseconds_exactly() -> None:
    assert ts_ns(1764000000.123456) == 1764000000123456000
    assert ts_ns(0.000001) == 1000


@pytest.mark.parametrize(("over", "severity"), [
    ({}, (9, "INFO")),
    ({"ret": -13, "errno": "EACCES"}, (13, "WARN")),
    ({"kind": "exit", "code": 1}, (13, "WARN")),
    ({"kind": "exit", "code": 0}, (9, "INFO")),
])
def test_log_severity(over: dict[str, Any], severity: tuple[int, str]) -> None:
    f = log_fields(samples.event(0, **over))
    assert (f.severity_number, f.severity_text) == severity


def test_log_body_is_the_pipeline_json_and_attributes_a_few_facts() -> None:
    ev = samples.event(0)
    ev.update({"argv": "app --user [REDACTED]", "path": "/x"})
    f = log_fields(ev)
    assert f.body == orjson.dumps(ev).decode()  # byte for byte what the store gets
    assert f.attributes == {"periscope.kind": "syscall", "periscope.syscall": "write",
                            "periscope.fd": 7, "periscope.target": 1, "thread.id": 101}
    assert f.event_name == "periscope.syscall"
    f = log_fields(samples.failed_open())
    assert f.attributes["periscope.errno"] == "ENOENT"


def test_attribute_ints_beyond_int64_travel_as_text() -> None:
    f = log_fields(samples.event(0, fd=1 << 63))
    assert f.attributes["periscope.fd"] == str(1 << 63)


@pytest.mark.parametrize("bad", [b"raw", bytearray(b"raw"), [b"raw"]])
def test_bytes_are_refused(bad: object) -> None:
    with pytest.raises(RawData, match="not JSON-ready"):
        log_fields(samples.event(0, payload=bad))
    with pytest.raises(RawData):
        span_fields(samples.http(0, path=bad))


def test_a_non_dict_is_refused() -> None:
    with pytest.raises(RawData, match="redacted dict"):
        span_fields(("GET", "/"))  # type: ignore[arg-type]


def test_resource_service_name_prefers_the_unit_then_comm_then_exe() -> None:
    assert resource_attributes({"pid": 1, "comm": "nginx", "unit": "web.service"}, "h",
                               "s1")["service.name"] == "web.service"
    r = resource_attributes({"pid": 1, "comm": "nginx", "exe": "/usr/sbin/nginx"}, "h", None)
    assert r == {"host.name": "h", "service.name": "nginx", "process.pid": 1,
                 "process.executable.name": "nginx"}
    assert resource_attributes({}, "h", None)["service.name"] == "unknown_service"


@pytest.mark.parametrize(("rec", "name", "kind", "want"), [
    (samples.http(0), "GET", "server",
     {"http.request.method": "GET", "url.path": "/item/0", "http.response.status_code": 200,
      "client.address": "10.1.2.3", "client.port": 51000}),
    (samples.http(0, role=None, status="404", error=True), "GET", "internal",
     {"network.peer.address": "10.1.2.3", "http.response.status_code": 404,
      "error.type": "404"}),
    (samples.pgsql(), "SELECT", "client",
     {"db.system.name": "postgresql", "db.operation.name": "SELECT",
      "server.address": "127.0.0.1", "server.port": 5432, "periscope.status": "SELECT 1"}),
    (samples.pgsql(query="/* x */ vacuum"), "postgresql", "client",
     {"db.system.name": "postgresql"}),
    (samples.pgsql(proto="redis", query=None, command="hget k f", status="bulk"), "HGET",
     "client", {"db.system.name": "redis", "db.operation.name": "HGET"}),
    (samples.pgsql(proto="dns", query=None, status=None, qname="a.example", qtype="AAAA",
                   rcode="NOERROR", answers=["::1"]), "DNS AAAA", "client",
     {"dns.question.name": "a.example", "dns.answers": ["::1"]}),
])
def test_span_fields(rec: dict[str, Any], name: str, kind: str, want: dict[str, Any]) -> None:
    rec = {k: v for k, v in rec.items() if v is not None}
    f = span_fields(rec)
    assert (f.name, f.kind) == (name, kind)
    assert f.end_ns - f.start_ns == round(rec["latency_ms"] * 1e6)
    for key, value in want.items():
        assert f.attributes[key] == value, key
    assert f.error == rec["error"]
