"""python -m bench [--quick] [--only PART,...]: run the benchmarks (PARTS below).

Every part measures its conditions side by side in this one invocation and prints
ratios; raw samples go to bench/results/results.json and the plot to bench/overhead.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import daemon_cost, harness, ingest, overhead
from bench.plot import plot

PARTS = ("overhead", "tcp", "ingest", "daemon", "redaction", "l7", "l7http", "l7store",
         "export")


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), "?")
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return (f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
            f"{mem} MB RAM, Python {platform.python_version()}")


def lap(started: float) -> None:
    print(f"  [{time.monotonic() - started:.0f} s elapsed]", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (~2 min)")
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    ap.add_argument("--plot", type=Path, default=None,
                    help="PNG path (default: bench/overhead.png for a full run, "
                    "bench/results/overhead-quick.png for --quick)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the bench loads BPF programs: run it as root", file=sys.stderr)
        return 2
    parts = set(a.only.split(","))
    started = time.monotonic()
    print(machine())
    print(f"tree measured: {harness.REPO}; mode: {'quick' if a.quick else 'full'}", flush=True)
    bins = harness.build()
    plan = overhead.QUICK if a.quick else overhead.FULL
    res: dict[str, Any] = {"machine": machine(), "quick": a.quick}
    if "overhead" in parts:
        print("\n== 1+2. write(2) overhead: untargeted, floors, targeted ==", flush=True)
        res["overhead"] = overhead.writes(plan, bins)
        print("\n== 1+2. getppid(2), not traced: what every other syscall pays ==", flush=True)
        res["untraced"] = overhead.untraced(plan, bins)
    lap(started)
    if "tcp" in parts:
        print("\n== 2. TCP request/response throughput ==", flush=True)
        res["tcp"] = overhead.tcp(plan, bins)
        res["tcp_pinned"] = overhead.tcp(plan, bins, pin=True)
    lap(started)
    if "ingest" in parts:
        print("\n== 3. ingest ceiling and pipeline stages ==", flush=True)
        res["per_call"] = ingest.per_call(bins, 10_000, 1.5 if a.quick else 5.0,
                                          2 if a.quick else 4)
        res["stages"] = ingest.stages(10_000 if a.quick else 100_000)
        ingest.print_stages(res["stages"])
        rates = [5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 400_000]
        if a.quick:
            rates = [10_000, 20_000, 50_000]
        res["ingest"] = ingest.sweep(bins, rates, 1.0 if a.quick else 5.0,
                                     3.0 if a.quick else 30.0)
    lap(started)
    if "daemon" in parts:
        print("\n== 4. daemon cost ==", flush=True)
        res["daemon"] = daemon_cost.run(bins, a.quick)
    lap(started)
    if "redaction" in parts:
        print("\n== redaction throughput (bench/redaction.py) ==", flush=True)
        import subprocess

        quick = ["--runs", "1", "--seconds", "0.5"] if a.quick else []
        subprocess.run([sys.executable, "-m", "bench.redaction", *quick], check=False,
                       env={**os.environ, "PYTHONPATH": str(harness.REPO)})
    if "l7" in parts:
        print("\n== L7 parsers (bench/l7.py) ==", flush=True)
        import subprocess

        subprocess.run([sys.executable, "-m", "bench.l7", "--seconds",
                        "0.5" if a.quick else "1.5"], check=False,
                       env={**os.environ, "PYTHONPATH": str(harness.REPO)})
    for part, module, quick in (("l7http", "bench.l7_http", ["--rounds", "1", "--seconds", "3"]),
                                ("l7store", "bench.l7_store", ["--rows", "100000"])):
        if part in parts:
            print(f"\n== {part} ({module.replace('.', '/')}.py) ==", flush=True)
            import subprocess

            subprocess.run([sys.executable, "-m", module, *(quick if a.quick else [])],
                           check=False, env={**os.environ, "PYTHONPATH": str(harness.REPO)})
    if "export" in parts:
        print("\n== export and /metrics, daemon level (bench/export_daemon.py) ==", flush=True)
        import subprocess

        quick = ["--rounds", "1", "--seconds", "2"] if a.quick else []
        subprocess.run([sys.executable, "-m", "bench.export_daemon", *quick], check=False,
                       env={**os.environ, "PYTHONPATH": str(harness.REPO)})
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    out = harness.RESULTS / "results.json"
    out.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    dest = a.plot or (harness.RESULTS / "overhead-quick.png" if a.quick
                      else harness.BENCH / "overhead.png")
    png = plot(res, dest) if {"overhead", "ingest"} <= parts else None
    print(f"\nresults: {out}{'; plot: ' + str(png) if png else ''}; "
          f"took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
