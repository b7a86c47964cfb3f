"""Part 4: periscoped's own cost: startup to READY, probe load, CPU% and RSS at idle,
with probes attached, and while a target produces 10k and 100k events/s; whether the
daemon maps libbcc/LLVM (it must not: the compile runs in a helper); and the ring buffer
reader alone (mmap reader vs bcc's callback reader) on the same ring contents."""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from pathlib import Path
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


def bcc_mapped(pid: int) -> int:
    """Lines of /proc/PID/maps that are libbcc or LLVM (0 when the compile stays out)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sum(1 for ln in maps.splitlines() if "llvm" in ln.lower() or "libbcc" in ln)


def _fill(n: int) -> None:
    """n traced write(2)s of 64 B from this process (one record each)."""
    fd = os.open("/dev/null", os.O_WRONLY)
    buf = b"x" * 64
    try:
        for _ in range(n):
            os.write(fd, buf)
    finally:
        os.close(fd)


def reader_mmap(n: int, reps: int) -> list[float]:
    """records/s of probes/ringbuf.RingReader draining n records (null sink)."""
    from probes.trace import ProbeOptions, TargetSpec, TraceProbe

    got = [0]

    def sink(batch: list[bytes]) -> None:
        got[0] += len(batch)

    probe = TraceProbe(ProbeOptions(poll_interval=3600), sink)  # we drain, not its thread
    probe.load()
    reader = probe._reader
    assert reader is not None
    out = []
    try:
        probe.add_pid(os.getpid(), TargetSpec(1, 256))
        for _ in range(reps):
            reader.drain()
            got[0] = 0
            _fill(n)
            t = time.perf_counter()
            reader.drain()
            out.append(got[0] / (time.perf_counter() - t))
    finally:
        probe.close()
    return out


def reader_bcc(n: int, reps: int) -> list[float]:
    """records/s of the former reader: bcc's ring_buffer_consume + string_at callback."""
    from bcc import BPF

    from probes.layout import TARGET
    from probes.loader import SOURCE, TLS_SOURCE, cflags

    bpf = BPF(text=SOURCE.read_bytes() + b"\n" + TLS_SOURCE.read_bytes(),
              cflags=cflags(256, 1024))
    batch: list[bytes] = []
    got = [0]

    def cb(_ctx: Any, data: Any, size: int) -> None:  # what probes/trace.py did
        batch.append(ctypes.string_at(data, size))
        if len(batch) >= 1024:
            got[0] += len(batch)
            batch.clear()

    out = []
    try:
        bpf["events"].open_ring_buffer(cb)
        t_ = bpf["targets"]
        t_[t_.Key(os.getpid())] = t_.Leaf.from_buffer_copy(TARGET.pack(1, 256, 0, 0))
        for _ in range(reps):
            bpf.ring_buffer_consume()
            batch.clear()
            got[0] = 0
            _fill(n)
            t = time.perf_counter()
            bpf.ring_buffer_consume()
            out.append((got[0] + len(batch)) / (time.perf_counter() - t))
    finally:
        bpf.cleanup()
    return out


def readers(n: int = 20_000, reps: int = 5) -> dict[str, list[float]]:
    """Both readers in this process, the mmap reader first (bcc maps LLVM into us)."""
    return {"mmap": reader_mmap(n, reps), "bcc callback": reader_bcc(n, reps)}


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
    # Unlimited: the shipped per-target rate limit (capture.rate_limit) would hold the
    # 100k/s condition at the limit, and this measures the daemon at the stated rate.
    d = h.Daemon("[capture]\nrate_limit = 0\n")
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
            mapped = bcc_mapped(d.proc.pid)
            p.communicate()
            st = c.drain(d)
        return {"rate": rate, "cpu_pct": cpu, "rss_mb": rss / 2**20,
                "anon_mb": ANON[d.proc.pid] / 2**20, "bcc_maps": mapped,
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
    res["reader"] = readers(20_000, 3 if quick else 7)
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
              f"{r['exported']:,}{' (session ended: slow_reader)' if r['ended'] else ''}; "
              f"libbcc/LLVM mappings: {r['bcc_maps']}")
    for name, rates in res["reader"].items():
        print(f"  ring buffer reader alone ({name}, 20k records, null sink): "
              f"{h.spread(rates)} records/s")
    return res


