"""Load a cached probe object (probes/objcache.py) with bpf(2): create its maps, patch their
fds into the programs and load each program through the kernel's verifier. No bcc, no
clang: a few hundred milliseconds where a compile takes seconds.

load_probe() is how probes get loaded: from the cache when it holds this exact build,
else from the bcc helper (probes/loader.py), which then writes the cache. Either way the
manifest has the same shape, so a probe cannot tell where its fds came from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

from probes import bpfsys, objcache
from probes.bpfsys import BpfError
from probes.loader import PROBE_DIR, PROBES, probe_flags, spawn_loader
from probes.objcache import PROG_TYPES, ProbeObject

log = logging.getLogger("periscope.probe")


def instantiate(obj: ProbeObject, user_maps: tuple[str, ...]) -> dict[str, Any]:
    """{"progs": [...], "maps": [...]} with an "fd" in each entry, maps in user_maps order.
    The other maps' fds are closed once every program holds them. Raises BpfError
    (nothing stays open) if the kernel refuses a map or a program."""
    map_fds: dict[str, int] = {}
    prog_fds: list[int] = []
    try:
        for m in obj.maps:
            map_fds[m.name] = bpfsys.map_create(m.type, m.key_size, m.value_size,
                                                m.max_entries, m.flags, m.name)
        progs = []
        for p in obj.progs:
            code = bytearray(p.insns)
            for index, name in p.relocs:
                struct.pack_into("<i", code, index * 8 + 4, map_fds[name])
            fd = bpfsys.prog_load(PROG_TYPES[p.kind], bytes(code), obj.license,
                                  obj.kern_version, p.name)
            prog_fds.append(fd)
            progs.append({"name": p.name, "kind": p.kind, "tp": p.tp, "fd": fd})
        missing = [n for n in user_maps if n not in map_fds]
        if missing:
            raise bpfsys.BpfError(0, f"maps missing from the cached object: {missing}")
        defs = {m.name: m for m in obj.maps}
        maps = [{"name": n, "type": defs[n].type, "key_size": defs[n].key_size,
                 "value_size": defs[n].value_size, "max_entries": defs[n].max_entries,
                 "fd": map_fds.pop(n)} for n in user_maps]
    except BaseException:
        for fd in (*prog_fds, *map_fds.values()):
            os.close(fd)
        raise
    for fd in map_fds.values():  # only the programs use these; they hold a reference
        os.close(fd)
    return {"progs": progs, "maps": maps}


def _private_dir(path: Path) -> bool:
    """Create path 0700 if missing; True if it is a directory only we can write."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path, follow_symlinks=False)
    except OSError as err:
        log.warning("probe cache directory %s: %s (compiling without a cache)", path, err)
        return False
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.geteuid() \
            or st.st_mode & 0o022:
        log.warning("probe cache directory %s is not ours alone: not using it", path)
        return False
    return True


def cache_build(probe: str, args: list[str], root: Path = PROBE_DIR.parent
                ) -> tuple[dict[str, str], str]:
    """(objcache.build() facts, key) of a probe compiled with these loader options: what
    the daemon looks up and the helper writes under."""
    src = root / "probes"
    facts = objcache.build(probe, [src / p.name for p in PROBES[probe].sources],
                           src.glob("*.h"), probe_flags(probe, args))
    return facts, objcache.key_of(facts)


def cached(probe: str, args: list[str], root: Path, cache_dir: Path) -> Path | None:
    """The cache file that holds this exact build and passes every check, else None."""
    _facts, digest = cache_build(probe, args, root)
    path = objcache.path_for(cache_dir, probe, digest)
    try:
        return path if objcache.read(path, digest) is not None else None
    except objcache.CacheError:
        return None


def load_probe(probe: str, args: list[str], root: Path = PROBE_DIR.parent,
               cache_dir: Path | None = None) -> dict[str, Any]:
    """The manifest of a loaded probe (an "fd" in every entry, "cached": bool): from the
    cache in cache_dir when it holds this exact build, else from the helper, which then
    writes it. A cache that fails any check, or that the kernel refuses, is dropped and
    rebuilt. Raises ProbeError."""
    if cache_dir is None or not _private_dir(cache_dir):
        return {**spawn_loader(probe, args, root), "cached": False}
    facts, digest = cache_build(probe, args, root)
    path = objcache.path_for(cache_dir, probe, digest)
    try:
        obj = objcache.read(path, digest)
        if obj is not None:
            return {**instantiate(obj, PROBES[probe].user_maps), "cached": True}
        why = objcache.why_compile(cache_dir, probe, facts)
    except (objcache.CacheError, BpfError) as err:
        log.warning("probe cache unusable, compiling again: %s", err)
        why = "the cached build was unusable"
        with contextlib.suppress(OSError):
            path.unlink()
    # Say why before the wait: a compile takes seconds (tens under emulation), and the
    # first session after a kernel or bcc upgrade waits for it.
    log.info("compiling the %s probe with bcc (%s): seconds, tens under emulation", probe, why)
    man = spawn_loader(probe, [*args, "--cache", str(path), "--cache-key", digest,
                               "--cache-build", json.dumps(facts)], root)
    if man.get("cache") != "written":
        log.warning("probe cache %s: %s", path, man.get("cache", "not written"))
    return {**man, "cached": False}
