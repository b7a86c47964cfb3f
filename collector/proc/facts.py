"""pid -> process facts (comm, exe, uid/user, cgroup, systemd unit) from procfs, cached."""

from __future__ import annotations

import contextlib
import os
import pwd
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from collector.selectors import unit_from_cgroup


@dataclass(frozen=True)
class ProcFacts:
    pid: int
    comm: str | None
    exe: str | None
    uid: int | None
    user: str | None
    cgroup: str | None
    unit: str | None
    ppid: int | None = None


def _user(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class Enricher:
    """Reads /proc/PID once per process and caches the facts (LRU, bounded)."""

    def __init__(self, procfs: str | Path = "/proc", capacity: int = 8192,
                 cgroup_path: Callable[[int], str | None] | None = None) -> None:
        self.procfs = Path(procfs)
        self.capacity = capacity
        self._cache: OrderedDict[int, ProcFacts] = OrderedDict()
        self.misses = 0  # process gone before we could read it (expected race)
        self.kernel_named = 0  # ... and named from what the kernel recorded instead
        self._cgroup_path = cgroup_path  # cgroup v2 id -> path (Resolver.cgroup_path)

    def facts(self, pid: int) -> ProcFacts:
        hit = self._cache.get(pid)
        if hit is not None:
            self._cache.move_to_end(pid)
            return hit
        facts = self.read(pid)
        self._cache[pid] = facts
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return facts

    def complete(self, facts: ProcFacts, comm: str, cgroup_id: int) -> ProcFacts:
        """Facts /proc could not give (the process exited first), filled in from what the
        kernel recorded with its event: the comm, and the cgroup (hence the unit) by id.
        What /proc did give is kept. Cached like a read."""
        cgroup = facts.cgroup
        if cgroup is None and cgroup_id and self._cgroup_path is not None:
            cgroup = self._cgroup_path(cgroup_id)
        done = replace(facts, comm=facts.comm if facts.comm is not None else (comm or None),
                       cgroup=cgroup, unit=facts.unit or unit_from_cgroup(cgroup))
        if done != facts:
            self.kernel_named += 1
            if facts.pid in self._cache:
                self._cache[facts.pid] = done
        return done

    def forget(self, pid: int) -> None:
        """Call on exec/exit: the facts change or the pid may be reused."""
        self._cache.pop(pid, None)

    def read(self, pid: int) -> ProcFacts:
        base = self.procfs / str(pid)
        comm = exe = cgroup = None
        uid = ppid = None
        try:
            comm = (base / "comm").read_text().rstrip("\n")
            for line in (base / "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    uid = int(line.split()[1])
                elif line.startswith("PPid:"):
                    ppid = int(line.split()[1])
            cg = (base / "cgroup").read_text()
            cgroup = next((ln[3:] for ln in cg.splitlines() if ln.startswith("0::")), None)
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            # The process exited (or is hidden) mid-read: a partial record, counted.
            self.misses += 1
        with contextlib.suppress(OSError):  # kernel threads and exited processes have no exe
            exe = os.readlink(base / "exe")
        return ProcFacts(pid, comm, exe, uid, _user(uid), cgroup, unit_from_cgroup(cgroup), ppid)
