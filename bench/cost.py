"""python -m bench.cost: the daemon's CPU per event, this tree against another, side by side.

One target writes 256-byte HTTP request heads (bench/workload/producer.c "http") at a
paced rate, traced at `payload` with the rate limit off, one live session reading
everything (batch frames where the daemon has them); every event is redacted, stored and
streamed. Per run: the daemon's CPU (all threads, /proc/PID/stat) from the workload's
"go" until the pipeline has drained, divided by the events it received; the events the
session got; drops; the store's bytes on disk per stored event; time to the first event
of the first session after READY. Trees alternate each round (the machine is shared).

With --window W the daemon's own per-thread CPU (status "thread_cpu_s") is also read over
W seconds in the middle of each run (from --skip s after go), divided by the events
received meanwhile: a steady-state figure per thread, which resolves a change of ~0.1 µs
that the whole-run figure (startup and drain included, 10 ms ticks) does not:

  .venv/bin/python -m bench.cost --base /tmp/perf-base --secs 25 --window 15 --rounds 2 \
      --content alpha

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


def thread_window(d: h.Daemon, skip: float, window: float) -> dict[str, float]:
    """µs of daemon CPU per event received, per thread and in total ("all"), over `window`
    seconds starting `skip` seconds from now (the workload running meanwhile)."""
    time.sleep(skip)
    s0 = d.status()
    time.sleep(window)
    s1 = d.status()
    n = max(1, s1["pipeline"].get("received", 0) - s0["pipeline"].get("received", 0))
    t0, t1 = s0.get("thread_cpu_s", {}), s1.get("thread_cpu_s", {})
    out = {name: (cpu - t0.get(name, 0.0)) / n * 1e6 for name, cpu in t1.items()
           if cpu - t0.get(name, 0.0) > 0}
    out["all"] = sum(out.values())
    return out


def run_once(repo: Path, bins: dict[str, Path], rate: int, secs: float, size: int,
             content: str, window: float = 0.0, skip: float = 6.0) -> dict[str, Any]:
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
            threads = thread_window(d, skip, window) if window else {}
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
                "attach_s": attached, "first_event_s": first, "threads": threads}
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
    ap.add_argument("--window", type=float, default=0.0,
                    help="also read the daemon's per-thread CPU over this many seconds "
                    "mid-run (needs --secs >= --skip + --window)")
    ap.add_argument("--skip", type=float, default=6.0,
                    help="seconds after go before the --window starts")
    ap.add_argument("--bpf-stats", action="store_true",
                    help="also time the kernel side (kernel.bpf_stats_enabled for the run)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the bench loads BPF programs: run it as root", file=sys.stderr)
        return 2
    if a.window and a.secs < a.skip + a.window:
        ap.error(f"--window {a.window:g} needs --secs >= {a.skip + a.window:g} (--skip + "
                 "--window): the window must end before the workload does")
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
            got = run_once(trees[name], bins, a.rate, a.secs, a.size, a.content, a.window,
                           a.skip)
            res[name].append(got)
            print(f"round {r + 1} {name:>5}: {got['us_per_event']:6.2f} µs/event, "
                  f"received {got['received']:,} exported {got['exported']:,} drops "
                  f"{got['drops']:,} shed {got['shed']:,}, kernel "
                  f"{got['kernel_ns_per_event']:.0f} ns/event, "
                  f"{got['bytes_per_event']:.0f} B/event on disk, RSS {got['rss_mb']:.0f} MB, "
                  f"attach {got['attach_s']:.2f} s",
                  flush=True)
            if got["threads"]:
                print(f"{'':13} window: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(got["threads"].items(),
                                                      key=lambda kv: -kv[1])) + " µs/event")
    print(f"\n{a.rate:,}/s x {a.secs:g} s, {a.size} B {a.content} writes, payload, one session:")
    for name, runs in res.items():
        for key in ("us_per_event", "kernel_ns_per_event", "bytes_per_event", "rss_mb",
                    "attach_s"):
            print(f"  {name:>5} {key:<19} {h.spread([x[key] for x in runs])}"
                  if key not in ("us_per_event", "attach_s") else
                  f"  {name:>5} {key:<19} " + h.spread_f([x[key] for x in runs]))
        names = sorted({t for x in runs for t in x["threads"]},
                       key=lambda t: -max(x["threads"].get(t, 0.0) for x in runs))
        for t in names:  # per thread over the --window: each run's figure, in order
            print(f"  {name:>5} window {t:<15} " + ", ".join(
                f"{x['threads'].get(t, 0.0):.2f}" for x in runs) + " µs/event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
