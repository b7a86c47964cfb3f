"""python -m bench.profile: what a 99 Hz CPU profile costs a CPU-bound target.

Three conditions, run side by side in interleaved rounds (shuffled each round), on the
same compiled loop (bench/workload/cpuloop.c, frame pointers on, so every sample walks
the whole stack): untraced (no perf event), profiled (the target is sampled at 99 Hz on
every CPU) and attached-untargeted (the events run, the target is not in the map: what
every other process on the host pays). The loop times itself (wall and CPU time, from
its "go" to its end) so process start and probe attach are not in the numbers. Reports
medians and minimums and their ratio to untraced; target: profiled <= 1.01.

On a shared machine the ratios carry the neighbours' noise, so the program's own cost is
also measured directly: with kernel.bpf_stats_enabled=1 (set for the run, restored
after) the kernel times every run of the program; ns per run x runs per second is the
CPU share it takes, without the noise (the perf interrupt around it is not included).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import BENCH, med
from probes.profile import Profiler

CONDITIONS = ("untraced", "profiled 99 Hz", "attached, untargeted")


def build(tmp: Path) -> Path:
    exe = tmp / "cpuloop"
    subprocess.run(["gcc", "-O1", "-fno-omit-frame-pointer", "-o", str(exe),
                    str(BENCH / "workload" / "cpuloop.c")], check=True)
    return exe


STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def run_once(exe: Path, rounds: int, prof: Profiler, condition: str,
             freq: int) -> tuple[float, float, int, int]:
    """(wall ms, cpu ms, program ns, program runs) of one run of the loop under condition."""
    proc = subprocess.Popen([str(exe), str(rounds)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        if condition != "untraced":
            prof.start([proc.pid] if condition.startswith("profiled") else [], freq)
        ns0, runs0 = prof.run_stats()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        wall_ns, cpu_ns = map(int, proc.stdout.readline().split())
        ns1, runs1 = prof.run_stats()
    finally:
        prof.stop()
        proc.wait()
    return wall_ns / 1e6, cpu_ns / 1e6, ns1 - ns0, runs1 - runs0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=21, help="interleaved rounds (default 21)")
    ap.add_argument("--loop", type=int, default=60,
                    help="loop rounds per run (~15 ms each; default 60)")
    ap.add_argument("--freq", type=int, default=99)
    args = ap.parse_args(argv)
    old_stats = STATS.read_text()
    with tempfile.TemporaryDirectory(prefix="periscope-bench-") as tmp, Profiler() as prof:
        exe = build(Path(tmp))
        prof.load()
        res: dict[str, list[tuple[float, float, int, int]]] = {c: [] for c in CONDITIONS}
        try:
            STATS.write_text("1")
            for r in range(args.rounds):
                order = list(CONDITIONS)
                random.shuffle(order)
                for cond in order:
                    res[cond].append(run_once(exe, args.loop, prof, cond, args.freq))
                print(f"  round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{c} {res[c][-1][0]:.0f} ms" for c in CONDITIONS), flush=True)
        finally:
            STATS.write_text(old_stats)
        samples = prof.stats()["samples"]
    base = {k: (med(v), min(v)) for k, v in (
        ("wall", [x[0] for x in res["untraced"]]), ("cpu", [x[1] for x in res["untraced"]]))}
    print(f"\nCPU-bound loop, {args.rounds} interleaved rounds ({samples} samples of the "
          f"profiled runs at {args.freq} Hz); ratio = condition / untraced:")
    print(f"{'condition':<22} {'wall med':>9} {'ratio':>7} {'wall min':>9} {'ratio':>7} "
          f"{'cpu med':>8} {'ratio':>7} {'cpu min':>8} {'ratio':>7} {'ns/run':>7}")
    for cond in CONDITIONS:
        rows = res[cond]
        cells = []
        for i, k in ((0, "wall"), (1, "cpu")):
            m, lo = med([x[i] for x in rows]), min(x[i] for x in rows)
            cells += [f"{m:>8.1f}", f"{m / base[k][0]:>7.4f}", f"{lo:>8.1f}",
                      f"{lo / base[k][1]:>7.4f}"]
        ns, runs = sum(x[2] for x in rows), sum(x[3] for x in rows)
        per = f"{ns / runs:>7.0f}" if runs else f"{'-':>7}"
        print(f"{cond:<22} " + " ".join(cells) + f" {per}")
    ns = sum(x[2] for x in res["profiled 99 Hz"])
    runs = sum(x[3] for x in res["profiled 99 Hz"])
    if runs:
        share = ns / runs * args.freq / 1e9
        print(f"\nprogram cost while profiling: {ns / runs:.0f} ns per sample x {args.freq} "
              f"Hz = {100 * share:.4f} % of each CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
