"""Snapshot sections for the address space: maps summarised by mapping, and the shared
libraries with the TLS library flagged and whether periscope's TLS uprobes can trace it."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

from collector.snapshot.context import Ctx
from collector.snapshot.parse import Mapping, parse_maps
from probes.elfsym import ElfError, fd_symbol_offsets, open_elf
from probes.tls import REQUIRED, libssl_paths

MAX_MAP_FILES = 1024  # distinct mapped files listed (largest first)
# What probes/tls.py needs: a libssl is attached only if it exports all of these.
TLS_SYMBOLS = tuple(sorted(REQUIRED))

_SHARED_OBJECT = re.compile(r"\.so(\.[0-9]+)*$")
_TLS_LIBS = (  # basename prefix -> TLS stack
    ("libssl.so", "openssl"), ("libgnutls.so", "gnutls"), ("libssl3.so", "nss"),
    ("libnss3.so", "nss"), ("libwolfssl.so", "wolfssl"), ("libmbedtls.so", "mbedtls"),
    ("libs2n.so", "s2n"),
)
_SPECIAL = {"[heap]": "heap", "[vdso]": "vdso", "[vvar]": "vvar", "[vvar_vclock]": "vvar",
            "[vsyscall]": "vsyscall", "[uprobes]": "uprobes"}
_DELETED = " (deleted)"


def _region(path: str) -> str | None:
    """The summed region a mapping belongs to, or None for a file mapping."""
    if not path:
        return "anon"
    if not path.startswith("["):
        return None
    if path.startswith("[stack"):
        return "stack"
    if path.startswith("[anon"):  # [anon:NAME] names are set by the process: not shown
        return "anon"
    return _SPECIAL.get(path, "other")


def _read_maps(ctx: Ctx) -> list[Mapping]:
    if ctx.maps is None:
        ctx.maps = parse_maps(ctx.proc.text("maps"))
    return ctx.maps


def maps(ctx: Ctx) -> dict[str, Any]:
    """Sizes by mapped file (with its permissions) and by region (anon, heap, stack, ...)."""
    regions: Counter[str] = Counter()
    files: dict[str, tuple[int, set[str], int]] = {}
    total = 0
    ms = _read_maps(ctx)
    for m in ms:
        size = m.end - m.start
        total += size
        region = _region(m.path)
        if region is not None:
            regions[region] += size
            continue
        sz, perms, n = files.get(m.path, (0, set(), 0))
        perms.add(m.perms)
        files[m.path] = (sz + size, perms, n + 1)
    ranked = sorted(files.items(), key=lambda kv: -kv[1][0])
    return {
        "count": len(ms), "total": total, "regions": dict(regions),
        "files": [{"path": ctx.text(p), "size": sz, "perms": sorted(perms), "mappings": n}
                  for p, (sz, perms, n) in ranked[:MAX_MAP_FILES]],
        "files_truncated": max(0, len(ranked) - MAX_MAP_FILES),
    }


def tls_stack(path: str) -> str | None:
    base = os.path.basename(path)
    return next((stack for prefix, stack in _TLS_LIBS if base.startswith(prefix)), None)


def traceable(ctx: Ctx, lib: str, candidates: set[str]) -> tuple[bool, str]:
    """Whether probes/tls.py would attach to this library: it must be one libssl_paths()
    returns and export every hooked symbol (checked in the file the process maps, through
    its own root, like the probe does)."""
    if tls_stack(lib) != "openssl":
        return False, "periscope's TLS uprobes cover OpenSSL's libssl only"
    if lib.endswith(_DELETED):
        return False, "the mapped file was deleted or replaced on disk"
    if lib not in candidates:
        return False, "not a libssl path the TLS probe attaches to"
    try:
        fd = open_elf(f"{ctx.proc.magic}/root{lib}")
    except ElfError:
        return False, "not a regular file within the probe's size limit"
    except OSError as err:
        return False, f"cannot open the library: {err.strerror}"
    try:
        found = fd_symbol_offsets(fd, TLS_SYMBOLS)
    except (OSError, ElfError):
        return False, "unreadable ELF"
    finally:
        os.close(fd)
    missing = [s for s in TLS_SYMBOLS if s not in found]
    if missing:
        return False, "does not export " + ", ".join(missing)
    return True, "exports " + ", ".join(TLS_SYMBOLS)


def libraries(ctx: Ctx) -> list[dict[str, Any]]:
    """Mapped shared objects in load order; TLS stacks flagged with `tls` and `traceable`."""
    prefix = f"{ctx.procfs}/{ctx.pid}/root"
    candidates = {p[len(prefix):] for p in libssl_paths(ctx.pid, ctx.procfs)
                  if p.startswith(prefix)}
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for m in _read_maps(ctx):
        path = m.path
        if not path.startswith("/") or path in seen:
            continue
        if not _SHARED_OBJECT.search(path.removesuffix(_DELETED)):
            continue
        seen.add(path)
        entry: dict[str, Any] = {"path": ctx.text(path)}
        if path.endswith(_DELETED):
            entry["deleted"] = True
        stack = tls_stack(path.removesuffix(_DELETED))
        if stack is not None:
            entry["tls"] = stack
            entry["traceable"], entry["why"] = traceable(ctx, path, candidates)
        out.append(entry)
    return out
