"""python -m bench.cost: the daemon's CPU per event, this tree against another, side by side.

One target writes 256-byte HTTP request heads (bench/workload/producer.c "http") at a
paced rate, traced at `payload` with the rate limit off, one live session reading
everything (batch frames where the daemon has them); every event is redacted, stored and
streamed. Per run: the daemon's CPU (all threads, /proc/PID/stat) from the workload's
"go" until the pipeline has drained, divided by the events it received; the events the
session got; drops; the store's bytes on disk per stored event; time to the first event
of the first session after READY. Trees alternate each round (the machine is shared).

With --bpf-stats (kernel.bpf_stats_enabled=1 for the run, restored after) the kernel also
times every run of the daemon's programs (read from /proc/PID/fdinfo): their ns per event
received is the kernel side's cost per event (record header, ring reserve and submit),
which the daemon's CPU does not include. It counts every run in the window, untargeted
processes' syscalls too (filtered out early), so it is an upper bound on a shared machine.

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

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def kernel_ns(pid: int) -> int:
    """Sum of run_time_ns over the BPF programs process pid holds (0 unless
    kernel.bpf_stats_enabled is 1)."""
    total = 0
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue  # closed meanwhile
        if "prog_type:" in text:
            total += sum(int(line.split()[1]) for line in text.splitlines()
                         if line.startswith("run_time_ns:"))
    return total


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
            k0 = kernel_ns(d.proc.pid)
            p.stdin.write(b"g")
            p.stdin.flush()
            go = time.monotonic()
            p.communicate()
            st = c.drain(d)
            cpu1, rss = h.proc_cpu_rss(d.proc.pid)
            k1 = kernel_ns(d.proc.pid)
            time.sleep(0.3)
            first = (s.first_s - go) if s.first_s else None
            got = s.lines
        d.request("events", {"limit": 1})  # the store writes its pending block
        state = d.base / "state"
        disk = sum(f.stat().st_size for f in state.glob("events.db*"))
        stored = d.status()["stored_events"]
        received = st["pipeline"].get("received", 0)
        drops = (st["kernel"].get("drop_ringbuf", 0) + st["kernel"].get("shed_overload", 0)
                 + st["pipeline"].get("dropped_overload", 0))
        return {"us_per_event": (cpu1 - cpu0) / max(1, received) * 1e6, "received": received,
                "kernel_ns_per_event": (k1 - k0) / max(1, received),
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
    ap.add_argument("--bpf-stats", action="store_true",
                    help="also time the kernel side (kernel.bpf_stats_enabled for the run)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the bench loads BPF programs: run it as root", file=sys.stderr)
        return 2
    was = STATS.read_text() if a.bpf_stats else None
    if a.bpf_stats:
        STATS.write_text("1")
    try:
        return _run(a)
    finally:
        if was is not None:
            STATS.write_text(was)


def _run(a: argparse.Namespace) -> int:
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
                  f"{got['drops']:,} shed {got['shed']:,}, kernel "
                  f"{got['kernel_ns_per_event']:.0f} ns/event, "
                  f"{got['bytes_per_event']:.0f} B/event on disk, RSS {got['rss_mb']:.0f} MB, "
                  f"attach {got['attach_s']:.2f} s",
                  flush=True)
    print(f"\n{a.rate:,}/s x {a.secs:g} s, {a.size} B {a.content} writes, payload, one session:")
    for name, runs in res.items():
        for key in ("us_per_event", "kernel_ns_per_event", "bytes_per_event", "rss_mb",
                    "attach_s"):
            print(f"  {name:>5} {key:<19} {h.spread([x[key] for x in runs])}"
                  if key not in ("us_per_event", "attach_s") else
                  f"  {name:>5} {key:<19} " + h.spread_f([x[key] for x in runs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
