"""Selectors -> the processes they name right now, read from procfs and cgroupfs.

Both roots are constructor arguments so tests run on a fake tree (tests/data/proc and a
cgroup tree in tmp_path). The policy, the gate and the tracer all resolve through here.
"""

from __future__ import annotations

import os
from pathlib import Path

from collector.selectors import Selector, parse_selector


def cgroup2_root(mountinfo: str | Path = "/proc/self/mountinfo") -> str:
    """Where the unified (v2) cgroup hierarchy is mounted: /sys/fs/cgroup on a pure v2 host,
    /sys/fs/cgroup/unified on a hybrid one (systemd's legacy layout, as on this CI host)."""
    found: list[str] = []
    try:
        text = Path(mountinfo).read_text()
    except OSError:
        return "/sys/fs/cgroup"
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == ["cgroup2"] and len(fields) > 4:
            found.append(fields[4].replace("\\040", " "))
    if "/sys/fs/cgroup" in found or not found:
        return "/sys/fs/cgroup"
    return found[0]


CGROUP_IDS_MAX = 65536   # cgroup ids remembered by cgroup_path()
CGROUP_WALK_MAX = 100_000  # directories one cgroup_path() walk visits at most


class Resolver:
    """Looks processes up by pid, comm, exe, cgroup or systemd unit. Reads only."""

    def __init__(self, procfs: str | Path = "/proc", cgroot: str | Path = "/sys/fs/cgroup"
                 ) -> None:
        self.procfs = Path(procfs)
        self.cgroot = Path(cgroot)
        self._by_id: dict[int, str | None] = {}  # cgroup id -> path, as last found

    def exists(self, pid: int) -> bool:
        # procfs, not kill(pid, 0): we never send a process anything, not even signal 0
        return (self.procfs / str(pid)).is_dir()

    def pids(self, selector: Selector | str) -> list[int]:
        """Processes a selector names right now (`*` names none: it is not a target)."""
        sel = parse_selector(selector) if isinstance(selector, str) else selector
        if sel.kind == "pid":
            return [int(sel.value)] if self.exists(int(sel.value)) else []
        if sel.kind == "comm":
            return self.pids_by_comm(sel.value)
        if sel.kind == "exe":
            return self.pids_by_exe(sel.value)
        if sel.kind == "cgroup":
            return self.pids_in_cgroup(sel.value)
        if sel.kind == "unit":
            path = self.unit_cgroup(sel.value)
            return self.pids_in_cgroup(path) if path else []
        return []

    def _scan(self) -> list[Path]:
        return [e for e in self.procfs.iterdir() if e.name.isdigit()]

    def pids_by_comm(self, comm: str) -> list[int]:
        out = []
        for entry in self._scan():
            try:
                if (entry / "comm").read_text().rstrip("\n") == comm:
                    out.append(int(entry.name))
            except OSError:
                continue  # exited while scanning
        return sorted(out)

    def pids_by_exe(self, exe: str) -> list[int]:
        out = []
        for entry in self._scan():
            try:
                if os.readlink(entry / "exe") == exe:
                    out.append(int(entry.name))
            except OSError:
                continue  # exited, or a kernel thread (no exe)
        return sorted(out)

    def cgroup_dir(self, path: str) -> Path:
        """The cgroupfs directory of a cgroup v2 path ("/system.slice/x.service")."""
        return self.cgroot / path.lstrip("/")

    def pids_in_cgroup(self, path: str) -> list[int]:
        """Every pid in a cgroup v2 subtree."""
        out: list[int] = []
        for procs in self.cgroup_dir(path).rglob("cgroup.procs"):
            try:
                out.extend(int(x) for x in procs.read_text().split())
            except OSError:
                continue  # removed while scanning
        return sorted(out)

    def unit_cgroup(self, unit: str) -> str | None:
        """cgroup path of a systemd unit (searched: units live under *.slice)."""
        for cand in sorted(self.cgroot.rglob(unit)):
            if cand.is_dir():
                return "/" + str(cand.relative_to(self.cgroot))
        return None

    def cgroup_id(self, path: str) -> int:
        """cgroup v2 id of a cgroup (its kernfs inode number): what the kernel filter keys on.

        Raises OSError if the cgroup does not exist.
        """
        return os.stat(self.cgroup_dir(path)).st_ino

    def cgroup_path(self, cgroup_id: int) -> str | None:
        """The cgroup v2 path ("/system.slice/x.service") whose id (kernfs inode) is
        cgroup_id, or None. Only for processes gone before /proc could be read: a walk of
        cgroupfs, remembered (a miss too, until the next walk finds a new cgroup)."""
        if cgroup_id in self._by_id:
            return self._by_id[cgroup_id]
        if len(self._by_id) > CGROUP_IDS_MAX:
            self._by_id.clear()
        found = "/" if cgroup_id == _inode(self.cgroot) else None
        seen = 0
        for top, dirs, _files in os.walk(self.cgroot) if found is None else ():
            for d in dirs:
                seen += 1
                try:
                    ino = os.stat(os.path.join(top, d), follow_symlinks=False).st_ino
                except OSError:
                    continue  # removed while walking
                path = "/" + os.path.relpath(os.path.join(top, d), self.cgroot)
                self._by_id.setdefault(ino, path)
                if ino == cgroup_id:
                    found = path
            if found is not None or seen > CGROUP_WALK_MAX:
                break
        self._by_id[cgroup_id] = found
        return found


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1
