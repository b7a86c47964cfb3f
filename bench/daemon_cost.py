"""Part 4: periscoped's own cost: startup to READY, probe load, CPU% and RSS at idle,
with probes attached, and while a target produces 10k and 100k events/s."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from bench import conditions as c
from bench import harness as h

ANON: dict[int, int] = {}  # pid -> peak anonymous RSS seen by the last _sample


def _sample(pid: int, secs: float) -> tuple[float, int]:
    """(CPU % of one core, peak RSS bytes) of pid over secs."""
    cpu0, rss = h.proc_cpu_rss(pid)
    t0 = time.monotonic()
    peak, anon = rss, h.rss_anon(pid)
    while time.monotonic() - t0 < secs:
        time.sleep(0.1)
        _, rss = h.proc_cpu_rss(pid)
        peak, anon = max(peak, rss), max(anon, h.rss_anon(pid))
    cpu1, rss = h.proc_cpu_rss(pid)
    ANON[pid] = anon
    return 100 * (cpu1 - cpu0) / (time.monotonic() - t0), max(peak, rss)


def startup(repeats: int) -> dict[str, list[float]]:
    ready, load = [], []
    for _ in range(repeats):
        d = h.Daemon()
        ready.append(d.ready_s)
        with h.sleeper() as pid, h.session(d, [f"pid:{pid}"]) as s:
            load.append(float(s.head["probe_load_s"]))
        d.stop()
    return {"ready_s": ready, "probe_load_s": load}


def at_rate(bins: dict[str, Any], rate: int, secs: float) -> dict[str, Any]:
    d = h.Daemon()
    try:
        p = subprocess.Popen([str(bins["producer"]), str(rate), str(secs + 1), "64"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert p.stdin is not None and p.stdout is not None
        pid = int(p.stdout.readline())
        with h.session(d, [f"pid:{pid}"]) as s:
            p.stdin.write(b"g")
            p.stdin.flush()
            time.sleep(0.5)  # skip the ramp
            cpu, rss = _sample(d.proc.pid, secs)
            p.communicate()
            st = c.drain(d)
        return {"rate": rate, "cpu_pct": cpu, "rss_mb": rss / 2**20,
                "anon_mb": ANON[d.proc.pid] / 2**20,
                "emitted": st["kernel"]["emitted"], "exported": s.lines,
                "ended": s.ended is not None}
    finally:
        d.stop()


def idle(secs: float) -> dict[str, Any]:
    d = h.Daemon()
    try:
        cpu, rss = _sample(d.proc.pid, secs)
        out: dict[str, Any] = {"idle_cpu_pct": cpu, "idle_rss_mb": rss / 2**20,
                               "idle_anon_mb": ANON[d.proc.pid] / 2**20}
        with h.sleeper() as pid, h.session(d, [f"pid:{pid}"]):
            cpu, rss = _sample(d.proc.pid, secs)
        out |= {"attached_cpu_pct": cpu, "attached_rss_mb": rss / 2**20,
                "attached_anon_mb": ANON[d.proc.pid] / 2**20}
        return out
    finally:
        d.stop()


def run(bins: dict[str, Any], quick: bool) -> dict[str, Any]:
    secs = 1.5 if quick else 10.0
    res: dict[str, Any] = {"startup": startup(1 if quick else 3), "idle": idle(secs)}
    res["rates"] = [at_rate(bins, r, secs) for r in (10_000, 100_000)]
    su, idl = res["startup"], res["idle"]
    print("\ndaemon cost")
    print(f"  startup to READY (socket answers): {h.spread([x * 1000 for x in su['ready_s']])} ms")
    print(f"  probe compile+load+attach:         "
          f"{h.spread([x * 1000 for x in su['probe_load_s']])} ms")
    print(f"  idle (no session):        CPU {idl['idle_cpu_pct']:5.2f}% of a core, "
          f"RSS {idl['idle_rss_mb']:6.1f} MB (anon {idl['idle_anon_mb']:.1f})")
    print(f"  probes attached, no load: CPU {idl['attached_cpu_pct']:5.2f}% of a core, "
          f"RSS {idl['attached_rss_mb']:6.1f} MB (anon {idl['attached_anon_mb']:.1f})")
    for r in res["rates"]:
        print(f"  target at {r['rate']:>7,}/s:     CPU {r['cpu_pct']:5.1f}% of a core, "
              f"peak RSS {r['rss_mb']:6.1f} MB (anon {r['anon_mb']:.1f}); "
              f"emitted {r['emitted']:,} exported "
              f"{r['exported']:,}{' (session ended: slow_reader)' if r['ended'] else ''}")
    return res


