"""Parts 1 and 2: what a syscall costs under each condition, measured side by side.

Each round runs every condition once, in a shuffled order, so noise from other tenants
lands on all conditions alike; we report medians and [min..max]."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bench import conditions as c
from bench import harness as h
from collector.config import tomllib


@dataclass(frozen=True)
class Plan:
    rounds: int
    runs: int          # workload runs per condition per round
    writes: int        # write(2)s per run (strace: writes // 100)
    tcp_secs: float


FULL = Plan(rounds=3, runs=1, writes=2_000_000, tcp_secs=2.0)
QUICK = Plan(rounds=1, runs=1, writes=500_000, tcp_secs=1.0)

UNTARGETED: dict[str, c.Condition] = {
    "none": c.none,
    "idle": c.idle,
    "untargeted": c.untargeted,
    "floor (empty progs, our tracepoints)": c.floor("syscalls"),
    "floor (empty raw_tp sys_enter/exit)": c.floor("raw_tp"),
    "floor (empty raw_syscalls tp)": c.floor("raw_syscalls"),
    "filter only (our tracepoints)": c.floor("syscalls_filter"),
    "filter only (raw_tp)": c.floor("raw_tp_filter"),
    "bpftrace count (same tracepoints)": c.bpftrace,
    "targeted meta": c.targeted("meta"),
    "targeted payload 256": c.targeted("payload"),
    "strace -f": c.none,
}
# --quick keeps the decision-relevant conditions; the alternative floors need the full run.
# (the flat-out targeted runs saturate the daemon and wait for it to drain: full run only;
# --quick still measures targeted cost via ingest.per_call and the TCP loop)
QUICK_SKIP = {"floor (empty raw_syscalls tp)", "filter only (our tracepoints)",
              "filter only (raw_tp)", "floor (empty raw_tp sys_enter/exit)",
              "targeted meta", "targeted payload 256"}
# The shipped per-target rate limit (the targeted conditions above run without one).
DEFAULT_RATE = int(tomllib.loads((h.REPO / "collector/defaults/periscope.toml").read_text())
                   ["capture"]["rate_limit"])
RATED = f"targeted payload 256, rate_limit {DEFAULT_RATE // 1000}k"
TCP: dict[str, c.Condition] = {
    "none": c.none,
    "floor (empty progs, our tracepoints)": c.floor("syscalls"),
    "floor (empty raw_tp sys_enter/exit)": c.floor("raw_tp"),
    "untargeted": c.untargeted,
    "targeted meta": c.targeted("meta"),
    "targeted payload 256": c.targeted("payload"),
    RATED: c.targeted("payload", DEFAULT_RATE),
    "strace -f": c.none,
}
STRACE = ["strace", "-f", "-qq", "-o", "/dev/null"]


def _rounds(plan: Plan, conds: dict[str, c.Condition],
            once: Any) -> tuple[dict[str, list[float]], dict[str, list[dict[str, Any]]]]:
    samples: dict[str, list[float]] = {k: [] for k in conds}
    infos: dict[str, list[dict[str, Any]]] = {k: [] for k in conds}
    for r in range(plan.rounds):
        order = list(conds)
        random.Random(r).shuffle(order)
        for name in order:
            for _ in range(plan.runs):
                with conds[name]() as armed:
                    samples[name].append(once(name, armed))
                if armed.info:
                    infos[name].append(armed.info)
        print(f"  round {r + 1}/{plan.rounds} done", flush=True)
    return samples, infos


def writes(plan: Plan, bins: dict[str, Any]) -> dict[str, Any]:
    def once(name: str, armed: c.Armed) -> float:
        n = plan.writes // 100 if name == "strace -f" else plan.writes
        wrap = STRACE if name == "strace -f" else ()
        ns, count = h.run([str(bins["writeloop"]), str(n), "64"], armed.arm, wrap)
        return ns / count

    conds = {k: v for k, v in UNTARGETED.items() if plan is not QUICK or k not in QUICK_SKIP}
    samples, infos = _rounds(plan, conds, once)
    base = h.med(samples["none"])
    floor = h.med(samples["floor (empty progs, our tracepoints)"])
    bmin = min(samples["none"])
    fmin = min(samples["floor (empty progs, our tracepoints)"])
    print(f"\n{'write(2) 64 B to /dev/null':<36} {'ns/syscall median [min..max]':>32}"
          f" {'+ns':>6} {'x none':>6} {'x floor':>7} | on mins: {'x none':>6} {'x floor':>7}")
    for name, xs in samples.items():
        m = h.med(xs)
        print(f"{name:<36} {h.spread(xs):>32} {m - base:>6.0f} {m / base:>6.2f}"
              f" {m / floor:>7.2f} | {'':>9}{min(xs) / bmin:>6.2f} {min(xs) / fmin:>7.2f}")
    attached = [i["probes_attached"] for i in infos["idle"]]
    print(f"  idle: probes attached during the idle runs: {attached} (lazy attach: all False)")
    for name in ("targeted meta", "targeted payload 256"):
        for info in infos.get(name, []):
            k, p = info["kernel"], info["pipeline"]
            print(f"  {name}: kernel emitted {k['emitted']:,} drop_ringbuf "
                  f"{k['drop_ringbuf']:,} shed_overload {k.get('shed_overload', 0):,}; "
                  f"pipeline received {p.get('received', 0):,} "
                  f"dropped_overload {p.get('dropped_overload', 0):,} payload_shed "
                  f"{p.get('payload_shed', 0):,}; exported to client {info['exported']:,}"
                  f"{' ENDED ' + str(info['ended']) if info['ended'] else ''}")
    return {"ns_per_syscall": samples, "info": infos}


# getppid(2), a syscall the probe does not trace. With any syscall tracepoint attached every
# task's syscalls take the kernel's tracing path, and a raw sys_enter/sys_exit pair would run
# for each of them: what a redesign on that pair would cost every other syscall on the host.
UNTRACED: dict[str, c.Condition] = {
    "none": c.none,
    "untargeted": c.untargeted,
    "targeted payload 256": c.targeted("payload"),
    "floor (empty progs, our tracepoints)": c.floor("syscalls"),
    "floor (empty raw_tp sys_enter/exit)": c.floor("raw_tp"),
    "filter only (raw_tp)": c.floor("raw_tp_filter"),
}


def untraced(plan: Plan, bins: dict[str, Any]) -> dict[str, Any]:
    def once(_name: str, armed: c.Armed) -> float:
        ns, count = h.run([str(bins["writeloop"]), str(plan.writes), "0", "getppid"],
                          armed.arm)
        return ns / count

    samples, _infos = _rounds(plan, UNTRACED, once)
    base = h.med(samples["none"])
    print(f"\n{'getppid(2), not traced':<36} {'ns/syscall median [min..max]':>32}"
          f" {'+ns':>6} {'x none':>6}")
    for name, xs in samples.items():
        m = h.med(xs)
        print(f"{name:<36} {h.spread(xs):>32} {m - base:>6.0f} {m / base:>6.2f}")
    return {"ns_per_syscall": samples}


def tcp(plan: Plan, bins: dict[str, Any], pin: bool = False) -> dict[str, Any]:
    """Req/s of the loopback loop per condition. pin=True runs both of its threads on CPU 0:
    on this 2-vCPU VM a cross-CPU wakeup per message costs more than the message, so the
    unpinned loop speeds up when the daemon's load pushes both threads onto one CPU. Pinned,
    every condition has the same placement and the ratio is the in-task cost of tracing."""
    pinning = ("taskset", "-c", "0") if pin else ()

    def once(name: str, armed: c.Armed) -> float:
        wrap = (*STRACE, *pinning) if name == "strace -f" else pinning
        n, ns = h.run([str(bins["tcploop"]), str(plan.tcp_secs)], armed.arm, wrap)
        return n / (ns / 1e9)

    # --quick: the targets' conditions only (the floors say what a probe redesign could buy)
    conds = {k: v for k, v in TCP.items()
             if plan is not QUICK or (k != "targeted meta" and not k.startswith("floor"))}
    samples, infos = _rounds(plan, conds, once)
    base = h.med(samples["none"])
    bmax = max(samples["none"])
    title = "TCP req/resp 100 B" + (", pinned CPU 0" if pin else ", loopback")
    print(f"\n{title:<36} {'req/s median [min..max]':>32} {'x none':>6}"
          f" | on maxes: {'x none':>6}")
    for name, xs in samples.items():
        print(f"{name:<36} {h.spread(xs):>32} {h.med(xs) / base:>6.2f} | {'':>10}"
              f"{max(xs) / bmax:>6.2f}")
    for name in ("targeted meta", "targeted payload 256", RATED):
        for info in infos.get(name, []):
            k, p = info["kernel"], info["pipeline"]
            print(f"  {name}: emitted {k['emitted']:,} drop_ringbuf {k['drop_ringbuf']:,} "
                  f"shed_overload {k.get('shed_overload', 0):,} "
                  f"skipped_rate {k.get('skipped_rate', 0):,} "
                  f"received {p.get('received', 0):,} dropped_overload "
                  f"{p.get('dropped_overload', 0):,} payload_shed {p.get('payload_shed', 0):,}"
                  f" exported {info['exported']:,}")
    return {"req_per_s": samples, "info": infos}
