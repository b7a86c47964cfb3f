"""Redacted events and L7 records -> OpenTelemetry fields (semantic conventions), pure.

No SDK objects here (otlp.py builds those), so the mapping is table-tested on plain data.
The input is what redaction already produced: JSON-ready events (docs/events.md) and L7
records (docs/events.md, "L7 records"). A bytes value means something raw slipped in:
the item is refused (RawData), never exported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple, TypedDict

import orjson

from collector.capture.events import Event
from collector.errors import PeriscopeError


class RawData(PeriscopeError, ValueError):
    """An item carries bytes or is not a redacted record: refused, counted by the caller."""


class L7Record(TypedDict, total=False):
    """A request/response pair from the L7 parsers, every string already redacted."""
    ts: float                 # first request byte (wall clock, seconds)
    pid: int
    comm: str
    proto: str                # http | pgsql | mysql | redis | dns
    conn: str
    peer: str                 # "1.2.3.4:5432", "[::1]:443"
    latency_ms: float
    req_bytes: int
    resp_bytes: int
    partial: bool
    error: bool
    method: str               # http
    path: str                 # http (query string already redacted)
    status: int | str         # http status; SQL command tag or error code; Redis reply/error
    query: str                # pgsql, mysql: redacted and normalized
    command: str              # redis: redacted
    qname: str                # dns
    qtype: str
    rcode: str
    answers: list[str]
    # Set by the wiring where it knows them (the parsers do not):
    role: str                 # "client" | "server": the traced process's side
    unit: str
    exe: str
    target: int               # trace target cookie, like events


# OTLP AnyValue/attribute ints are int64.
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1

# Log attributes: the few facts a backend filters on. Each attribute costs the official
# encoder ~2-5 µs per record, so the rest stay in the body (bench/export.py measures it).
_LOG_ATTRS = (("kind", "periscope.kind"), ("syscall", "periscope.syscall"),
              ("fd", "periscope.fd"), ("conn", "periscope.conn"),
              ("errno", "periscope.errno"), ("target", "periscope.target"),
              ("tid", "thread.id"))


class LogFields(NamedTuple):
    ts_ns: int
    severity_number: int      # opentelemetry._logs.SeverityNumber values
    severity_text: str
    event_name: str
    body: str                 # the redacted event as JSON: what the store and clients get
    attributes: dict[str, Any]


class SpanFields(NamedTuple):
    name: str
    kind: str                 # "server" | "client" | "internal"
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    error: bool
    error_type: str | None


SEVERITY_INFO = (9, "INFO")
SEVERITY_WARN = (13, "WARN")


def ts_ns(ts: float) -> int:
    """Seconds (µs precision) -> ns without float noise in the last digits."""
    return round(ts * 1_000_000) * 1000


def _value(key: str, v: Any) -> Any:
    """An exportable value: bytes refused, ints beyond int64 as their decimal text."""
    t = type(v)
    if t is str or t is float or t is bool:
        return v
    if t is int:
        return v if _I64_MIN <= v <= _I64_MAX else str(v)
    if t is list or t is tuple:
        return [_value(key, x) for x in v]
    if isinstance(v, bytes | bytearray | memoryview):
        raise RawData(f"field {key!r} holds bytes: only redacted, JSON-ready data is exported")
    return v


def _checked(item: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise RawData(f"{what} must be a redacted dict, got {type(item).__name__}")
    return {k: _value(k, v) for k, v in item.items() if v is not None}


def resource_key(item: Mapping[str, Any]) -> tuple[Any, ...]:
    return (item.get("pid"), item.get("comm"), item.get("unit"), item.get("exe"),
            item.get("target"))


def resource_attributes(item: Mapping[str, Any], host: str,
                        session: str | None) -> dict[str, Any]:
    """host.name, service.name (unit, else comm), process.pid, process.executable.name."""
    comm = item.get("comm")
    exe = item.get("exe")
    exe_name = os.path.basename(exe) if isinstance(exe, str) and exe else comm
    service = item.get("unit") or comm or (f"unknown_service:{exe_name}" if exe_name
                                           else "unknown_service")
    attrs: dict[str, Any] = {"host.name": host, "service.name": str(service)}
    if isinstance(item.get("pid"), int):
        attrs["process.pid"] = item["pid"]
    if exe_name:
        attrs["process.executable.name"] = str(exe_name)
    if session:
        attrs["periscope.session"] = session
    return attrs


def log_fields(ev: Event) -> LogFields:
    """One redacted event -> an OTLP log: its JSON as body, a few facts as attributes."""
    if not isinstance(ev, Mapping):
        raise RawData(f"event must be a redacted dict, got {type(ev).__name__}")
    try:  # the same bytes the pipeline hands the store and the clients
        body = orjson.dumps(ev).decode()
    except TypeError as err:  # bytes (raw data), or anything else that is not JSON
        raise RawData(f"event is not JSON-ready redacted data: {err}") from err
    attrs: dict[str, Any] = {}
    for key, name in _LOG_ATTRS:
        v = ev.get(key)
        if v is not None:
            attrs[name] = _value(key, v)
    kind = str(ev.get("kind", "unknown"))
    warn = "errno" in ev or (kind == "exit" and ev.get("code", 0) != 0)
    number, text = SEVERITY_WARN if warn else SEVERITY_INFO
    ts = ev.get("ts")
    return LogFields(ts_ns(ts) if isinstance(ts, int | float) else 0, number, text,
                     f"periscope.{kind}", body, attrs)


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                           "TRACE", "PATCH", "QUERY"})
_DB_SYSTEMS = {"pgsql": "postgresql", "mysql": "mysql", "mariadb": "mariadb", "redis": "redis"}
_SQL_OPERATIONS = frozenset({
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "WITH", "CREATE", "ALTER",
    "DROP", "TRUNCATE", "GRANT", "REVOKE", "BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT",
    "RELEASE", "SET", "SHOW", "EXPLAIN", "ANALYZE", "VACUUM", "COPY", "CALL", "EXECUTE",
    "PREPARE", "DEALLOCATE", "LOCK", "LISTEN", "NOTIFY", "USE", "DESCRIBE", "REPLACE",
})


def split_peer(peer: str) -> tuple[str, int | None]:
    """"1.2.3.4:80" / "[::1]:443" -> (address, port); anything else -> (peer, None)."""
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return peer, None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # a bare IPv6 address without a port
        return peer, None
    return host, int(port)


def _first_word(text: str) -> str:
    return text.lstrip(" \t\r\n(").split(None, 1)[0].upper() if text.strip(" \t\r\n(") else ""


def span_fields(rec: Mapping[str, Any]) -> SpanFields:
    """One L7 record -> span name, kind, times, attributes and status (semconv)."""
    r = _checked(rec, "L7 record")
    proto = str(r.get("proto", ""))
    start = ts_ns(float(r.get("ts", 0.0)))
    end = start + max(0, round(float(r.get("latency_ms", 0.0)) * 1_000_000))
    role = r.get("role")
    kind = role if role in ("server", "client") else "internal"
    attrs: dict[str, Any] = {}
    peer = r.get("peer")
    if isinstance(peer, str) and peer:
        addr, port = split_peer(peer)
        side = {"client": "server", "server": "client"}.get(kind, "network.peer")
        attrs[f"{side}.address"] = addr
        if port is not None:
            attrs[f"{side}.port"] = port
    error = bool(r.get("error"))
    status = r.get("status")
    error_type: str | None = None
    if proto == "http":
        name, error_type = _http(r, attrs, status)
    elif proto in _DB_SYSTEMS:
        name = _db(r, proto, attrs, status, error)
        if error and status is not None:
            error_type = str(status)
    elif proto == "dns":
        name = _dns(r, attrs)
        if error:
            error_type = str(r.get("rcode") or "_OTHER")
    else:
        name = proto or "l7"
    if error and error_type is None:
        error_type = "_OTHER"
    if error_type is not None and error:
        attrs["error.type"] = error_type
    # Few attributes on purpose: the official encoder costs µs per attribute per span
    # (bench/export.py). Sizes, target and protocol are in RED metrics and the store.
    if "conn" in r:
        attrs["periscope.conn"] = r["conn"]
    if r.get("partial"):
        attrs["periscope.partial"] = True
    return SpanFields(name, kind, start, end, attrs, error, error_type if error else None)


def _http(r: dict[str, Any], attrs: dict[str, Any], status: Any) -> tuple[str, str | None]:
    method = str(r.get("method", ""))
    if method in _HTTP_METHODS:
        attrs["http.request.method"] = method
        name = method
    else:
        attrs["http.request.method"] = "_OTHER"
        if method:
            attrs["http.request.method_original"] = method
        name = "HTTP"
    path = r.get("path")
    if isinstance(path, str) and path:
        p, q, query = path.partition("?")
        attrs["url.path"] = p
        if q:
            attrs["url.query"] = query
    code: int | None = None
    if isinstance(status, int) or (isinstance(status, str) and status.isdigit()):
        code = int(status)
        attrs["http.response.status_code"] = code
    return name, (str(code) if code is not None else None)


def _db(r: dict[str, Any], proto: str, attrs: dict[str, Any], status: Any, error: bool) -> str:
    system = _DB_SYSTEMS[proto]
    attrs["db.system.name"] = system
    text = r.get("command" if proto == "redis" else "query")
    op = ""
    if isinstance(text, str) and text:
        attrs["db.query.text"] = text
        op = _first_word(text)
        if proto != "redis" and op not in _SQL_OPERATIONS:
            op = ""
        if op:
            attrs["db.operation.name"] = op
    if status is not None:
        if error:
            attrs["db.response.status_code"] = str(status)
        else:
            attrs["periscope.status"] = str(status)  # a command tag or reply type
    return op or system


def _dns(r: dict[str, Any], attrs: dict[str, Any]) -> str:
    if r.get("qname"):
        attrs["dns.question.name"] = str(r["qname"])
    answers = r.get("answers")
    if isinstance(answers, list) and answers:
        attrs["dns.answers"] = [str(a) for a in answers]
    for key in ("qtype", "rcode"):
        if key in r:
            attrs[f"periscope.dns.{key}"] = str(r[key])
    qtype = str(r.get("qtype", ""))
    return f"DNS {qtype}" if qtype.isalnum() and len(qtype) <= 10 else "DNS"
