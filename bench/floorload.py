"""Load one bench/floor/*.bpf.c with bcc, print "ready", hold it until stdin closes.

    python -m bench.floorload syscalls|raw_tp|raw_syscalls|raw_tp_filter|syscalls_filter
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

FLOOR_DIR = Path(__file__).resolve().parent / "floor"
KINDS = ("syscalls", "raw_tp", "raw_syscalls", "raw_tp_filter", "syscalls_filter")


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "syscalls"
    if kind not in KINDS:
        print(f"unknown floor {kind!r}: one of {', '.join(KINDS)}", file=sys.stderr)
        return 2
    from bcc import BPF

    started = time.monotonic()
    bpf = BPF(src_file=str(FLOOR_DIR / f"{kind}.bpf.c").encode())
    print(f"ready {time.monotonic() - started:.3f}", flush=True)
    sys.stdin.read()  # hold the programs attached until the bench closes our stdin
    bpf.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
