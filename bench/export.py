"""Export cost, side by side in one run: `python -m bench.export [--events N]` (no root).

Real kernel-record bytes go through the real pipeline core (decode, redact, enrich,
serialize once per batch) and its sinks, on this thread, as the pipeline's threads do; conditions:
OTLP off, OTLP on (logs) to a live OTLP/HTTP receiver (a separate process, so its CPU is
not ours), OTLP on with a dead endpoint (accepts, never answers), the JSON log file, and
L7 records as spans + RED metrics; and the per-target RED sink of /metrics
(collector/serve/red.py), which runs on the pipeline's sink thread. For each: the pipeline
thread's CPU per event, the sink call's own cost per event (what it adds to the pipeline),
the export threads' CPU per item, and what was sent and dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from collector import config
from collector.capture.events import Batch
from collector.capture.pipeline import Pipeline
from collector.proc.facts import Enricher
from probes.layout import F_DATA_OUT, F_PAYLOAD, HDR, LAYOUT_VERSION, SYS, Op, Sc
from redact import Redactor

BATCH = 256
PAYLOAD = (b"POST /api/login HTTP/1.1\r\nHost: shop.example\r\nAuthorization: Bearer "
           b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl\r\n\r\n")


def record(i: int) -> bytes:
    """A write(2) by this process as the probe emits it: every other one carries PAYLOAD
    (a payload-level session), the rest are meta only."""
    data = PAYLOAD if i % 2 else b""
    body = SYS.pack(int(Sc.WRITE), (F_PAYLOAD if data else 0) | F_DATA_OUT, 5, len(PAYLOAD),
                    1500, len(PAYLOAD), len(data), 0)
    return HDR.pack(int(Op.SYSCALL), LAYOUT_VERSION, HDR.size + len(body) + len(data), 1,
                    10**9 + i * 1000, os.getpid(), os.getpid(), 0, b"bench") + body + data


def l7_record(i: int) -> dict[str, Any]:
    return {"ts": time.time(), "pid": os.getpid(), "comm": "bench", "unit": "bench.service",
            "proto": "http", "conn": "fd:5", "peer": "10.0.0.2:40000", "role": "server",
            "latency_ms": 1.0 + i % 50, "req_bytes": 120, "resp_bytes": 900, "partial": False,
            "error": i % 20 == 0, "method": "POST", "path": "/api/login?token=[REDACTED]",
            "status": 500 if i % 20 == 0 else 200, "target": 1}


@dataclasses.dataclass
class Row:
    name: str
    items: int
    pipeline_us: float        # pipeline thread CPU per event (decode..sinks), or 0 for L7
    sink_ns: float            # the export sink call alone, per item, on the caller's thread
    worker_us: float          # export threads' CPU per item offered
    sent: int
    dropped: int


def run(name: str, n: int, make: Callable[[], Any] | None, l7: bool = False) -> Row:
    sink = make() if make else None
    pipe = Pipeline(Redactor.default(), [], Enricher())
    if l7:
        work: list[Any] = [[l7_record(s + i) for i in range(min(BATCH, n - s))]
                           for s in range(0, n, BATCH)]
    else:
        work = [[record(s + i) for i in range(min(BATCH, n - s))] for s in range(0, n, BATCH)]
    if sink is not None:
        sink.start()
    # Every other thread of this process is an export thread (the receiver is another
    # process): their CPU is the process's minus this thread's, ended threads included.
    proc0, main0 = time.process_time(), time.thread_time()
    sink_ns = 0
    for batch in work:
        if l7:
            assert sink is not None
            t = time.thread_time_ns()
            sink.requests(batch)
            sink_ns += time.thread_time_ns() - t
        else:
            events = pipe.process(batch)
            Batch(events).json()  # the pipeline's one serialization per batch (the store's)
            if sink is not None:
                t = time.thread_time_ns()
                sink(events)
                sink_ns += time.thread_time_ns() - t
        # Pace the bench (not the sink): stay under the queue so the worker's CPU per item
        # is measured on items it exports, not on drops. The dead endpoint is not paced.
        while sink is not None and "dead" not in name and sink.backlog() > 4096:
            time.sleep(0.002)
    pipeline_s = time.thread_time() - main0
    if sink is not None:
        sink.close(60 if "dead" not in name else 0.5)
    main_s = time.thread_time() - main0
    worker_s = (time.process_time() - proc0) - main_s
    c = getattr(sink, "counters", {})
    sent = c.get("export_sent", 0) + c.get("export_metrics_only", 0) + c.get(
        "jsonlog_written", 0)
    dropped = c.get("export_dropped", 0) + c.get("jsonlog_dropped", 0)
    return Row(name, n, 0.0 if l7 else pipeline_s / n * 1e6, sink_ns / n,
               worker_s / n * 1e6 if sink is not None else 0.0, sent, dropped)


class RedSink:
    """The /metrics per-target sink, shaped like an exporter for run()."""

    def __init__(self) -> None:
        from collector.serve.red import TargetRed

        self.red = TargetRed(50)
        self.counters: dict[str, int] = {}

    def __call__(self, events: list[Any]) -> None:
        self.red(Batch(events))

    def start(self) -> None:
        pass

    def backlog(self) -> int:
        return 0

    def close(self, _timeout: float) -> None:
        pass


def median(rows: list[Row]) -> Row:
    """The round with the median pipeline cost (the export threads' for L7)."""
    return sorted(rows, key=lambda r: (r.pipeline_us, r.worker_us))[len(rows) // 2]


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def receive() -> None:
    """The OTLP/HTTP endpoint (its own process): reads each request, answers 200."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000,
                    help="events per condition and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median shown)")
    ap.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.receiver:
        receive()
        return 0
    rx = subprocess.Popen([sys.executable, "-m", "bench.export", "--receiver"],
                          stdout=subprocess.PIPE, text=True)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(128)  # never accepted by us: the kernel completes handshakes, nobody answers
    tmp = tempfile.TemporaryDirectory()
    try:
        assert rx.stdout is not None
        port = int(rx.stdout.readline())
        base = dataclasses.replace(config.load(text="").export.otlp, enabled=True,
                                   endpoint=f"http://127.0.0.1:{port}", metrics=False)
        dead = dataclasses.replace(base, endpoint=f"http://127.0.0.1:{hole.getsockname()[1]}")
        red = dataclasses.replace(base, metrics=True, metrics_interval_s=1.0)

        def otlp(cfg: config.OtlpExport) -> Callable[[], Any]:
            from collector.export.otlp import OtlpExporter  # the SDK loads only when used
            return lambda: OtlpExporter(cfg, session_of=lambda _t: "bench")

        def jsonlog() -> Any:
            from collector.export.jsonlog import JsonLogSink, RotatingFile
            return JsonLogSink(RotatingFile(f"{tmp.name}/events.jsonl", 1 << 30, 1), 8192)

        n = a.events
        plan: list[tuple[str, Callable[[], Any] | None, bool]] = [
            ("OTLP off", None, False), ("OTLP on (logs)", otlp(base), False),
            ("OTLP on, endpoint dead", otlp(dead), False), ("JSON log file", jsonlog, False),
            ("L7 -> spans + RED", otlp(red), True), ("/metrics per-target RED", RedSink, False)]
        # Rounds interleave the conditions, so a noisy neighbour hits them all alike; the
        # median round of each is reported.
        runs: dict[str, list[Row]] = {name: [] for name, _m, _l in plan}
        for _ in range(a.rounds):
            for name, make, l7 in plan:
                runs[name].append(run(name, n, make, l7))
    finally:
        rx.kill()
        rx.wait()
        hole.close()
        tmp.cleanup()
    rows = [median(rs) for rs in runs.values()]
    print(f"{n:,} items per condition and round, {a.rounds} rounds (median shown), batches of "
          f"{BATCH}; CPU time from thread clocks, not wall time")
    print(f"{'condition':<26} {'pipeline µs/ev':>14} {'sink call ns/item':>18} "
          f"{'export threads µs/item':>23} {'sent':>8} {'dropped':>8}")
    for r in rows:
        pipe = f"{r.pipeline_us:.2f}" if r.pipeline_us else "-"
        print(f"{r.name:<26} {pipe:>14} {r.sink_ns:>18.0f} {r.worker_us:>23.2f} "
              f"{r.sent:>8,} {r.dropped:>8,}")
    off, on = rows[0], rows[1]
    print(f"OTLP logs on vs off: pipeline thread {on.pipeline_us / off.pipeline_us:.2f}x; "
          f"daemon CPU per event (pipeline + export threads) "
          f"{(on.pipeline_us + on.worker_us) / off.pipeline_us:.2f}x; the sink call is "
          f"{on.sink_ns / 1000 / off.pipeline_us:.1%} of the pipeline's per-event cost")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
