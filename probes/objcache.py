"""A compiled probe on disk: each program's instructions with its map relocations, and the
map definitions, keyed by everything that produced them (so a later start needs no bcc).

The loader helper writes it after a compile (probes/loader.py --cache FILE); the daemon
reads it back (read()) and loads it with bpf(2) (probes/objload.py). The file lives in a
root-only directory under the state dir and is used only if it is ours, 0600, names the
key we computed and matches the SHA-256 it carries; anything else is ignored (and
replaced by the next compile), never trusted half-way. What it cannot hide from the
kernel: every program goes through the verifier again at each load.

File: one JSON line {"format", "key", "sha256", "size", "build" (build(): what the key
covers, by name; only to say why a rebuild happens)}, then the body (JSON, sha256 and
size over exactly these bytes): {"license", "kern_version", "maps": [{"name", "type",
"key_size", "value_size", "max_entries", "flags"}], "progs": [{"name", "kind", "tp",
"type", "insns" (base64, map fds zeroed), "relocs": [[insn index, map name]...]}]}.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import stat
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("periscope.probe")

FORMAT = 1
SUFFIX = ".bpfobj"
MAX_FILE = 16 << 20
# BPF instruction encoding (include/uapi/linux/bpf.h)
INSN = struct.Struct("<BBhi")
LD_IMM64 = 0x18           # BPF_LD | BPF_DW | BPF_IMM: two slots
CALL = 0x85               # BPF_JMP | BPF_CALL
PSEUDO_MAP_FD = 1         # src_reg of an ld_imm64 whose imm is a map fd
# Helpers the project never calls (docs/security.md, "read-only"): a cached program that
# calls one is refused before the kernel sees it, whatever the file says.
FORBIDDEN_HELPERS = {36: "bpf_probe_write_user", 58: "bpf_override_return",
                     109: "bpf_send_signal", 117: "bpf_send_signal_thread"}
PROG_TYPES = {"tracepoint": 5, "uprobe": 2, "perf_event": 7}  # enum bpf_prog_type


class CacheError(ValueError):
    """A cache file that cannot be used (corrupt, stale, foreign or unsafe)."""


@dataclass(frozen=True)
class MapDef:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class ProgDef:
    name: str
    kind: str                 # tracepoint | uprobe | perf_event (probes/loader.PROG_KINDS)
    tp: str                   # "cat:event" for a tracepoint, else ""
    insns: bytes              # map fds zeroed
    relocs: tuple[tuple[int, str], ...]  # (index of an ld_imm64, map name)


@dataclass(frozen=True)
class ProbeObject:
    license: str
    kern_version: int
    maps: tuple[MapDef, ...]
    progs: tuple[ProgDef, ...]


def bcc_version() -> str:
    """The installed bcc's version, read from its metadata (bcc is never imported here)."""
    try:
        return importlib.metadata.version("bcc")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def build(probe: str, sources: Iterable[Path], headers: Iterable[Path], cflags: list[str]
          ) -> dict[str, str]:
    """What a compile depends on, by name: the probe, the kernel (release and build: bcc
    reads the tracepoints' formats and the kernel headers of the running kernel), the bcc
    version, the cflags (the config that shapes the programs) and a digest of the sources
    and headers (text). Kept in the file's header, so a rebuild can say what changed."""
    u = os.uname()
    src = hashlib.sha256()
    for path in (*sources, *sorted(headers)):
        src.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return {"probe": probe, "kernel": u.release, "kernel_build": u.version,
            "machine": u.machine, "bcc": bcc_version(), "cflags": " ".join(cflags),
            "sources": src.hexdigest()}


def key_of(facts: dict[str, str]) -> str:
    """The cache key: a hex digest over build() (and the file format)."""
    return hashlib.sha256(json.dumps({"format": FORMAT, **facts}, sort_keys=True)
                          .encode()).hexdigest()


def key(probe: str, sources: Iterable[Path], headers: Iterable[Path], cflags: list[str]
        ) -> str:
    """Hex digest over everything a compile depends on (build())."""
    return key_of(build(probe, sources, headers, cflags))


def path_for(cache_dir: Path, probe: str, digest: str) -> Path:
    return cache_dir / f"{probe}-{digest[:32]}{SUFFIX}"


# -- building (in the loader helper, from bcc's output) -----------------------------
def relocate(insns: bytes, fd_names: dict[int, str]) -> tuple[bytes, tuple[tuple[int, str], ...]]:
    """Zero the map fds of a program's ld_imm64 instructions and list them by map name.
    Raises CacheError on anything this cache cannot carry (another pseudo source, a
    BPF-to-BPF call, a map we were not told of)."""
    code = bytearray(insns)
    relocs = []
    for i in range(len(code) // 8):
        op, regs, _off, imm = INSN.unpack_from(code, i * 8)
        src = regs >> 4
        if op == LD_IMM64 and src:
            if src != PSEUDO_MAP_FD or imm not in fd_names:
                raise CacheError(f"instruction {i}: ld_imm64 source {src} imm {imm}")
            relocs.append((i, fd_names[imm]))
            struct.pack_into("<i", code, i * 8 + 4, 0)
        elif op == CALL and src:
            raise CacheError(f"instruction {i}: a BPF-to-BPF call")
    return bytes(code), tuple(relocs)


def encode(obj: ProbeObject, digest: str, facts: dict[str, str] | None = None) -> bytes:
    body = json.dumps({
        "license": obj.license, "kern_version": obj.kern_version,
        "maps": [m.__dict__ for m in obj.maps],
        "progs": [{"name": p.name, "kind": p.kind, "tp": p.tp,
                   "insns": base64.b64encode(p.insns).decode(),
                   "relocs": [list(r) for r in p.relocs]} for p in obj.progs],
    }, separators=(",", ":")).encode()
    head = json.dumps({"format": FORMAT, "key": digest, "sha256": hashlib.sha256(body).hexdigest(),
                       "size": len(body), **({"build": facts} if facts else {})}).encode()
    return head + b"\n" + body


def write(path: Path, obj: ProbeObject, digest: str, facts: dict[str, str] | None = None
          ) -> None:
    """Atomically (a 0600 temp file renamed over) in a 0700 directory; other versions of
    the same probe's cache go (a kernel upgrade or new source leaves them stale)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = encode(obj, digest, facts)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    probe = path.name.rsplit("-", 1)[0]
    for old in path.parent.glob(f"{probe}-*{SUFFIX}"):
        if old != path:
            with contextlib.suppress(OSError):
                old.unlink()


# -- reading (in the daemon) --------------------------------------------------------
def _private(st: os.stat_result, what: str) -> None:
    if st.st_uid != os.geteuid():
        raise CacheError(f"{what} is owned by uid {st.st_uid}, not us")
    if st.st_mode & 0o022:
        raise CacheError(f"{what} is writable by others ({stat.filemode(st.st_mode)})")


def read(path: Path, digest: str) -> ProbeObject | None:
    """The cached object for this key, or None if there is none. Raises CacheError if a
    file is there but unusable (the caller drops it and compiles)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CacheError(f"{path}: {err.strerror}") from err
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        _private(os.stat(path.parent), str(path.parent))
        _private(st, str(path))
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or st.st_size > MAX_FILE:
            raise CacheError(f"{path} is not a 0600 regular file under {MAX_FILE} bytes")
        raw = f.read(MAX_FILE + 1)
    head_raw, sep, body = raw.partition(b"\n")
    try:
        head = json.loads(head_raw)
    except ValueError as err:
        raise CacheError(f"{path}: bad header") from err
    if not sep or not isinstance(head, dict) or head.get("format") != FORMAT:
        raise CacheError(f"{path}: not a format {FORMAT} cache file")
    if head.get("key") != digest:
        raise CacheError(f"{path}: built for another key")
    if head.get("size") != len(body) or head.get("sha256") != hashlib.sha256(body).hexdigest():
        raise CacheError(f"{path}: checksum mismatch (torn or corrupt)")
    try:
        return _parse(json.loads(body))
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise CacheError(f"{path}: {err}") from err


# What a rebuild reports as changed, in the words of an operator who upgraded something.
_CHANGES = (("kernel", "kernel"), ("kernel_build", "kernel build"), ("machine", "machine"),
            ("bcc", "bcc"), ("cflags", "capture config (cflags)"), ("sources", "probe sources"))


def why_compile(cache_dir: Path, probe: str, facts: dict[str, str]) -> str:
    """Why there is no cached build for facts, for the log: a cold cache, or the key
    changed and what changed (read from the header of the stale file the compile is
    about to replace). Never raises: a file it cannot read is just "another build"."""
    stale = sorted(cache_dir.glob(f"{probe}-*{SUFFIX}"), key=lambda p: p.name)
    if not stale:
        return "cold cache: nothing compiled for this host yet"
    try:
        with stale[0].open("rb") as f:
            old = json.loads(f.readline(4096)).get("build")
    except (OSError, ValueError, AttributeError):
        old = None
    if not isinstance(old, dict):
        return f"key changed: {stale[0].name} is another build (an older periscope's)"
    changed = []
    for name, words in _CHANGES:
        was, now = str(old.get(name, "?"))[:80], facts.get(name, "?")
        if was != now:
            changed.append(f"{words} {was} -> {now}" if name in ("kernel", "kernel_build", "bcc")
                           else words)
    return "key changed: " + (", ".join(changed) or "another build") + " since the last compile"


def _int(v: Any, hi: int = 1 << 32) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < hi:
        raise ValueError(f"bad number {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"bad string {v!r}")
    return v


def _parse(doc: dict[str, Any]) -> ProbeObject:
    maps = tuple(MapDef(_str(m["name"]), _int(m["type"]), _int(m["key_size"]),
                        _int(m["value_size"]), _int(m["max_entries"]), _int(m["flags"]))
                 for m in doc["maps"])
    names = {m.name for m in maps}
    if len(names) != len(maps):
        raise ValueError("a map name twice")
    progs = []
    for p in doc["progs"]:
        insns = base64.b64decode(_str(p["insns"]), validate=True)
        if not insns or len(insns) % 8:
            raise ValueError(f"program {p['name']!r}: {len(insns)} bytes of instructions")
        kind = _str(p["kind"])
        if kind not in PROG_TYPES:
            raise ValueError(f"program {p['name']!r}: kind {kind!r}")
        relocs = tuple((_int(i, len(insns) // 8 - 1), _str(n)) for i, n in p["relocs"])
        prog = ProgDef(_str(p["name"]), kind, _str(p["tp"]), insns, relocs)
        check(prog, names)
        progs.append(prog)
    return ProbeObject(_str(doc["license"]), _int(doc["kern_version"]), maps, tuple(progs))


def check(prog: ProgDef, maps: set[str]) -> None:
    """Every map reference is relocated to a known map (never left as a number that would
    name some fd of ours) and no forbidden helper is called. Raises ValueError."""
    at = dict(prog.relocs)
    if len(at) != len(prog.relocs) or not set(at.values()) <= maps:
        raise ValueError(f"program {prog.name!r}: bad relocations")
    for i in range(len(prog.insns) // 8):
        op, regs, _off, imm = INSN.unpack_from(prog.insns, i * 8)
        src = regs >> 4
        if op == LD_IMM64 and src and (src != PSEUDO_MAP_FD or i not in at):
            raise ValueError(f"program {prog.name!r}: unrelocated pseudo load at {i}")
        if i in at and (op != LD_IMM64 or src != PSEUDO_MAP_FD):
            raise ValueError(f"program {prog.name!r}: relocation {i} is not a map load")
        if op == CALL and src:
            raise ValueError(f"program {prog.name!r}: BPF-to-BPF call at {i}")
        if op == CALL and imm in FORBIDDEN_HELPERS:
            raise ValueError(f"program {prog.name!r} calls {FORBIDDEN_HELPERS[imm]}")
