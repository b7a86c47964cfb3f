"""python -m bench.first_event: time to READY and from `trace` to the first event, for the
first session after a daemon start, with the probe cache cold (a fresh state dir: the
probes compile), warm (the cache an earlier start wrote) and installed (a fresh state dir
that `periscoped --warm-cache` filled first, as make install does; the warm-up is timed
too), this tree against another (a tree without --warm-cache runs cold and warm only).

The session is opened the moment the daemon is READY, on a process already writing
1,000 times a second, so it meets the preload wherever it is. Trees and modes alternate.
Each run also says whether the daemon's preload loaded from the cache ("cache") or
compiled ("compile"), from its log.

  .venv/bin/python -m bench.first_event --base /tmp/perf-base --rounds 3
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness as h

CONFIG = '[metrics]\nlisten = ""\n'  # what h.Daemon runs with: the warm-up must use the same


def warm_up(repo: Path) -> tuple[Path, float]:
    """`periscoped --warm-cache` into a fresh state dir, as make install runs it; returns
    (its probe cache, seconds)."""
    base = Path(tempfile.mkdtemp(prefix="periscope-warm-"))
    (base / "p.toml").write_text(CONFIG)
    started = time.monotonic()
    r = subprocess.run([h.PY, "-m", "collector.daemon", "--warm-cache", "--config",
                        str(base / "p.toml"), "--state-dir", str(base / "state")],
                       capture_output=True, text=True, cwd=repo,
                       env={**os.environ, "PYTHONPATH": str(repo)})
    took = time.monotonic() - started
    if r.returncode != 0:
        raise RuntimeError(f"--warm-cache exited {r.returncode}:\n{r.stderr[-2000:]}")
    return base / "state" / "probe-cache", took


def run_once(repo: Path, bins: dict[str, Path], cache: Path | None) -> dict[str, Any]:
    p = subprocess.Popen([str(bins["producer"]), "1000", "60", "64"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    pid = int(p.stdout.readline())
    p.stdin.write(b"g")
    p.stdin.flush()
    d = h.Daemon(repo=repo, probe_cache=cache)
    try:
        asked = time.monotonic()
        with h.session(d, [f"pid:{pid}"], "meta") as s:
            deadline = time.monotonic() + 120
            while s.first_s is None and time.monotonic() < deadline:
                time.sleep(0.002)
            first = s.first_s - asked if s.first_s else float("nan")
        saved = d.base / "state" / "probe-cache"
        kept = None
        if saved.is_dir():
            kept = Path(tempfile.mkdtemp(prefix="periscope-cache-")) / "c"
            shutil.copytree(saved, kept)
        log = d.log.read_text(errors="replace")
        loaded = "cache" if "loaded from the cache ahead" in log else (
            "compile" if "compiled and loaded ahead" in log else "?")
        return {"ready_s": d.ready_s, "first_event_s": first, "cache": kept, "loaded": loaded}
    finally:
        d.stop()
        p.kill()
        p.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.first_event", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, help="the other tree (a git worktree of the base)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the bench loads BPF programs: run it as root", file=sys.stderr)
        return 2
    bins = h.build()
    trees = {"this": h.REPO} | ({"base": a.base} if a.base else {})
    caches: dict[str, Path | None] = {}
    res: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for name, repo in trees.items():  # one cold start each leaves the cache the warm ones use
        got = run_once(repo, bins, None)
        caches[name] = got["cache"]
    warmups: dict[str, list[float]] = {}
    for r in range(a.rounds):
        order = [(n, m) for n in trees for m in ("cold", "warm", "installed")
                 if m != "installed" or (trees[n] / "collector/daemon/probecache.py").exists()]
        random.shuffle(order)
        for name, mode in order:
            cache, extra = caches[name] if mode == "warm" else None, ""
            if mode == "installed":
                cache, took = warm_up(trees[name])
                warmups.setdefault(name, []).append(took)
                extra = f" (warm-up {took:.2f} s)"
            try:
                got = run_once(trees[name], bins, cache)
            finally:
                if mode == "installed" and cache is not None:
                    shutil.rmtree(cache.parent.parent, ignore_errors=True)
            res.setdefault((name, mode), []).append(got)
            print(f"round {r + 1} {name:>5} {mode}: READY {got['ready_s']:.2f} s, first event "
                  f"{got['first_event_s']:.2f} s after trace, preload from "
                  f"{got['loaded']}{extra}", flush=True)
            if got["cache"] is not None:  # only the first runs' copies serve later ones
                shutil.rmtree(got["cache"].parent, ignore_errors=True)
    print("\nfirst session after start: READY, and trace -> first event (s):")
    for (name, mode), runs in sorted(res.items()):
        print(f"  {name:>5} {mode:<9} READY {h.spread_f([x['ready_s'] for x in runs])}   "
              f"first event {h.spread_f([x['first_event_s'] for x in runs])}   preload from "
              f"{','.join(sorted({x['loaded'] for x in runs}))}")
    for name, times in warmups.items():
        print(f"  {name:>5} warm-up (periscoped --warm-cache) {h.spread_f(times)} s")
    for c in caches.values():
        if c is not None:
            shutil.rmtree(c.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
