"""python -m bench.cost: the daemon's CPU per event, this tree against another, side by side.

One target writes 256-byte HTTP request heads (bench/workload/producer.c "http") at a
paced rate, traced at `payload` with the rate limit off, one live session reading
everything (batch frames where the daemon has them); every event is redacted, stored and
streamed. Per run: the daemon's CPU (all threads, /proc/PID/stat) from the workload's
"go" until the pipeline has drained, divided by the events it received; the events the
session got; drops; the store's bytes on disk per stored event; time to the first event
of the first session after READY. Trees alternate each round (the machine is shared).

  .venv/bin/python -m bench.cost --base /tmp/perf-base --rate 20000 --secs 5 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import conditions as c
from bench import harness as h


def run_once(repo: Path, bins: dict[str, Path], rate: int, secs: float, size: int,
             content: str) -> dict[str, Any]:
    d = h.Daemon("[capture]\nrate_limit = 0\n", repo=repo)
    try:
        p = subprocess.Popen([str(bins["producer"]), str(rate), str(secs), str(size), content],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert p.stdin is not None and p.stdout is not None
        pid = int(p.stdout.readline())
        asked = time.monotonic()
        with h.session(d, [f"pid:{pid}"], "payload") as s:
            attached = time.monotonic() - asked
            cpu0, _rss = h.proc_cpu_rss(d.proc.pid)
            p.stdin.write(b"g")
            p.stdin.flush()
            go = time.monotonic()
            p.communicate()
            st = c.drain(d)
            cpu1, rss = h.proc_cpu_rss(d.proc.pid)
            time.sleep(0.3)
            first = (s.first_s - go) if s.first_s else None
            got = s.lines
        d.request("events", {"limit": 1})  # the store writes its pending block
        state = d.base / "state"
        disk = sum(f.stat().st_size for f in state.glob("events.db*"))
        stored = d.status()["stored_events"]
        received = st["pipeline"].get("received", 0)
        drops = (st["kernel"].get("drop_ringbuf", 0) + st["pipeline"].get("dropped_overload", 0))
        return {"us_per_event": (cpu1 - cpu0) / max(1, received) * 1e6, "received": received,
                "exported": got, "drops": drops, "shed": st["pipeline"].get("payload_shed", 0),
                "bytes_per_event": disk / max(1, stored), "rss_mb": rss / 2**20,
                "attach_s": attached, "first_event_s": first}
    finally:
        d.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, help="the other tree (a git worktree of the base)")
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--content", choices=("http", "alpha"), default="http")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the bench loads BPF programs: run it as root", file=sys.stderr)
        return 2
    bins = h.build()
    trees = {"this": h.REPO} | ({"base": a.base} if a.base else {})
    res: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
    for r in range(a.rounds):
        order = list(trees)
        random.shuffle(order)
        for name in order:
            got = run_once(trees[name], bins, a.rate, a.secs, a.size, a.content)
            res[name].append(got)
            print(f"round {r + 1} {name:>5}: {got['us_per_event']:6.2f} µs/event, "
                  f"received {got['received']:,} exported {got['exported']:,} drops "
                  f"{got['drops']:,} shed {got['shed']:,}, {got['bytes_per_event']:.0f} B/event "
                  f"on disk, RSS {got['rss_mb']:.0f} MB, attach {got['attach_s']:.2f} s",
                  flush=True)
    print(f"\n{a.rate:,}/s x {a.secs:g} s, {a.size} B {a.content} writes, payload, one session:")
    for name, runs in res.items():
        for key in ("us_per_event", "bytes_per_event", "rss_mb", "attach_s"):
            print(f"  {name:>5} {key:<16} {h.spread([x[key] for x in runs])}"
                  if key != "us_per_event" else
                  f"  {name:>5} {key:<16} " + h.spread_f([x[key] for x in runs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
