"""Compile and load a probe (trace.bpf.c + tls.bpf.c, or profile.bpf.c) with bcc in a
short-lived helper process.

bcc (libbcc + LLVM/clang) costs ~100 MB of resident pages once it has compiled
something, and they stay resident for the life of the process. The daemon therefore
never imports it: TraceProbe.load() and Profiler run `python -m probes.loader --probe
trace|profile`, which compiles and loads the programs and maps, then sends their fds
back over a SOCK_SEQPACKET socketpair (SCM_RIGHTS) with a JSON manifest, and exits.
The kernel objects live on as long as the daemon holds the fds; the daemon attaches
the programs itself (probes/bpfsys.py).

Manifest: {"progs": [{"name", "kind": "tracepoint"|"uprobe"|"perf_event", "tp": "cat:event"}],
           "maps": [{"name", "type", "key_size", "value_size", "max_entries"}],
           "cache": "written" | "not written: why" (with --cache FILE),
           "error": "..." (and no fds) when compiling or loading failed}
fds: progs in manifest order, then maps in manifest order.

With --cache FILE the helper also writes what it compiled to FILE (probes/objcache.py),
so the next start loads that without bcc (probes/objload.load_probe()).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes import objcache
from probes.bpfsys import map_info

PROBE_DIR = Path(__file__).resolve().parent
SOURCE = PROBE_DIR / "trace.bpf.c"
# Compiled as one object with trace.bpf.c (shared maps and ring buffer); bcc only turns
# functions of the main text into programs, so the sources are joined, not #included.
TLS_SOURCE = PROBE_DIR / "tls.bpf.c"
# Maps user space touches; the others (inflight, scratch, exit_codes, tls_calls, ssl_fds,
# target_bits) are only referenced by the programs, which keep them alive. fd_caps: the L7
# stage raises the payload cap of fds where it detected a protocol; shedding and tls_hooked
# are flags (the pipeline overloaded; SSL uprobes attached); target_bits_user: the bits of
# the tgids the daemon adds to targets.
USER_MAPS = ("events", "targets", "target_bits_user", "comm_targets", "cgroup_targets",
             "stats", "fd_caps", "shedding", "tls_hooked")
PROFILE_SOURCE = PROBE_DIR / "profile.bpf.c"
PROFILE_MAPS = ("profile_targets", "counts", "stacks", "profile_stats")
TP_PREFIX = "tracepoint__"
MANIFEST_MAX = 1 << 20
LOADER_TIMEOUT = 300.0  # seconds; a compile under QEMU TCG takes tens of seconds
PROG_KINDS = ("tracepoint", "uprobe", "perf_event")


class ProbeError(RuntimeError):
    """The probe could not be compiled, loaded or attached."""


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


def profile_cflags(stack_storage: int) -> list[str]:
    return [f"-I{PROBE_DIR}", f"-DSTACK_STORAGE={max(64, stack_storage)}",
            "-Wno-macro-redefined"]


@dataclass(frozen=True)
class ProbeKind:
    """What one probe is made of: its source text, its programs' kind and the maps user
    space needs (the others are only referenced by the programs, which keep them alive)."""

    sources: tuple[Path, ...]
    user_maps: tuple[str, ...]
    prog_kind: Callable[[str], tuple[str, str]]


def prog_kind(name: str) -> tuple[str, str]:
    """("tracepoint", "cat:event") for bcc's tracepoint__cat__event, else ("uprobe", "")."""
    if name.startswith(TP_PREFIX):
        cat, sep, event = name[len(TP_PREFIX):].partition("__")
        if not sep or not event:
            raise ValueError(f"bad tracepoint program name {name!r}")
        return "tracepoint", f"{cat}:{event}"
    return "uprobe", ""


PROBES = {
    # trace + tls: one object (shared maps and ring buffer); bcc only turns functions of
    # the main text into programs, so the sources are joined, not #included.
    "trace": ProbeKind((SOURCE, TLS_SOURCE), USER_MAPS, prog_kind),
    "profile": ProbeKind((PROFILE_SOURCE,), PROFILE_MAPS, lambda _name: ("perf_event", "")),
}


def parse_manifest(raw: bytes, fds: list[int],
                   required: tuple[str, ...] = USER_MAPS) -> dict[str, Any]:
    """Check a helper's reply: one fd per program and map, in manifest order, and every
    map in required."""
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
        if p.get("kind") not in PROG_KINDS or not p.get("name"):
            raise ValueError(f"bad program entry {p!r}")
        if p["kind"] == "tracepoint" and ":" not in str(p.get("tp", "")):
            raise ValueError(f"tracepoint program without category:event: {p!r}")
    for m in maps:
        if not isinstance(m, dict):
            raise ValueError(f"bad map entry {m!r}")
        for k in ("type", "key_size", "value_size", "max_entries"):
            if not isinstance(m.get(k), int) or m[k] < 0:
                raise ValueError(f"bad map entry {m!r}")
    missing = set(required) - {m.get("name") for m in maps}
    if missing:
        raise ValueError(f"maps missing from the manifest: {sorted(missing)}")
    for p, fd in zip(progs, fds, strict=False):
        p["fd"] = fd
    for m, fd in zip(maps, fds[len(progs):], strict=True):
        m["fd"] = fd
    return man


# The helper's bootstrap: our tree first on sys.path (not the cwd, not user site-packages).
_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from probes.loader import main; " \
        "sys.exit(main())"


def spawn_loader(probe: str, args: list[str], root: Path = PROBE_DIR.parent) -> dict[str, Any]:
    """Run the loader helper (probes/loader.py under root) for one of PROBES with its
    options; returns its parsed manifest (with an "fd" in every entry). Raises ProbeError
    with the compiler's message."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # -I: no cwd, PYTHONPATH or user site-packages on the helper's sys.path (we put our
    # tree first ourselves); bcc comes from the system site-packages.
    cmd = [sys.executable, "-I", "-c", _BOOT, str(root), "--fd", str(theirs.fileno()),
           "--probe", probe, *args]
    proc: subprocess.Popen[bytes] | None = None
    with ours, tempfile.TemporaryFile() as err:
        try:
            with theirs:
                proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=err)
            ours.settimeout(LOADER_TIMEOUT)
            try:
                raw, fds, flags, _addr = socket.recv_fds(ours, 1 << 20, 253)
            except TimeoutError as e:
                raise ProbeError(f"the probe loader did not answer in {LOADER_TIMEOUT:.0f}s") \
                    from e
            with contextlib.suppress(OSError):
                ours.send(b"ok")
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        except OSError as e:
            raise ProbeError(f"running the probe loader failed: {e}") from e
        finally:
            if proc is not None and proc.returncode is None:  # no zombie, no stray compiler
                proc.kill()
                proc.wait()
        err.seek(0)
        tail = err.read()[-4000:].decode(errors="replace").strip()
        if not raw:
            raise ProbeError(f"the probe loader exited ({rc}) without an answer"
                             + (f": {tail}" if tail else ""))
        try:
            if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                raise ValueError("message or fds truncated")
            man = parse_manifest(raw, fds, PROBES[probe].user_maps)
        except ValueError as e:
            for fd in fds:
                os.close(fd)
            raise ProbeError(f"bad answer from the probe loader: {e}") from e
        if "error" in man:
            for fd in fds:
                os.close(fd)
            raise ProbeError(str(man["error"]) + (f"\n{tail}" if tail else ""))
        return man


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="periscope probe loader (helper; not for humans)")
    ap.add_argument("--fd", type=int, required=True, help="SOCK_SEQPACKET to reply on")
    ap.add_argument("--probe", choices=sorted(PROBES), default="trace")
    ap.add_argument("--max-payload", type=int, default=256)
    ap.add_argument("--ringbuf-pages", type=int, default=1024)
    ap.add_argument("--stack-storage", type=int, default=8192)
    ap.add_argument("--cache", type=Path, help="write the compiled object here")
    ap.add_argument("--cache-key", default="", help="the key it is written under")
    ap.add_argument("--cache-build", type=_build_facts, default=None,
                    help="what the key covers (JSON object), kept in the file's header")
    return ap


def _build_facts(text: str) -> dict[str, str]:
    doc = json.loads(text)
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise ValueError("--cache-build: not a JSON object of strings")
    return {str(k): v for k, v in doc.items()}


def probe_flags(probe: str, args: list[str]) -> list[str]:
    """The cflags the helper compiles a probe with, given its options."""
    a = _parser().parse_args(["--fd", "-1", "--probe", probe, *args])
    return (profile_cflags(a.stack_storage) if probe == "profile"
            else cflags(a.max_payload, a.ringbuf_pages))


def _bcc_tables(bpf: Any) -> dict[int, str]:
    """fd -> name of every map the compile created (libbcc's C API; bcc.py lacks these)."""
    import ctypes as ct

    from bcc.libbcc import lib
    lib.bpf_num_tables.restype = ct.c_ulonglong
    lib.bpf_num_tables.argtypes = [ct.c_void_p]
    lib.bpf_table_name.restype = ct.c_char_p
    lib.bpf_table_name.argtypes = [ct.c_void_p, ct.c_ulonglong]
    lib.bpf_table_fd_id.restype = ct.c_int
    lib.bpf_table_fd_id.argtypes = [ct.c_void_p, ct.c_ulonglong]
    return {int(lib.bpf_table_fd_id(bpf.module, i)): lib.bpf_table_name(bpf.module, i).decode()
            for i in range(lib.bpf_num_tables(bpf.module))}


def _cache_object(bpf: Any, progs: list[dict[str, Any]]) -> objcache.ProbeObject:
    from bcc.libbcc import lib
    tables = _bcc_tables(bpf)
    maps = []
    for fd, name in sorted(tables.items(), key=lambda t: t[1]):
        info = map_info(fd)
        maps.append(objcache.MapDef(name, info["type"], info["key_size"], info["value_size"],
                                    info["max_entries"], info["flags"]))
    defs = []
    for p in progs:
        insns, relocs = objcache.relocate(bpf.dump_func(p["name"].encode()), tables)
        defs.append(objcache.ProgDef(p["name"], p["kind"], p["tp"], insns, relocs))
    return objcache.ProbeObject(lib.bpf_module_license(bpf.module).decode(),
                                int(lib.bpf_module_kern_version(bpf.module)),
                                tuple(maps), tuple(defs))


def _load(probe: ProbeKind, flags: list[str]) -> tuple[dict[str, Any], list[int], Any]:
    from bcc import BPF

    class LoadOnly(BPF):
        def _trace_autoload(self) -> None:  # load below; the daemon attaches
            pass

    text = b"\n".join(src.read_bytes() for src in probe.sources)
    bpf = LoadOnly(text=text, cflags=flags)
    lib = __import__("bcc.libbcc", fromlist=["lib"]).lib
    prog_types = {"tracepoint": BPF.TRACEPOINT, "uprobe": BPF.KPROBE,
                  "perf_event": BPF.PERF_EVENT}
    progs: list[dict[str, Any]] = []
    fds: list[int] = []
    for i in range(lib.bpf_num_functions(bpf.module)):
        name = lib.bpf_function_name(bpf.module, i).decode()
        kind, tp = probe.prog_kind(name)
        fn = bpf.load_func(name.encode(), prog_types[kind])
        progs.append({"name": name, "kind": kind, "tp": tp})
        fds.append(fn.fd)
    maps: list[dict[str, Any]] = []
    mfds: list[int] = []
    for name in probe.user_maps:
        fd = bpf[name.encode()].get_fd()
        info = map_info(fd)  # the kernel's sizes (bcc's Leaf is per-CPU expanded)
        maps.append({"name": name, **{k: info[k] for k in
                                      ("type", "key_size", "value_size", "max_entries")}})
        mfds.append(fd)
    return {"progs": progs, "maps": maps}, fds + mfds, bpf  # keep bpf: it owns the fds


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    probe = PROBES[args.probe]
    flags = (profile_cflags(args.stack_storage) if args.probe == "profile"
             else cflags(args.max_payload, args.ringbuf_pages))
    try:
        man, fds, bpf = _load(probe, flags)
    except ImportError as err:
        msg = f"bcc is not importable ({err}): install python3-bpfcc"
        sock.sendall(json.dumps({"error": msg}).encode())
        return 1
    except Exception as err:  # bcc raises bare Exception for compile/load errors
        msg = f"loading {probe.sources[0].name} failed: {err}"
        sock.sendall(json.dumps({"error": msg}).encode())
        return 1
    if args.cache:
        try:  # the probe works without it: a failure only costs the next start a compile
            objcache.write(args.cache, _cache_object(bpf, man["progs"]), args.cache_key,
                           args.cache_build)
            man["cache"] = "written"
        except (OSError, ValueError) as err:
            man["cache"] = f"not written: {err}"
    socket.send_fds(sock, [json.dumps(man).encode()], fds)
    # Wait for the daemon's ack (or its end) before our fds close with us, so the
    # objects never depend on an in-flight message alone.
    sock.recv(16)
    sys.stdout.flush()
    os._exit(0)  # skip bcc's atexit cleanup: nothing is attached, fds close with us


if __name__ == "__main__":
    sys.exit(main())
