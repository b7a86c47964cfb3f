"""Profiler: sample the on-CPU stacks of target processes with profile.bpf.c, without bcc.

The loader helper (probes/loader.py --probe profile) compiles and loads the program and
hands back its fds; this module opens one software CPU-clock perf event per online CPU
(probes/bpfsys.py), attaches the program to each, fills the in-kernel target map, and at
the end reads the counts and the stack map with bpf(2). Closing the perf event fds
detaches; closing the map fds frees the kernel's memory. Symbols are not resolved here
(probes/symbolize.py does, while the targets still run).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from probes import bpfsys
from probes.loader import PROBE_DIR, ProbeError
from probes.objload import load_probe

__all__ = ["ProfileOptions", "ProfileStat", "Profiler", "RawProfile", "RawSample"]

log = logging.getLogger("periscope.profile")

# struct sample_key (profile.h): tgid, user stack id, kernel stack id, comm[16]
SAMPLE_KEY = struct.Struct("<Iii16s")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
MAX_FREQ = 1000  # Hz; the kernel's own cap (perf_event_max_sample_rate) is far higher


class ProfileStat(enum.IntEnum):
    """enum profile_stat in profile.h."""

    SAMPLES = 0
    USER_COLLISION = 1
    USER_FULL = 2
    KERNEL_COLLISION = 3
    KERNEL_FULL = 4
    COUNTS_FULL = 5


@dataclass(frozen=True)
class ProfileOptions:
    stack_storage: int = 8192   # distinct stacks the kernel keeps (each ~1 KiB, preallocated)
    root: Path = PROBE_DIR.parent  # the tree the loader helper runs from
    cache_dir: Path | None = None  # compiled-probe cache (probes/objcache.py); None: compile


class RawSample(NamedTuple):
    """Samples of one (tgid, comm, user stack, kernel stack): addresses leaf first."""

    tgid: int
    comm: str
    user: tuple[int, ...]
    kernel: tuple[int, ...]
    user_error: int     # 0, or the negative errno get_stackid returned (-EFAULT: none)
    kernel_error: int
    samples: int  # how many times this key was sampled


@dataclass(frozen=True)
class RawProfile:
    samples: list[RawSample]
    stats: dict[str, int] = field(default_factory=dict)
    cpus: int = 0
    seconds: float = 0.0


class Profiler:
    """One loaded profile.bpf.c: load(), start(pids, freq), stop(), collect(), close()."""

    def __init__(self, options: ProfileOptions | None = None) -> None:
        self.options = options or ProfileOptions()
        self._fds: list[int] = []        # program and map fds from the loader
        self._links: list[int] = []      # one perf event per CPU (close = detach)
        self._maps: dict[str, bpfsys.Map] = {}
        self._prog = -1
        self._ncpus = 1
        self._started = 0.0
        self._seconds = 0.0

    def load(self) -> None:
        man = load_probe("profile", ["--stack-storage", str(self.options.stack_storage)],
                         root=self.options.root, cache_dir=self.options.cache_dir)
        self._fds = [p["fd"] for p in man["progs"]] + [m["fd"] for m in man["maps"]]
        try:
            if len(man["progs"]) != 1:
                raise ValueError(f"{len(man['progs'])} programs, want 1")
            self._prog = man["progs"][0]["fd"]
            self._ncpus = bpfsys.possible_cpus()
            self._maps.update(bpfsys.manifest_maps(man["maps"], self._ncpus))
            if self._maps["counts"].key_size != SAMPLE_KEY.size:  # profile.h vs SAMPLE_KEY
                raise ValueError(f"counts key is {self._maps['counts'].key_size} bytes, "
                                 f"SAMPLE_KEY {SAMPLE_KEY.size}")
        except (OSError, ValueError) as err:
            self.close()
            raise ProbeError(f"loading profile.bpf.c failed: {err}") from err

    def start(self, pids: Iterable[int], freq: int) -> None:
        """Target pids (tgids; their threads too) and start sampling every online CPU."""
        if not 1 <= freq <= MAX_FREQ:
            raise ValueError(f"frequency {freq} Hz is outside 1..{MAX_FREQ}")
        if self._prog < 0:
            raise ProbeError("start() before load()")
        try:
            for pid in pids:
                self._maps["profile_targets"].update(_U32.pack(pid), b"\1")
            for cpu in bpfsys.online_cpus():
                self._links.append(bpfsys.attach_cpu_clock(self._prog, cpu, freq))
        except (OSError, ValueError) as err:
            self.stop()
            raise ProbeError(f"attaching profile.bpf.c failed: {err}") from err
        self._started = time.monotonic()

    def stop(self) -> None:
        """Detach from every CPU (the maps stay readable)."""
        links, self._links = self._links, []
        for fd in links:
            os.close(fd)
        if self._started:
            self._seconds = time.monotonic() - self._started
            self._started = 0.0

    def close(self) -> None:
        self.stop()
        self._maps.clear()
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)
        self._prog = -1

    def __enter__(self) -> Profiler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run_stats(self) -> tuple[int, int]:
        """(ns, runs) the program has spent and run (kernel.bpf_stats_enabled=1 only)."""
        return bpfsys.prog_run_stats(self._prog)

    def stats(self) -> dict[str, int]:
        table = self._maps["profile_stats"]
        out = {}
        for s in ProfileStat:
            raw = table.lookup(_U32.pack(s.value))
            out[s.name.lower()] = sum(struct.unpack(f"<{self._ncpus}Q", raw)) if raw else 0
        return out

    def _stack(self, stack_id: int, cache: dict[int, tuple[int, ...]]) -> tuple[int, ...]:
        if stack_id < 0:
            return ()
        if stack_id not in cache:
            raw = self._maps["stacks"].lookup(_U32.pack(stack_id))
            addrs: list[int] = []
            if raw is not None:
                for (ip,) in _U64.iter_unpack(raw[:len(raw) // 8 * 8]):
                    if not ip:
                        break
                    addrs.append(ip)
            cache[stack_id] = tuple(addrs)
        return cache[stack_id]

    def collect(self) -> RawProfile:
        """Every counted (tgid, comm, stacks) with its addresses, and the kernel counters."""
        cache: dict[int, tuple[int, ...]] = {}
        samples = []
        for key, value in self._maps["counts"].items():
            tgid, ustack, kstack, comm = SAMPLE_KEY.unpack(key)
            (count,) = _U64.unpack_from(value)
            user = self._stack(ustack, cache)
            kernel = self._stack(kstack, cache)
            samples.append(RawSample(
                tgid, comm.split(b"\0", 1)[0].decode("utf-8", "replace"), user, kernel,
                ustack if ustack < 0 else (0 if user else -errno.ENOENT),
                kstack if kstack < 0 else (0 if kernel else -errno.ENOENT), count))
        # Distinct stacks stored: how full the stack map got, which is what makes a
        # collision (-EEXIST, a lost stack) likely.
        stats = self.stats() | {"stack_ids": len(cache)}
        return RawProfile(samples, stats, len(bpfsys.online_cpus()),
                          self._seconds or (time.monotonic() - self._started
                                            if self._started else 0.0))

    def run(self, pids: Iterable[int], duration_s: float, freq: int,
            cancel: threading.Event | None = None) -> RawProfile:
        """load + start + wait duration_s (or until cancel is set) + stop + collect."""
        pids = list(pids)
        if not self._fds:
            self.load()
        self.start(pids, freq)
        try:
            (cancel or threading.Event()).wait(duration_s)
        finally:
            self.stop()
        return self.collect()
