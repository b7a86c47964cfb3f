"""python -m bench.l7_http: keep-alive HTTP through nginx, untraced vs traced at payload with
L7 on, side by side in one run: throughput ratio, daemon CPU per request, and whether every
request became a record (complete, not partial).

wrk drives one nginx worker over keep-alive connections with browser-sized request heads
(~560 B: longer than the default 256 B capture cap, shorter than the 1 KiB L7 cap). Rounds
alternate untraced and traced; probes stay attached between them on an idle process, so
"untraced" is nginx untargeted (it pays the kernel filter's lookup, like any untargeted
process). Each configuration is a fresh daemon: the defaults, the same with L7 off
(capture.l7 = false: no parsing, no records), without the larger per-connection cap
(l7_payload_bytes = 256), and without the rate limit.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness

NGINX = """
daemon off; master_process on; worker_processes 1;
pid {base}/nginx.pid; error_log {base}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off; client_body_temp_path {base}/body; proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fcgi; uwsgi_temp_path {base}/uwsgi; scgi_temp_path {base}/scgi;
    keepalive_requests 1000000;
    server {{ listen 127.0.0.1:{port};
             location / {{ return 200 '{{"items": [1, 2, 3], "next": null}}'; }} }}
}}
"""
# What a browser sends: the head is ~560 bytes (the bench prints it).
HEADERS = [
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9,fr;q=0.8",
    "Accept-Encoding: gzip, deflate, br",
    "Cookie: session=8c2f0a9e4b7d4c1e9a3f6b2d5e8c1a7f; theme=dark; consent=yes",
    "Referer: http://127.0.0.1/catalog/items?page=2&sort=price",
]
PATH = "/api/items?page=2&sort=price&filter=in-stock"
CONFIGS = {
    "defaults": "",
    "L7 off": "[capture]\nl7 = false\n",
    "no larger L7 cap": "[capture]\nl7_payload_bytes = 256\n",
    "no rate limit": "[capture]\nrate_limit = 0\n",
}


def wrk(port: int, seconds: float, conns: int, delay_ms: float = 0) -> tuple[int, float]:
    """(requests completed, requests/s) of one wrk run; with delay_ms each connection
    waits that long between requests (a paced load)."""
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s"]
    for h in HEADERS:
        cmd += ["-H", h]
    if delay_ms:
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text(f"function delay() return {delay_ms} end\n")
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}{PATH}"], capture_output=True,
                         text=True, check=True, timeout=seconds + 60).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return n, rps


def records(db: Path, pid: int, t0: float, t1: float) -> tuple[int, int]:
    """(L7 records, of which partial) stored for pid between t0 and t1."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        row = c.execute("SELECT COUNT(*), COALESCE(SUM(instr(body, '\"partial\":true') > 0), 0)"
                        " FROM l7 WHERE pid = ? AND ts BETWEEN ? AND ?", (pid, t0, t1)).fetchone()
    return int(row[0]), int(row[1])


def drained(d: harness.Daemon, timeout: float = 60) -> None:
    """Wait until the pipeline has handed everything to the store."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.status().get("pipeline", {}).get("backlog", 1) == 0:
            time.sleep(1.5)  # the stage's records of the last batch, and the sink
            return
        time.sleep(0.2)


def measure(name: str, config: str, port: int, pids: list[int], rounds: int, seconds: float,
            conns: int, delay_ms: float = 0) -> dict[str, Any]:
    d = harness.Daemon(config)
    try:
        with harness.sleeper() as idle, harness.session(d, [f"pid:{idle}"]):
            time.sleep(0.5)
            base: list[float] = []
            traced: list[float] = []
            cpu_per_req: list[float] = []
            cpu_per_rec: list[float] = []
            recorded: list[tuple[int, int, int]] = []
            for _ in range(rounds):
                base.append(wrk(port, seconds, conns, delay_ms)[1])
                with harness.session(d, [f"pid:{p}" for p in pids], "payload") as s:
                    time.sleep(0.5)
                    cpu0 = harness.proc_cpu_rss(d.proc.pid)[0]
                    t0 = time.time()
                    n, rps = wrk(port, seconds, conns, delay_ms)
                    t1 = time.time()
                    drained(d)
                    cpu = harness.proc_cpu_rss(d.proc.pid)[0] - cpu0
                    s.close()
                traced.append(rps)
                got, partial = records(d.base / "state" / "events.db", pids[-1], t0, t1)
                recorded.append((n, got, partial))
                cpu_per_req.append(cpu / max(n, 1) * 1e6)
                cpu_per_rec.append(cpu / max(got, 1) * 1e6)
            st = d.status()
    finally:
        d.stop()
    ratio = harness.med(traced) / harness.med(base)
    print(f"{name:18} untraced {harness.spread(base)} req/s, traced {harness.spread(traced)}"
          f" req/s, ratio {ratio:.2f}")
    for (n, got, partial), us, rec_us in zip(recorded, cpu_per_req, cpu_per_rec, strict=True):
        print(f"{'':18} {n:,} requests -> {got:,} records ({partial:,} partial), daemon "
              f"{us:.1f} µs CPU per request, {rec_us:.1f} per record")
    kernel = st.get("kernel", {})
    print(f"{'':18} kernel: skipped_rate {kernel.get('skipped_rate', 0):,}, drop_ringbuf "
          f"{kernel.get('drop_ringbuf', 0):,}, shed_overload "
          f"{kernel.get('shed_overload', 0):,}; pipeline shed "
          f"{st.get('pipeline', {}).get('payload_shed', 0):,}", flush=True)
    return {"untraced": base, "traced": traced, "ratio": ratio, "recorded": recorded,
            "cpu_us_per_request": cpu_per_req, "kernel": kernel}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.l7_http", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="each wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="untraced/traced pairs per config")
    ap.add_argument("--conns", type=int, default=4, help="keep-alive connections")
    ap.add_argument("--only", default=",".join(CONFIGS), help="configurations to run")
    ap.add_argument("--paced", type=float, default=2.0,
                    help="then the defaults at a paced load: ms each connection waits between "
                    "requests (0: skip)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("wrk") or not shutil.which("nginx"):
        print("needs root, wrk and nginx", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="periscope-l7http-"))
    port = 20000 + os.getpid() % 20000
    (base / "nginx.conf").write_text(NGINX.format(base=base, port=port))
    nginx = subprocess.Popen(["nginx", "-c", str(base / "nginx.conf"), "-p", str(base)])
    try:
        time.sleep(1)
        workers = subprocess.run(["pgrep", "-P", str(nginx.pid)], capture_output=True,
                                 text=True).stdout.split()
        pids = [nginx.pid, *(int(w) for w in workers)]
        head = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "".join(
            f"{h}\r\n" for h in HEADERS) + "\r\n"
        print(f"nginx pid {nginx.pid}, worker {pids[1:]}; request head {len(head)} B; "
              f"{a.conns} keep-alive connections; {a.rounds} rounds of {a.seconds:g} s")
        for name in a.only.split(","):
            measure(name, CONFIGS[name], port, pids, a.rounds, a.seconds, a.conns)
        if a.paced:
            print(f"paced: {a.conns} connections, each waiting {a.paced:g} ms between requests")
            measure("defaults, paced", "", port, pids, a.rounds, a.seconds, a.conns, a.paced)
    finally:
        nginx.terminate()
        nginx.wait(10)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
