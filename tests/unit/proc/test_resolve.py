"""Resolver on a fake procfs (tests/data/proc plus processes made here) and a fake cgroup
tree in tmp_path: every selector kind, units found under slices, cgroup ids."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from collector.proc.resolve import Resolver, cgroup2_root

DATA_PROC = Path(__file__).parents[2] / "data" / "proc"


@pytest.fixture
def host(tmp_path: Path) -> Resolver:
    proc = tmp_path / "proc"
    shutil.copytree(DATA_PROC, proc, symlinks=True)
    for pid, comm, exe in ((100, "nginx", "/usr/sbin/nginx"), (101, "nginx", "/usr/sbin/nginx"),
                           (102, "bash", "/usr/bin/bash"), (103, "kthreadd", None)):
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "comm").write_text(comm + "\n")
        if exe:
            os.symlink(exe, proc / str(pid) / "exe")
    (proc / "self").symlink_to("102")  # non-numeric entries are not processes
    (proc / "meminfo").write_text("MemTotal: 1 kB\n")
    cg = tmp_path / "cgroup"
    for path, pids in (("system.slice/nginx.service", [100, 101]),
                       ("system.slice/nginx.service/worker", [4242]),
                       ("system.slice/nginx-exporter.service", [55]),
                       ("user.slice/user-1000.slice/session-3.scope", [102])):
        (cg / path).mkdir(parents=True)
        (cg / path / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))
    return Resolver(proc, cg)


@pytest.mark.parametrize(("selector", "pids"), [
    ("pid:4242", [4242]),
    ("pid:100", [100]),
    ("pid:999", []),                                     # no such process
    ("comm:nginx", [100, 101]),
    ("comm:fakesrv", [4242]),                            # tests/data/proc/4242
    ("comm:ngin", []),
    ("exe:/usr/sbin/nginx", [100, 101]),
    ("exe:/usr/sbin", []),
    ("unit:nginx.service", [100, 101, 4242]),            # the unit's whole subtree
    ("unit:session-3.scope", [102]),
    ("unit:absent.service", []),
    ("cgroup:/system.slice/nginx.service/worker", [4242]),
    ("cgroup:/system.slice", [55, 100, 101, 4242]),
    ("cgroup:/nowhere", []),
    ("*", []),                                           # not a target
])
def test_selector_to_pids(host: Resolver, selector: str, pids: list[int]) -> None:
    assert host.pids(selector) == pids


def test_units_and_cgroup_ids(host: Resolver) -> None:
    assert host.unit_cgroup("nginx.service") == "/system.slice/nginx.service"
    assert host.unit_cgroup("nginx-exporter.service") == "/system.slice/nginx-exporter.service"
    assert host.unit_cgroup("none.service") is None
    assert host.cgroup_id("/system.slice/nginx.service") == os.stat(
        host.cgroot / "system.slice/nginx.service").st_ino
    with pytest.raises(OSError):
        host.cgroup_id("/system.slice/gone.service")
    assert host.exists(4242) and not host.exists(4243)


def test_default_roots_are_the_host() -> None:
    r = Resolver()
    assert (r.procfs, r.cgroot) == (Path("/proc"), Path("/sys/fs/cgroup"))
    assert r.exists(os.getpid())
    assert os.getpid() in r.pids(f"pid:{os.getpid()}")


HYBRID = """\
25 31 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,name=systemd
"""
UNIFIED = "33 25 0:28 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n"


@pytest.mark.parametrize(("text", "root"), [
    (HYBRID, "/sys/fs/cgroup/unified"), (UNIFIED, "/sys/fs/cgroup"),
    ("33 25 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", "/sys/fs/cgroup"),
])
def test_cgroup2_root_follows_the_mount(tmp_path: Path, text: str, root: str) -> None:
    (tmp_path / "mountinfo").write_text(text)
    assert cgroup2_root(tmp_path / "mountinfo") == root
    assert cgroup2_root(tmp_path / "missing") == "/sys/fs/cgroup"
