"""collect() on the fake procfs: every section's facts, redaction, partial snapshots
(permission, missing files, exit and zombie mid-way), the store hook and counters."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.snapshot import SCHEMA, SECTION_NAMES, NoSuchProcess, collect, render_summary
from collector.snapshot.procdir import ProcDir
from redact import Redactor
from tests.unit.snapshot.fakeproc import PID, PROC

SECRETS = ("hunter2cmd", "hunter2env", "eyJhbGciOiJIUzI1NiJ9", "c2lnbmF0dXJl",
           "4111 1111 1111 1111", "abcdef123456", "session-cache")
TICK = os.sysconf("SC_CLK_TCK")


@pytest.fixture
def snap(redactor: Redactor) -> dict[str, Any]:
    return collect(PID, redactor, procfs=str(PROC))


def test_complete_and_json_ready(snap: dict[str, Any]) -> None:
    assert snap["schema"] == SCHEMA == 1
    assert (snap["pid"], snap["partial"], snap["exited"], snap["failed"]) == (PID, False, False,
                                                                              {})
    assert set(SECTION_NAMES) - set(snap) == {"store"}  # no store hook given
    assert orjson.loads(orjson.dumps(snap)) == snap


def test_no_secret_anywhere(snap: dict[str, Any]) -> None:
    text = orjson.dumps(snap).decode() + render_summary(snap)
    for secret in SECRETS:
        assert secret not in text


def test_identity(snap: dict[str, Any]) -> None:
    ident = snap["identity"]
    assert ident == {
        "comm": "snapsrv", "exe": "/usr/bin/snapsrv",
        "cmdline": "snapsrv --port 8080 --password [REDACTED:secret]", "argc": 5,
        "cmdline_truncated": False, "cwd": "/srv/snap", "root": "/nonexistent-snapshot-root",
        "state": "sleeping", "ppid": 5100, "uid": 0, "euid": 0, "user": "root", "gid": 0,
        "egid": 0, "groups": [4, 27], "start_time": round(1700000000 + 123456 / TICK, 2),
        "num_threads": 3,
    }
    assert snap["parents"] == [{"pid": 5100, "comm": "snapinit", "user": "root"}]
    assert snap["cgroup"] == {"path": "/system.slice/snap.service", "version": 2,
                              "unit": "snap.service"}
    assert snap["namespaces"]["ids"]["net"] == 4026532600
    assert len(snap["namespaces"]["ids"]) == 7


def test_cpu_threads_memory_limits_io(snap: dict[str, Any]) -> None:
    assert snap["cpu"] == {"user_s": round(250 / TICK, 3), "system_s": round(75 / TICK, 3),
                           "last_cpu": 1, "voluntary_ctxt_switches": 120,
                           "nonvoluntary_ctxt_switches": 7}
    th = snap["threads"]
    assert th["count"] == 3 and th["by_state"] == {"sleeping": 1, "running": 1, "disk-sleep": 1}
    assert [(t["tid"], t["name"], t["state"]) for t in th["list"]] == [
        (5150, "snapsrv", "sleeping"), (5151, "worker-1", "running"), (5152, "io", "disk-sleep")]
    assert th["list"][1]["user_s"] == round(40 / TICK, 3)
    mem = snap["memory"]
    assert (mem["rss"], mem["pss"], mem["swap"], mem["private"], mem["shared"]) == (
        45000 * 1024, 40000 * 1024, 128 * 1024, 40000 * 1024, 5000 * 1024)
    assert snap["limits"]["max_open_files"] == {"soft": 1024, "hard": 524288, "units": "files"}
    assert snap["io"]["rchar"] == 1048576 and snap["io"]["syscw"] == 50


FDS = [  # fd, type, extra facts
    (0, "chr", {"path": "/dev/null", "mode": "r", "flags": []}),
    (1, "pipe", {"inode": 9001, "mode": "w"}),
    (3, "file", {"path": "/var/log/snap/app.log", "mode": "w", "flags": ["O_APPEND"],
                 "pos": 12345}),
    (4, "socket", {"inode": 7001, "local": "127.0.0.1:8080", "peer": None, "state": "LISTEN"}),
    (5, "socket", {"local": "127.0.0.1:8080", "peer": "10.0.0.5:54321",
                   "state": "ESTABLISHED", "flags": ["O_NONBLOCK", "O_CLOEXEC"]}),
    (6, "socket", {"local": "[::1]:443", "family": "AF_INET6"}),
    (8, "socket", {"local": "/run/snap/control.sock", "family": "AF_UNIX"}),
    (9, "anon_inode", {"kind": "eventfd"}),
    (10, "file", {"path": "/tmp/token=[REDACTED:secret]", "deleted": True, "pos": 4096}),
    (11, "memfd", {"path": "/memfd:jit", "deleted": True}),
    (12, "ns", {"kind": "net", "inode": 4026532600}),
    (13, "socket", {"inode": 7999}),
    (14, "anon_inode", {"kind": "eventpoll"}),
]


@pytest.mark.parametrize(("fd", "kind", "facts"), FDS)
def test_fds(snap: dict[str, Any], fd: int, kind: str, facts: dict[str, Any]) -> None:
    entry = next(e for e in snap["fds"]["list"] if e["fd"] == fd)
    assert entry["type"] == kind
    assert {k: entry.get(k) for k in facts} == facts


def test_fd_counts(snap: dict[str, Any]) -> None:
    fds = snap["fds"]
    assert fds["count"] == 16 and len(fds["list"]) == 16 and fds["vanished"] == 0
    assert fds["by_type"] == {"chr": 1, "pipe": 2, "file": 2, "socket": 7, "anon_inode": 2,
                              "memfd": 1, "ns": 1}
    assert all("pos" not in e for e in fds["list"] if e["type"] in ("socket", "pipe"))


def test_sockets_like_connection_records(snap: dict[str, Any]) -> None:
    got = [(s["fd"], s["family"], s["type"], s["laddr"], s["raddr"], s["state"])
           for s in snap["sockets"]]
    assert got == [
        (4, "AF_INET", "SOCK_STREAM", ["127.0.0.1", 8080], None, "LISTEN"),
        (5, "AF_INET", "SOCK_STREAM", ["127.0.0.1", 8080], ["10.0.0.5", 54321], "ESTABLISHED"),
        (6, "AF_INET6", "SOCK_STREAM", ["::1", 443], None, "LISTEN"),
        (7, "AF_INET", "SOCK_DGRAM", ["0.0.0.0", 53], None, "NONE"),
        (8, "AF_UNIX", "SOCK_STREAM", "/run/snap/control.sock", None, "LISTEN"),
        (13, None, None, None, None, None),  # a family the snapshot does not read
        (15, "AF_UNIX", "SOCK_STREAM", None, None, "CONNECTED"),
    ]
    assert all(s["pid"] == PID for s in snap["sockets"])
    assert snap["sockets"][0]["rx_queue"] == 3 and snap["sockets"][1]["tx_queue"] == 16


def test_maps_and_libraries(snap: dict[str, Any]) -> None:
    maps = snap["maps"]
    assert maps["count"] == 15
    assert maps["regions"] == {"heap": 1 << 20, "anon": (1 << 20) + 4096, "stack": 0x21000,
                               "vdso": 8192}
    files = {f["path"]: f for f in maps["files"]}
    assert files["/usr/bin/snapsrv"] == {"path": "/usr/bin/snapsrv", "size": 0x6000,
                                         "perms": ["r--p", "r-xp", "rw-p"], "mappings": 3}
    assert "/tmp/token=[REDACTED:secret]" in files
    assert maps["total"] == sum(f["size"] for f in maps["files"]) + sum(maps["regions"].values())
    libs = {lib["path"]: lib for lib in snap["libraries"]}
    assert list(libs) == ["/usr/lib/x86_64-linux-gnu/libc.so.6",
                          "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                          "/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
                          "/usr/lib/x86_64-linux-gnu/libold.so.1 (deleted)"]
    ssl = libs["/usr/lib/x86_64-linux-gnu/libssl.so.3"]
    # the fake root has no files: the probe could not read it either
    assert (ssl["tls"], ssl["traceable"]) == ("openssl", False)
    assert "No such file" in ssl["why"]
    gnutls = libs["/usr/lib/x86_64-linux-gnu/libgnutls.so.30"]
    assert (gnutls["tls"], gnutls["traceable"]) == ("gnutls", False)
    assert "tls" not in libs["/usr/lib/x86_64-linux-gnu/libc.so.6"]


def test_environ_redacted_by_name_and_by_value(snap: dict[str, Any]) -> None:
    env = {v["name"]: v["value"] for v in snap["environ"]["vars"]}
    assert env == {
        "PATH": "/usr/bin:/bin", "HOME": "/srv/snap",
        "DB_PASSWORD": "[REDACTED:secret]",                  # secret-named: masked whole
        "UPSTREAM_HEADER": "Bearer [REDACTED:jwt]",          # payload rules on the value
        "BILLING_NOTE": "card [REDACTED:credit_card]",
        "EMPTY": "", "NOEQUALS": None,
    }
    assert snap["environ"]["count"] == 7 and not snap["environ"]["truncated"]


def test_no_such_process(redactor: Redactor) -> None:
    with pytest.raises(NoSuchProcess):
        collect(99999, redactor, procfs=str(PROC))


def test_store_hook_gets_pid_and_start_time(redactor: Redactor) -> None:
    calls: list[tuple[int, float | None]] = []

    def facts(pid: int, since: float | None) -> dict[str, Any]:
        calls.append((pid, since))
        return {"recent_errors": [{"syscall": "connect", "errno": "ECONNREFUSED"}],
                "recent_connections": [], "odd": {1: b"x", "t": (1, 2)}}

    snap = collect(PID, redactor, procfs=str(PROC), store_facts=facts)
    assert calls == [(PID, snap["identity"]["start_time"])]
    assert snap["store"] == {"recent_errors": [{"syscall": "connect", "errno": "ECONNREFUSED"}],
                             "recent_connections": [], "odd": {"1": "b'x'", "t": [1, 2]}}
    assert not snap["partial"]
    orjson.dumps(snap)


def test_a_failing_store_hook_fails_its_section_only(redactor: Redactor) -> None:
    def broken(pid: int, since: float | None) -> dict[str, Any]:
        raise RuntimeError("database is locked: secret hunter2")

    counters: Counter[str] = Counter()
    snap = collect(PID, redactor, procfs=str(PROC), store_facts=broken, counters=counters)
    assert snap["failed"] == {"store": "store error (RuntimeError)"} and snap["partial"]
    assert "environ" in snap and not snap["exited"]
    assert counters == {"snapshots": 1, "snapshots_partial": 1}


def _refuse(monkeypatch: pytest.MonkeyPatch, names: set[str], err: int = errno.EACCES) -> None:
    real = ProcDir.read

    def read(self: ProcDir, name: str, limit: int = 8 << 20) -> tuple[bytes, bool]:
        if name in names:
            raise OSError(err, os.strerror(err), name)
        return real(self, name, limit)

    monkeypatch.setattr(ProcDir, "read", read)


def test_permission_problems_are_per_section(redactor: Redactor,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse(monkeypatch, {"environ", "io", "smaps_rollup"})
    snap = collect(PID, redactor, procfs=str(PROC))
    assert snap["failed"] == {"environ": "permission denied", "io": "permission denied"}
    assert snap["partial"] and not snap["exited"]
    assert snap["memory"]["unreadable"] == ["smaps_rollup"] and snap["memory"]["rss"]
    assert "environ" not in snap and "io" not in snap and snap["limits"]


def test_sockets_need_the_fds_section(redactor: Redactor,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProcDir, "listdir", lambda self, name: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "denied")) if name == "fd" else os.listdir(
        f"{self.procfs}/{self.pid}/{name}"))
    snap = collect(PID, redactor, procfs=str(PROC))
    assert snap["failed"] == {"fds": "permission denied", "sockets": "skipped: needs fds"}


def test_files_this_kernel_lacks_are_not_an_exit(fake_proc: Path, redactor: Redactor) -> None:
    (fake_proc / str(PID) / "io").unlink()
    (fake_proc / str(PID) / "smaps_rollup").unlink()
    snap = collect(PID, redactor, procfs=str(fake_proc))
    assert snap["failed"] == {"io": "not available"} and not snap["exited"]
    assert snap["memory"]["unreadable"] == ["smaps_rollup"]
    assert len(snap["sockets"]) == 7  # no net/udp6 in the fixture: not a failure


def test_exit_mid_snapshot_keeps_what_was_read(fake_proc: Path, redactor: Redactor) -> None:
    seen: list[str] = []

    def between(section: str) -> None:
        seen.append(section)
        if section == "threads":  # the process exits and is reaped: /proc/PID goes away
            shutil.rmtree(fake_proc / str(PID))

    counters: Counter[str] = Counter()
    snap = collect(PID, redactor, procfs=str(fake_proc), counters=counters, _between=between)
    read = ["identity", "parents", "cgroup", "namespaces", "cpu", "threads"]
    assert seen == [*read, "fds"]  # the hook runs after each section that was attempted
    assert snap["partial"] and snap["exited"]
    assert all(name in snap for name in read) and snap["threads"]["count"] == 3
    assert snap["failed"]["fds"] == "process exited"
    assert {k: v for k, v in snap["failed"].items() if k != "fds"} == {
        name: "not read: process exited" for name in SECTION_NAMES[7:-1]}
    assert counters == {"snapshots": 1, "snapshots_partial": 1, "snapshots_exited": 1}
    assert orjson.loads(orjson.dumps(snap)) == snap
    assert "PARTIAL (the process exited" in render_summary(snap)


def test_a_zombie_is_an_exit(fake_proc: Path, redactor: Redactor) -> None:
    """A zombie's fds, maps and environ read as empty: a section read after the process
    died is marked, and nothing more is read."""
    stat = fake_proc / str(PID) / "stat"

    def between(section: str) -> None:
        if section == "cpu":
            stat.write_text(stat.read_text().replace(") S ", ") Z ", 1))

    snap = collect(PID, redactor, procfs=str(fake_proc), _between=between)
    assert snap["exited"] and "cpu" not in snap["failed"] and "threads" in snap
    assert snap["failed"]["threads"] == "process exited during this section"
    assert snap["failed"]["environ"] == "not read: process exited"


def test_reads_never_follow_the_pid_to_another_directory(fake_proc: Path,
                                                         redactor: Redactor) -> None:
    """After /proc/PID is replaced (pid reuse), the snapshot goes on reading the directory
    it opened, which is gone, and never the new one."""
    def between(section: str) -> None:
        if section == "identity":
            old = fake_proc / str(PID)
            shutil.move(old, fake_proc / "old")
            shutil.copytree(fake_proc / "old", old, symlinks=True)
            shutil.rmtree(fake_proc / "old")
            (old / "environ").write_bytes(b"OTHER_PROCESS=1\0")

    snap = collect(PID, redactor, procfs=str(fake_proc), _between=between)
    assert snap["exited"] and "environ" not in snap


READ_ONLY = re.compile(
    r"(stat|status|cmdline|environ|cgroup|limits|io|smaps_rollup|maps|fd|task|ns"
    r"|net/(tcp|tcp6|udp|udp6|unix|netlink)|task/\d+/stat|fd/\d+|fdinfo/\d+|ns/\w+"
    r"|exe|cwd|root)")


def test_reads_only_the_listed_procfs_files(redactor: Redactor,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Never /proc/PID/mem, pagemap or anything that is not in the documented list."""
    touched: list[str] = []
    for method in ("read", "head", "readlink", "listdir", "stat"):
        real = getattr(ProcDir, method)

        def spy(self: ProcDir, name: str, *a: Any, _real: Any = real) -> Any:
            touched.append(name)
            return _real(self, name, *a)

        monkeypatch.setattr(ProcDir, method, spy)
    collect(PID, redactor, procfs=str(PROC))
    assert touched and all(READ_ONLY.fullmatch(n) for n in touched), sorted(set(touched))
    assert {"environ", "maps", "fd", "fdinfo/3", "net/tcp", "task/5151/stat"} <= set(touched)


def test_refused_links_and_a_process_without_address_space(
        redactor: Redactor, monkeypatch: pytest.MonkeyPatch) -> None:
    """exe/cwd refused: the identity still comes, saying which; a kernel thread's
    smaps_rollup and environ fail with ESRCH although it lives."""
    real = ProcDir.readlink

    def readlink(self: ProcDir, name: str) -> str:
        if name in ("exe", "cwd"):
            raise PermissionError(errno.EACCES, "denied")
        return real(self, name)

    monkeypatch.setattr(ProcDir, "readlink", readlink)
    _refuse(monkeypatch, {"smaps_rollup", "environ"}, errno.ESRCH)
    snap = collect(PID, redactor, procfs=str(PROC))
    ident = snap["identity"]
    assert (ident["exe"], ident["cwd"], ident["unreadable"]) == (None, None, ["exe", "cwd"])
    assert snap["memory"]["unreadable"] == ["smaps_rollup"] and "pss" not in snap["memory"]
    assert snap["failed"] == {"environ": "not available"} and not snap["exited"]
    assert "exe     (permission denied)" in render_summary(snap)
