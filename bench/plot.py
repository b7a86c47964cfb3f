"""PNG of overhead and drops vs offered event rate, from a bench results JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[dev]'): no plot")
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ns = results.get("overhead", {}).get("ns_per_syscall", {})
    if ns:
        names = [k for k in ns if k != "strace -f"]
        meds = [sorted(ns[k])[len(ns[k]) // 2] for k in names]
        ax1.barh(names, meds, color="tab:blue")
        ax1.set_xlabel("ns per write(2), median (strace -f omitted: off scale)")
        ax1.set_title("Per-syscall cost by condition")
        ax1.invert_yaxis()
        ax1.tick_params(axis="y", labelsize=7)
    steps = results.get("ingest", {}).get("steps", [])
    if steps:
        rates = [s["rate"] for s in steps]
        drop_pct = [100 * s["drops"] / max(1, s["kernel"]["emitted"] + s["kernel"]["drop_ringbuf"])
                    for s in steps]
        exported_pct = [100 * s["exported"] / max(1, s["done"]) for s in steps]
        ax2.plot(rates, drop_pct, "o-", color="tab:red", label="dropped (ring + overload) %")
        ax2.plot(rates, exported_pct, "s-", color="tab:green", label="exported to client %")
        ax2.set_xscale("log")
        ax2.set_xlabel("offered events/s (one target, payload level)")
        ax2.set_ylabel("% of syscalls made")
        ax2.set_ylim(-5, 105)
        ax2.set_title("Drops and delivery vs event rate")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
