"""python -m bench.l7 [--seconds S]: µs per request/response pair per L7 parser, detection cost.

Replays the golden captures (tests/data/l7, real clients and servers) through fresh
L7Conns with the default Redactor, as the daemon would: chunk by chunk, and again with
the default 256 B capture cap (prefix + gap). Prints µs of CPU per record (one
request/response pair, redaction of its fields included) and the cost of content
detection on traffic no parser recognises, per payload, until the connection is given
up, plus the cost of a feed after that. No root needed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from collector.l7 import DETECT_BUDGET, L7Conn
from redact import Redactor

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "l7"
Chunks = list[tuple[str, float, bytes]]


def _load() -> dict[str, tuple[str, list[Chunks]]]:
    out = {}
    for p in sorted(DATA.glob("*.json")):
        doc = json.loads(p.read_text())
        conns = [[(d, ts, bytes.fromhex(h)) for d, ts, h in c] for c in doc["conns"]]
        out[p.stem] = (doc["transport"], conns)
    return out


def _replay(transport: str, conns: list[Chunks], redact: Callable[[str, str], str],
            clean: set[tuple[str, str]], cap: int | None) -> int:
    n = 0
    for chunks in conns:
        conn = L7Conn(redact, "client", clean)
        for d, ts, data in chunks:
            if transport == "udp":
                n += len(conn.datagram(d, data, ts))
            elif cap is None or len(data) <= cap:
                n += len(conn.feed(d, data, ts))
            else:
                n += len(conn.feed(d, data[:cap], ts)) + len(conn.gap(d, len(data) - cap, ts))
        n += len(conn.close(ts))
    return n


def _identity(text: str, _protocol: str) -> str:
    return text


def _measure(fn: Callable[[], int], seconds: float) -> tuple[float, int]:
    """(CPU seconds per unit, units per call), best of repeated runs."""
    per_call = fn()
    best = float("inf")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.process_time()
        for _ in range(5):
            fn()
        best = min(best, (time.process_time() - t0) / 5)
    return best / max(per_call, 1), per_call


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.l7", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    a = ap.parse_args(argv)
    r = Redactor.default()
    redact = r.redact_text
    goldens = _load()
    t0 = time.process_time()
    x = 0
    for i in range(1_000_000):  # calibration: how fast this Python is right now
        x += i
    print(f"L7 parsers, {os.cpu_count()} CPUs, a 1M-iteration add loop takes "
          f"{(time.process_time() - t0) * 1e3:.0f} ms here")
    print("CPU µs per record (one request/response pair, field redaction included), best "
          "of runs; a fresh connection per golden connection (detection included)")
    print(f"{'capture':24} {'records':>7} {'full µs':>8} {'256 B cap µs':>13} "
          f"{'no redact µs':>13}")
    for name, (transport, conns) in goldens.items():
        clean: set[tuple[str, str]] = set()
        full, n = _measure(partial(_replay, transport, conns, redact, clean, None), a.seconds)
        capped, _ = _measure(partial(_replay, transport, conns, redact, clean, 256), a.seconds)
        bare, _ = _measure(partial(_replay, transport, conns, _identity, set(), None),
                           a.seconds)
        print(f"{name:24} {n:7d} {full * 1e6:8.1f} {capped * 1e6:13.1f} {bare * 1e6:13.1f}")

    print(f"\ndetection on unrecognised traffic (budget {DETECT_BUDGET} B), µs per payload")
    noise = {"random 256 B": os.urandom(256), "text 256 B": b"lorem ipsum dolor " * 14,
             "tls hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(245)}
    for label, payload in noise.items():
        def sniff_until_given_up(p: bytes = payload) -> int:
            conn = L7Conn(redact)
            k = 0
            while not conn.gave_up:
                conn.feed("out" if k % 2 else "in", p, 0.0)
                k += 1
            return k
        per, k = _measure(sniff_until_given_up, a.seconds)
        print(f"  {label:14} {per * 1e6:6.2f} µs x {k} payloads until given up")
    conn = L7Conn(redact)
    conn.feed("out", noise["tls hello"], 0.0)

    def after() -> int:
        for _ in range(1000):
            conn.feed("out", noise["random 256 B"], 0.0)
        return 1000
    per, _ = _measure(after, a.seconds)
    print(f"  after giving up: {per * 1e6:.3f} µs per feed")

    req = (b"GET /api/items?page=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.0\r\n"
           b"Accept: */*\r\n\r\n")
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
            b"{}")
    keep = L7Conn(redact, "client", set())

    def keepalive() -> int:
        for _ in range(1000):
            keep.feed("out", req, 0.0)
            keep.feed("in", resp, 0.0)
        return 1000
    per, _ = _measure(keepalive, a.seconds)
    print(f"\nHTTP keep-alive, one connection, 2 feeds per pair: {per * 1e6:.1f} µs per pair")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
