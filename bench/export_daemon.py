"""Export and /metrics at the daemon level, side by side in one run (root):
`python -m bench.export_daemon [--rate N] [--seconds S] [--rounds R]`.

A real periscoped traces the paced producer (64 B writes, `payload`, rate limit off) under
each condition: /metrics off and no export (the baseline); /metrics on (the per-target RED
sink); OTLP configured but the session not exported (what the export route costs when
nobody exports); the session exported as OTLP logs to a live OTLP/HTTP receiver (its own
process); the same with a dead endpoint (accepts, never answers); exported as JSON lines.
Conditions are interleaved per round; the median round is shown. For each: the daemon's
CPU per event emitted (all its threads, from /proc), split into the pipeline threads
(pipeline, pipeline-sinks: where the sinks run) and the exporter threads, and what was
exported or dropped.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from bench import conditions as c
from bench import harness as h

POLICY = """
[roles.admin]
ops = ["*"]
max_level = "payload"
targets = ["*"]
export = "payload"

[users]
root = ["admin"]
"""
PIPELINE_THREADS = ("pipeline", "pipeline-sinks")
EXPORT_THREADS = ("otlp-convert", "otlp-send", "jsonlog")


@dataclass(frozen=True)
class Condition:
    name: str
    config: str
    export: bool


@dataclass
class Row:
    name: str
    emitted: int
    daemon_us: float      # all threads, per event emitted
    pipeline_us: float    # pipeline + pipeline-sinks threads
    export_us: float      # exporter threads
    sent: int
    dropped: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plan(receiver: int, dead: int, tmp: str) -> list[Condition]:
    metrics = f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
    otlp = ('[export.otlp]\nenabled = true\nendpoint = "http://127.0.0.1:{}"\n'
            "metrics = false\n")
    return [
        Condition("/metrics off, no export", "", False),
        Condition("/metrics on, no export", metrics, False),
        Condition("OTLP on, session not exported", metrics + otlp.format(receiver), False),
        Condition("OTLP logs, session exported", metrics + otlp.format(receiver), True),
        Condition("OTLP, endpoint dead", metrics + otlp.format(dead), True),
        Condition("JSON lines, session exported",
                  metrics + f'[export.jsonlog]\npath = "{tmp}/events.jsonl"\n', True),
    ]


def _threads(st: dict[str, Any], names: tuple[str, ...]) -> float:
    return sum(v for k, v in st["thread_cpu_s"].items() if k in names)


def measure(cond: Condition, producer: str, rate: int, secs: float) -> Row:
    # Rate limit off: the shipped per-target limit would cap the producer.
    d = h.Daemon("[capture]\nrate_limit = 0\n" + cond.config, POLICY)
    try:
        p = subprocess.Popen([producer, str(rate), str(secs), "64"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
        assert p.stdin is not None and p.stdout is not None
        pid = int(p.stdout.readline())
        with h.session(d, [f"pid:{pid}"], "payload", export=cond.export):
            before, cpu0 = d.status(), h.proc_cpu_rss(d.proc.pid)[0]
            p.stdin.write(b"g")
            p.stdin.flush()
            p.communicate()
            after = c.drain(d)
            if after.get("export") and "dead" not in cond.name:  # let them finish
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and any(after["export"]["backlog"].values()):
                    time.sleep(0.2)
                    after = d.status()
            cpu1 = h.proc_cpu_rss(d.proc.pid)[0]
        n = max(1, after["kernel"]["emitted"] - before["kernel"].get("emitted", 0))
        ex = (after.get("export") or {}).get("counters", {})
        return Row(cond.name, n, (cpu1 - cpu0) / n * 1e6,
                   (_threads(after, PIPELINE_THREADS) - _threads(before, PIPELINE_THREADS))
                   / n * 1e6,
                   (_threads(after, EXPORT_THREADS) - _threads(before, EXPORT_THREADS))
                   / n * 1e6,
                   ex.get("export_sent", 0) + ex.get("jsonlog_written", 0),
                   ex.get("export_dropped", 0) + ex.get("jsonlog_dropped", 0))
    finally:
        d.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.export_daemon", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=10_000, help="writes/s (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=5.0, help="per condition and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median shown)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the bench loads BPF programs: run it as root", file=sys.stderr)
        return 2
    bins = h.build()
    rx = subprocess.Popen([sys.executable, "-m", "bench.export", "--receiver"],
                          stdout=subprocess.PIPE, text=True, cwd=h.REPO,
                          env={**os.environ, "PYTHONPATH": str(h.REPO)})
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(128)  # never accepted: the kernel completes handshakes, nobody answers
    tmp = tempfile.TemporaryDirectory()
    try:
        assert rx.stdout is not None
        conds = plan(int(rx.stdout.readline()), hole.getsockname()[1], tmp.name)
        runs: dict[str, list[Row]] = {cd.name: [] for cd in conds}
        for _ in range(a.rounds):
            for cd in conds:
                runs[cd.name].append(measure(cd, str(bins["producer"]), a.rate, a.seconds))
    finally:
        rx.kill()
        rx.wait()
        hole.close()
        tmp.cleanup()
    print(f"\nexport and /metrics at the daemon level: producer at {a.rate:,} writes/s of 64 B "
          f"for {a.seconds:g} s, payload, {a.rounds} interleaved rounds (median round by "
          "daemon CPU; [min..max] of daemon µs/event)")
    print(f"{'condition':<32} {'events':>8} {'daemon µs/ev':>22} {'pipeline µs/ev':>15} "
          f"{'export thr µs/ev':>17} {'exported':>9} {'dropped':>8}")
    rows: dict[str, Row] = {}
    for name, rs in runs.items():
        rs.sort(key=lambda r: r.daemon_us)
        r = rows[name] = rs[len(rs) // 2]
        spread = f"{r.daemon_us:6.2f} [{rs[0].daemon_us:.2f}..{rs[-1].daemon_us:.2f}]"
        print(f"{name:<32} {r.emitted:>8,} {spread:>22} {r.pipeline_us:>15.2f} "
              f"{r.export_us:>17.2f} {r.sent:>9,} {r.dropped:>8,}")
    base = rows["/metrics off, no export"]
    for name, r in rows.items():
        if r is not base:
            print(f"  {name}: daemon CPU per event {r.daemon_us / base.daemon_us:.2f}x the "
                  f"baseline, pipeline threads {r.pipeline_us / base.pipeline_us:.2f}x")
    med = statistics.median(r.daemon_us for r in runs["/metrics off, no export"])
    print(f"  (baseline median over rounds: {med:.2f} µs/event)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
