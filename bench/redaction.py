"""Redaction throughput on realistic 256 B and 4 KiB payloads: `python -m bench.redaction`.

Prints MB/s and payloads/s, one-shot and stream (fed in 1460-byte segments), best of N runs
on one core, timed in process CPU time (the build host is shared; wall time there measures the
neighbours). Payloads are seeded and realistic (HTTP, SQL, Redis, logs); about one in five
carries a secret, so validators and placeholders are part of the measurement.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import redact
from redact import Redactor

R = random.Random(7)
HEX = "0123456789abcdef"


def _rs(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(R.choice(alphabet) for _ in range(n))


def _uuid() -> str:
    h = _rs(32, HEX)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _http_request(secret: bool) -> str:
    extra = [f"Authorization: Bearer {_rs(40)}", f"Cookie: session={_rs(32)}",
             f"X-Api-Key: sk_live_{_rs(24)}"] if secret else []
    lines = [f"GET /api/v1/orders/{R.randint(1, 99999)}?include=items&page={R.randint(1, 9)} "
             "HTTP/1.1", "Host: checkout.internal.example.com", "User-Agent: okhttp/4.12.0",
             "Accept: application/json", f"X-Request-Id: {_uuid()}",
             f"traceparent: 00-{_rs(32, HEX)}-{_rs(16, HEX)}-01", *extra[: R.randint(0, 1) + 1]]
    return "\r\n".join(lines) + "\r\n\r\n"


def _log_line(secret: bool) -> str:
    tail = f" password={_rs(12)}" if secret else f" bytes={R.randint(10, 99999)}"
    return (f"2024-01-15T10:{R.randint(10, 59)}:{R.randint(10, 59)}.{R.randint(100, 999)}Z "
            f"level=info msg=\"request done\" method=GET path=/api/v1/items/{R.randint(1, 9999)} "
            f"status=200 duration_ms={R.randint(1, 900)} trace_id={_rs(32, HEX)}{tail}\n")


def _json_record(secret: bool) -> dict[str, object]:
    rec: dict[str, object] = {"id": _uuid(), "sku": f"SKU-{R.randint(1000, 9999)}",
                              "qty": R.randint(1, 9), "price": R.randint(100, 99999) / 100,
                              "updated_at": "2024-01-15T10:00:00Z", "etag": _rs(32, HEX)}
    if secret:
        rec["customer_email"] = f"user{R.randint(1, 999)}@example.com"
    return rec


def _sql(secret: bool) -> str:
    if secret:
        return f"ALTER USER app{R.randint(1, 9)} WITH PASSWORD '{_rs(16)}'"
    return (f"SELECT id, status, total FROM orders WHERE customer_id = $1 AND created_at > "
            f"'2024-01-{R.randint(10, 28)}' ORDER BY id LIMIT {R.randint(10, 100)}")


def _redis(secret: bool) -> str:
    words = ["AUTH", _rs(20)] if secret else ["GET", f"cache:page:{R.randint(1, 99999)}"]
    return f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)


def _fit(text: str, size: int) -> bytes:
    data = text.encode()
    if len(data) < size:
        data += b" " * (size - len(data))
    return data[:size]


def payloads(size: int, count: int = 256) -> list[bytes]:
    out = []
    for i in range(count):
        secret = i % 5 == 0
        if size <= 512:
            kind = R.choice([_http_request, _http_request, _log_line, _sql, _redis])
            text = kind(secret)
            while len(text) < size:
                text += _log_line(False)
        else:
            body = json.dumps([_json_record(secret and k == 3) for k in range(40)])
            text = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"" +
                    base64.b64encode(_rs(20).encode()).decode() + "\"\r\n\r\n" + body)
        out.append(_fit(text, size))
    return out


def _measure(fn: Callable[[bytes], object], data: list[bytes], seconds: float) -> float:
    """Payloads per second over at least `seconds`."""
    n = 0
    start = time.process_time()
    while True:
        for p in data:
            fn(p)
        n += len(data)
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return n / elapsed


class Case(NamedTuple):
    fn: Callable[[bytes], object]
    inputs: list[bytes]
    size: int  # bytes per input
    unit: str  # "payloads" or "feeds"
    label: str


CASES = ("256-one-shot", "256-stream", "256-stream/64", "4096-one-shot", "4096-stream",
         "4096-stream/64", "feeds-64", "feeds-256", "write-loop")


def cases(r: Redactor) -> dict[str, Case]:
    """Every measurement, by name, in print order (payloads are built and RE2 warmed here)."""

    def chunked(size: int) -> Callable[[bytes], bytes]:
        def stream(p: bytes) -> bytes:
            s = r.stream()
            out = b"".join(s.feed(p[i : i + size]) for i in range(0, len(p), size))
            return out + s.close()
        return stream

    out: dict[str, Case] = {}
    # The daemon's case: one long-lived stream per (pid, fd, direction), one feed per
    # captured syscall (64 B here), payload text with no secret. Rate in feeds/s.
    clean = bytearray()
    for size in (256, 4096):
        data = payloads(size)
        clean += b"".join(p for i, p in enumerate(data) if i % 5)  # every 5th has a secret
        for p in data:  # warm up: RE2 builds its DFA states lazily
            r.redact(p)
        for name, fn in (("one-shot", r.redact), ("stream", chunked(1460)),
                         ("stream/64", chunked(64))):
            out[f"{size}-{name}"] = Case(fn, data, size, "payloads", f"{size:>5} B {name:<9}")
    for size in (64, 256):
        feeds = [bytes(clean[i : i + size]) for i in range(0, len(clean), size)]
        out[f"feeds-{size}"] = Case(r.stream().feed, feeds, size, "feeds",
                                    f"{size:>5} B feeds, one long-lived stream, no secret")
    # bench/workload/producer.c's bytes: 64 B writes, no line end ever (held to 64 KiB, masked
    # as oversize once, then dropped with a bounded tail).
    loop = bytes(97 + i % 26 for i in range(64))
    out["write-loop"] = Case(r.stream().feed, [loop] * 64, 64, "feeds",
                             "   64 B feeds, one stream, no line end (write loop)")
    assert tuple(out) == CASES
    return out


def _line(case: Case, rate: float) -> str:
    if case.unit == "payloads":
        return f"{case.label}: {rate * case.size / 1e6:8.1f} MB/s  {rate:10,.0f} payloads/s"
    return f"{case.label}: {rate * case.size / 1e6:8.1f} MB/s  {rate:10,.0f} feeds/s"


def _worker(r: Redactor, seconds: float) -> None:
    """--worker: read a case name per line on stdin, answer with its rate (one measure)."""
    table = cases(r)
    print(Path(redact.__file__).resolve().parent, flush=True)  # which tree answers
    for name in sys.stdin:
        case = table[name.strip()]
        print(_measure(case.fn, case.inputs, seconds), flush=True)


def _compare(base: Path, rounds: int, seconds: float, all_options: bool) -> None:
    """A/B in one run: a worker on the tree at `base` and one on this tree, alternating
    (who goes first flips every round), `rounds` measures of each case on each side."""
    here = Path(__file__).resolve().parent.parent
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", "--seconds", str(seconds),
            *(["--all-options"] if all_options else [])]
    labels = cases(Redactor.default())  # names and labels only (this tree's Redactor)
    workers = {}
    for side, tree in (("base", base.resolve()), ("this", here)):
        # Run as a script, so `redact` comes from PYTHONPATH (the tree), not from here.
        env = {**os.environ, "PYTHONPATH": str(tree)}
        workers[side] = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, env=env, cwd=tree)
    try:
        origin = {side: _answer(w, side) for side, w in workers.items()}
        rates: dict[tuple[str, str], list[float]] = {}
        for k in range(rounds):
            for name in labels:
                for side in (("base", "this") if k % 2 == 0 else ("this", "base")):
                    w = workers[side]
                    assert w.stdin is not None and w.stdout is not None
                    w.stdin.write(name + "\n")
                    w.stdin.flush()
                    rates.setdefault((name, side), []).append(float(_answer(w, side)))
    finally:
        for w in workers.values():
            w.kill()
            w.wait()
    print(f"A/B: base = {origin['base']}, this = {origin['this']}; {rounds} rounds x {seconds} s"
          " per measure, alternating, CPU time: median (min-max) of each side, then median"
          " (min-max) of the per-round ratios this/base")
    for name, case in labels.items():
        cols = []
        for side in ("base", "this"):
            got = sorted(rates[name, side])
            cols.append(f"{_fmt(case, statistics.median(got))} "
                        f"({_fmt(case, got[0])}-{_fmt(case, got[-1])})")
        # Each round's two measures ran back to back: their ratio cancels slow load drift.
        ratios = sorted(t / b for t, b in zip(rates[name, "this"], rates[name, "base"],
                                                  strict=True))
        print(f"{case.label.strip():<48} {cols[0]:>24} -> {cols[1]:>24}  "
              f"x{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})")


def _answer(worker: subprocess.Popen[str], side: str) -> str:
    """One line from a worker; a worker that died (its stderr is shown above) stops the run."""
    assert worker.stdout is not None
    line = worker.stdout.readline().strip()
    if not line:
        raise SystemExit(f"the {side} worker exited (status {worker.wait(timeout=10)})")
    return line


def _fmt(case: Case, rate: float) -> str:
    """A rate the way the table in docs/redaction.md gives it."""
    if case.unit == "payloads" and case.size >= 4096:
        return f"{rate * case.size / 1e6:.0f}MB/s"
    return f"{rate / 1e6:.2f}M" if rate >= 1e6 else f"{rate / 1e3:.0f}k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--all-options", action="store_true", help="also redact IPs and SQL strings")
    ap.add_argument("--against", type=Path, metavar="TREE",
                    help="A/B: compare with the checkout at TREE (e.g. a `git worktree` of "
                    "main), --runs rounds alternating the two, medians and spread")
    ap.add_argument("--case", choices=CASES, help="fixed work instead of timing: run this "
                    "case --passes times over its inputs, print nothing (to count "
                    "instructions, e.g. under valgrind --tool=cachegrind; --passes 0 is the "
                    "setup to subtract)")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.against is not None:
        if not (args.against / "redact" / "__init__.py").is_file():
            ap.error(f"--against {args.against}: not a checkout (no redact/__init__.py)")
        _compare(args.against, args.runs, args.seconds, args.all_options)
        return
    r = Redactor.default(redact_ips=args.all_options, sql_string_literals=args.all_options)
    if args.worker:
        _worker(r, args.seconds)
        return
    if args.case is not None:
        case = cases(r)[args.case]
        for _ in range(args.passes):
            for p in case.inputs:
                case.fn(p)
        return
    print(f"rules: {len(r.rules)} (options {'on' if args.all_options else 'off'}), engine: "
          f"RE2 set prefilter + re on candidates; best of {args.runs} x {args.seconds}s")
    for case in cases(r).values():
        rate = max(_measure(case.fn, case.inputs, args.seconds) for _ in range(args.runs))
        print(_line(case, rate))


if __name__ == "__main__":
    main()
