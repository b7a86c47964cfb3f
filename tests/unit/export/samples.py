"""Synthetic redacted events and L7 records, shaped like docs/events.md says."""

from __future__ import annotations

from typing import Any

T0 = 1_764_000_000.0


def event(i: int = 0, **over: Any) -> dict[str, Any]:
    """A payload write of pid 100 (unit checkout.service), unique by ts."""
    ev: dict[str, Any] = {"ts": round(T0 + i / 1000, 6), "kind": "syscall", "pid": 100,
                          "tid": 101, "target": 1, "syscall": "write", "ret": 42,
                          "latency_us": 3.25, "fd": 7, "size": 42, "direction": "out",
                          "captured": 42, "payload": f"GET /item/{i} HTTP/1.1\\r\\n",
                          "comm": "python3", "unit": "checkout.service"}
    ev.update(over)
    return ev


def failed_open(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"ts": T0 + 0.5, "kind": "syscall", "pid": 200, "tid": 200,
                          "target": 2, "syscall": "openat", "ret": -2, "errno": "ENOENT",
                          "latency_us": 8.0, "dirfd": -100, "path": "/etc/app/[REDACTED]",
                          "flags": "O_RDONLY", "comm": "curl"}
    ev.update(over)
    return ev


def http(i: int = 0, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"ts": T0 + i, "pid": 100, "comm": "python3",
                           "unit": "checkout.service", "proto": "http", "conn": "fd:7",
                           "peer": "10.1.2.3:51000", "latency_ms": 12.5, "req_bytes": 120,
                           "resp_bytes": 2048, "partial": False, "error": False,
                           "method": "GET", "path": f"/item/{i}?token=[REDACTED]",
                           "status": 200, "role": "server", "target": 1}
    rec.update(over)
    return rec


def pgsql(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"ts": T0 + 1, "pid": 300, "comm": "app", "proto": "pgsql",
                           "conn": "fd:9", "peer": "127.0.0.1:5432", "latency_ms": 3.0,
                           "req_bytes": 60, "resp_bytes": 90, "partial": False,
                           "error": False, "query": "SELECT name FROM users WHERE id = $1",
                           "status": "SELECT 1", "role": "client"}
    rec.update(over)
    return rec
