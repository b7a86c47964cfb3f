"""L7 records and the one place that builds them: every string field is redacted on the way out.

Parsers never construct a Record. They fill a mutable Pending (a request in flight) with
raw text taken from the captured bytes and hand it to Emitter.emit(), which passes every
str (and every str inside the answers/headers tuples) through the redaction callback
before the frozen Record exists. A unit test checks that `Record(` appears nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Redact = Callable[[str, str], str]  # redact(text, protocol) -> text; Redactor.redact_text

# record proto -> the redaction engine's protocol name
REDACT_NAME = {"http": "http", "pgsql": "postgres", "mysql": "mysql", "redis": "redis",
               "dns": "dns"}
TEXT_MAX = 2048  # raw characters of one field handed to redaction (cut at a separator)
_CLEAN_MAX = 4096  # distinct short values remembered as "redaction leaves it unchanged"
_CLEAN_LEN = 256
_SEP = re.compile(r"[\s&;,]")


def clip(text: str, limit: int = TEXT_MAX, cut: bool = False) -> str:
    """Text that is longer than `limit` (or was `cut` by a gap) loses its last, incomplete
    token: a value cut in half may no longer look like the secret it is, so it is dropped
    whole, up to the previous separator (whitespace & ; ,), and "…" marks the cut."""
    if len(text) <= limit and not cut:
        return text
    text = text[:limit]
    seps = list(_SEP.finditer(text))
    return (text[: seps[-1].start()] if seps else "") + "…"


def printable(data: bytes | bytearray | memoryview) -> str:
    """Bytes from the wire as text: UTF-8 where valid, other bytes as \\xNN escapes."""
    return bytes(data).decode("utf-8", "backslashreplace")


class Record(NamedTuple):
    """One request/response pair (or a request or response alone, then partial).

    A NamedTuple, not a frozen dataclass: building one is on the per-request path, and a
    frozen dataclass's __init__ (one object.__setattr__ per field) cost twice as much."""

    ts: float
    proto: str
    latency_ms: float | None = None
    req_bytes: int = 0
    resp_bytes: int = 0
    partial: bool = False
    error: bool = False
    method: str | None = None
    path: str | None = None
    status: int | str | None = None
    headers: tuple[tuple[str, str], ...] | None = None
    query: str | None = None
    command: str | None = None
    qname: str | None = None
    qtype: str | None = None
    rcode: str | None = None
    answers: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The issue's JSON names; fields that were never set are left out. (Spelled out
        field by field: it runs once per request, and a loop over names cost twice as much.)"""
        out: dict[str, Any] = {"ts": self.ts, "proto": self.proto}
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
        out["req_bytes"] = self.req_bytes
        out["resp_bytes"] = self.resp_bytes
        out["partial"] = self.partial
        out["error"] = self.error
        if self.method is not None:
            out["method"] = self.method
        if self.path is not None:
            out["path"] = self.path
        if self.status is not None:
            out["status"] = self.status
        if self.query is not None:
            out["query"] = self.query
        if self.command is not None:
            out["command"] = self.command
        if self.qname is not None:
            out["qname"] = self.qname
        if self.qtype is not None:
            out["qtype"] = self.qtype
        if self.rcode is not None:
            out["rcode"] = self.rcode
        if self.headers is not None:
            out["headers"] = dict(self.headers)
        if self.answers is not None:
            out["answers"] = list(self.answers)
        return out


@dataclass(slots=True)
class Pending:
    """A request in flight (mutable, raw text): what the parser knows so far."""

    ts: float
    req_bytes: int = 0
    resp_bytes: int = 0
    partial: bool = False
    error: bool = False
    orphan: bool = False  # a response whose request was never seen: no latency
    text: dict[str, str] = field(default_factory=dict)  # method/path/query/... raw
    status: int | str | None = None
    headers: list[tuple[str, str]] | None = None
    answers: list[str] | None = None


class Emitter:
    """Builds Records for one connection; the only caller of Record()."""

    __slots__ = ("_clean", "_proto_name", "_redact", "out", "proto")

    def __init__(self, redact: Redact, proto: str, clean: set[tuple[str, str]]) -> None:
        self._redact = redact
        self.proto = proto
        self._proto_name = REDACT_NAME[proto]
        self._clean = clean  # shared per L7Conn factory: values redaction left unchanged
        self.out: list[Record] = []

    def text(self, value: str) -> str:
        """One field through redaction. A short value that redaction returned unchanged is
        remembered, so the next identical one ("GET", a normalized query) costs a set
        lookup; nothing that redaction changed is ever kept."""
        key = (value, self._proto_name)
        if key in self._clean:
            return value
        got = self._redact(clip(value), self._proto_name)
        if got == value and len(value) <= _CLEAN_LEN:
            if len(self._clean) >= _CLEAN_MAX:
                self._clean.clear()
            self._clean.add(key)
        return got

    def emit(self, p: Pending, end_ts: float | None) -> None:
        t = p.text
        red = self.text
        status = p.status
        if isinstance(status, str):
            status = red(status)
        latency = None
        if end_ts is not None and not p.orphan:
            latency = round(max(0.0, end_ts - p.ts) * 1000, 3)
        rec = Record(
            ts=p.ts, proto=self.proto, latency_ms=latency, req_bytes=p.req_bytes,
            resp_bytes=p.resp_bytes, partial=p.partial, error=p.error,
            method=red(t["method"]) if "method" in t else None,
            path=red(t["path"]) if "path" in t else None,
            status=status,
            headers=tuple((red(k), red(v)) for k, v in p.headers) if p.headers else None,
            query=red(t["query"]) if "query" in t else None,
            command=red(t["command"]) if "command" in t else None,
            qname=red(t["qname"]) if "qname" in t else None,
            qtype=red(t["qtype"]) if "qtype" in t else None,
            rcode=red(t["rcode"]) if "rcode" in t else None,
            answers=tuple(red(a) for a in p.answers) if p.answers is not None else None,
        )
        self.out.append(rec)
