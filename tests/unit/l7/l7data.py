"""Shared helpers for the L7 tests: load the golden captures, replay them, compare records."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from collector.l7 import L7Conn, Record
from collector.l7.record import Redact

DATA = Path(__file__).resolve().parents[2] / "data" / "l7"
GOLDENS = sorted(p.stem for p in DATA.glob("*.json"))
SECRETS = ("s3cr3t-Hunter2-tok", "Hunter2", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
           "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
Chunk = tuple[str, float, bytes]
FLIP = {"in": "out", "out": "in"}


def load(name: str) -> dict[str, Any]:
    doc = json.loads((DATA / f"{name}.json").read_text())
    doc["conns"] = [[(d, ts, bytes.fromhex(h)) for d, ts, h in c] for c in doc["conns"]]
    return doc


def replay(doc: dict[str, Any], redact: Redact, role: str | None = "client",
           chunks: Callable[[list[Chunk]], Iterable[tuple[str, str, Any, float]]] | None = None,
           flip: bool = False) -> list[Record]:
    """Records of every connection of a golden capture. `chunks` turns a connection's
    chunks into ("feed"|"gap", direction, data|n, ts) steps (default: feed each)."""
    out: list[Record] = []
    udp = doc["transport"] == "udp"
    for conn_chunks in doc["conns"]:
        conn = L7Conn(redact, role=role)
        steps = chunks(conn_chunks) if chunks else (("feed", d, b, t) for d, t, b in conn_chunks)
        last = 0.0
        for kind, d, item, ts in steps:
            d = FLIP[d] if flip else d
            last = ts
            if kind == "gap":
                out += conn.gap(d, item, ts)
            elif udp:
                out += conn.datagram(d, item, ts)
            else:
                out += conn.feed(d, item, ts)
        out += conn.close(last)
    return out


def matches(rec: Record, want: dict[str, Any]) -> list[str]:
    """Differences between a record and an expected entry (x_min: at least; trailing * in
    a command: prefix)."""
    got = rec.to_json()
    bad = []
    for key, value in want.items():
        if key.endswith("_min"):
            field = key[:-4]
            if got.get(field) is None or got[field] < value:
                bad.append(f"{field}={got.get(field)} < {value}")
        elif key == "command" and value.endswith("*"):
            if not str(got.get("command", "")).startswith(value[:-1]):
                bad.append(f"command={got.get('command')!r} !~ {value!r}")
        elif got.get(key, False if key == "error" else None) != value:
            bad.append(f"{key}={got.get(key)!r} != {value!r}")
    if "error" not in want and got["error"] and ("status" in want or "rcode" in want):
        bad.append("error=True")
    return bad


def shape(records: list[Record]) -> list[dict[str, Any]]:
    """Records without the timing fields (which depend on how bytes were chunked)."""
    out = []
    for r in records:
        j = r.to_json()
        j.pop("ts")
        j.pop("latency_ms", None)
        out.append(j)
    return out
