"""Compile and load trace.bpf.c + tls.bpf.c with bcc in a short-lived helper process.

bcc (libbcc + LLVM/clang) costs ~100 MB of resident pages once it has compiled
something, and they stay resident for the life of the process. The daemon therefore
never imports it: TraceProbe.load() runs `python -m probes.loader`, which compiles and
loads the programs and maps exactly as the in-process loader did, then sends their fds
back over a SOCK_SEQPACKET socketpair (SCM_RIGHTS) with a JSON manifest, and exits.
The kernel objects live on as long as the daemon holds the fds; the daemon attaches
the programs itself (probes/bpfsys.py).

Manifest: {"progs": [{"name", "kind": "tracepoint"|"uprobe", "tp": "cat:event"}],
           "maps": [{"name", "type", "key_size", "value_size", "max_entries"}],
           "error": "..." (and no fds) when compiling or loading failed}
fds: progs in manifest order, then maps in manifest order.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from probes.bpfsys import map_info

PROBE_DIR = Path(__file__).resolve().parent
SOURCE = PROBE_DIR / "trace.bpf.c"
# Compiled as one object with trace.bpf.c (shared maps and ring buffer); bcc only turns
# functions of the main text into programs, so the sources are joined, not #included.
TLS_SOURCE = PROBE_DIR / "tls.bpf.c"
# Maps user space touches; the others (inflight, scratch, exit_codes, tls_calls) are only
# referenced by the programs, which keep them alive.
USER_MAPS = ("events", "targets", "comm_targets", "cgroup_targets", "stats")
TP_PREFIX = "tracepoint__"
MANIFEST_MAX = 1 << 20


def pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def cflags(max_payload: int, ringbuf_pages: int) -> list[str]:
    return [
        f"-I{PROBE_DIR}",
        f"-DMAX_DATA={pow2(max(16, max_payload))}",
        f"-DRINGBUF_PAGES={pow2(ringbuf_pages)}",
        "-Wno-macro-redefined",
    ]


def prog_kind(name: str) -> tuple[str, str]:
    """("tracepoint", "cat:event") for bcc's tracepoint__cat__event, else ("uprobe", "")."""
    if name.startswith(TP_PREFIX):
        cat, sep, event = name[len(TP_PREFIX):].partition("__")
        if not sep or not event:
            raise ValueError(f"bad tracepoint program name {name!r}")
        return "tracepoint", f"{cat}:{event}"
    return "uprobe", ""


def parse_manifest(raw: bytes, fds: list[int]) -> dict[str, Any]:
    """Check a helper's reply: one fd per program and map, in manifest order."""
    man = json.loads(raw)
    if not isinstance(man, dict):
        raise ValueError("manifest is not an object")
    if "error" in man:
        return man
    progs, maps = man.get("progs"), man.get("maps")
    if not isinstance(progs, list) or not isinstance(maps, list):
        raise ValueError("manifest lacks progs/maps")
    if len(fds) != len(progs) + len(maps):
        raise ValueError(f"{len(fds)} fds for {len(progs)} programs and {len(maps)} maps")
    for p in progs:
        if not isinstance(p, dict):
            raise ValueError(f"bad program entry {p!r}")
        if p.get("kind") not in ("tracepoint", "uprobe") or not p.get("name"):
            raise ValueError(f"bad program entry {p!r}")
        if p["kind"] == "tracepoint" and ":" not in str(p.get("tp", "")):
            raise ValueError(f"tracepoint program without category:event: {p!r}")
    for m in maps:
        if not isinstance(m, dict):
            raise ValueError(f"bad map entry {m!r}")
        for k in ("type", "key_size", "value_size", "max_entries"):
            if not isinstance(m.get(k), int) or m[k] < 0:
                raise ValueError(f"bad map entry {m!r}")
    missing = set(USER_MAPS) - {m.get("name") for m in maps}
    if missing:
        raise ValueError(f"maps missing from the manifest: {sorted(missing)}")
    for p, fd in zip(progs, fds, strict=False):
        p["fd"] = fd
    for m, fd in zip(maps, fds[len(progs):], strict=True):
        m["fd"] = fd
    return man


def _load(max_payload: int, ringbuf_pages: int) -> tuple[dict[str, Any], list[int], Any]:
    from bcc import BPF

    class LoadOnly(BPF):
        def _trace_autoload(self) -> None:  # load below; the daemon attaches
            pass

    text = SOURCE.read_bytes() + b"\n" + TLS_SOURCE.read_bytes()
    bpf = LoadOnly(text=text, cflags=cflags(max_payload, ringbuf_pages))
    lib = __import__("bcc.libbcc", fromlist=["lib"]).lib
    progs: list[dict[str, Any]] = []
    fds: list[int] = []
    for i in range(lib.bpf_num_functions(bpf.module)):
        name = lib.bpf_function_name(bpf.module, i).decode()
        kind, tp = prog_kind(name)
        fn = bpf.load_func(name.encode(), BPF.TRACEPOINT if kind == "tracepoint" else BPF.KPROBE)
        progs.append({"name": name, "kind": kind, "tp": tp})
        fds.append(fn.fd)
    maps: list[dict[str, Any]] = []
    mfds: list[int] = []
    for name in USER_MAPS:
        fd = bpf[name.encode()].get_fd()
        info = map_info(fd)  # the kernel's sizes (bcc's Leaf is per-CPU expanded)
        maps.append({"name": name, **{k: info[k] for k in
                                      ("type", "key_size", "value_size", "max_entries")}})
        mfds.append(fd)
    return {"progs": progs, "maps": maps}, fds + mfds, bpf  # keep bpf: it owns the fds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="periscope probe loader (helper; not for humans)")
    ap.add_argument("--fd", type=int, required=True, help="SOCK_SEQPACKET to reply on")
    ap.add_argument("--max-payload", type=int, default=256)
    ap.add_argument("--ringbuf-pages", type=int, default=1024)
    args = ap.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    try:
        man, fds, _bpf = _load(args.max_payload, args.ringbuf_pages)
    except ImportError as err:
        msg = f"bcc is not importable ({err}): install python3-bpfcc"
        sock.sendall(json.dumps({"error": msg}).encode())
        return 1
    except Exception as err:  # bcc raises bare Exception for compile/load errors
        msg = f"loading {SOURCE.name} failed: {err}"
        sock.sendall(json.dumps({"error": msg}).encode())
        return 1
    socket.send_fds(sock, [json.dumps(man).encode()], fds)
    # Wait for the daemon's ack (or its end) before our fds close with us, so the
    # objects never depend on an in-flight message alone.
    sock.recv(16)
    sys.stdout.flush()
    os._exit(0)  # skip bcc's atexit cleanup: nothing is attached, fds close with us


if __name__ == "__main__":
    sys.exit(main())
