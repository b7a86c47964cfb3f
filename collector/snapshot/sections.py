"""Snapshot sections about the process itself: identity, parents, cgroup, namespaces, CPU,
threads, memory, limits, IO and the (redacted) environment. Each takes the Ctx and returns
a JSON-ready value; an OSError or ValueError fails only its own section."""

from __future__ import annotations

import errno
import pwd
from collections import Counter
from typing import Any

from collector.selectors import unit_from_cgroup
from collector.snapshot.context import Ctx
from collector.snapshot.parse import (
    STATES,
    kb,
    ns_inode,
    parse_io,
    parse_limits,
    parse_smaps_rollup,
    parse_stat,
    parse_status,
    split_nul,
)
from collector.snapshot.procdir import GONE_ERRNOS, ProcDir, SnapshotError

MAX_CMDLINE = 128 << 10   # argv bytes kept (the kernel allows ~2 MiB)
MAX_ENVIRON = 1 << 20     # environ bytes read
MAX_ENV_VARS = 4096
MAX_THREADS = 16384
MAX_PARENTS = 64


def _user(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _ids(value: str | None) -> list[int]:
    """"1000\t1000\t1000\t1000" (real, effective, saved, fs) -> ints."""
    return [int(x) for x in (value or "").split()]


def _optional_link(ctx: Ctx, name: str, unreadable: list[str]) -> str | None:
    """A link the caller may be refused (exe, cwd, root) without losing the section."""
    try:
        return ctx.text(ctx.proc.readlink(name))
    except PermissionError:
        unreadable.append(name)
    except OSError as err:
        if err.errno not in GONE_ERRNOS:  # kernel threads have no exe: simply absent
            raise
    return None


def boot_time(procfs: str) -> float:
    with open(f"{procfs}/stat", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise ValueError("no btime in stat")


def identity(ctx: Ctx) -> dict[str, Any]:
    st = parse_stat(ctx.proc.head("stat"))
    status = parse_status(ctx.proc.text("status", 64 << 10))
    raw, cut = ctx.proc.read("cmdline", MAX_CMDLINE)
    argv = [a.decode("utf-8", "surrogateescape") for a in split_nul(raw)]
    unreadable: list[str] = []
    uid, gid = _ids(status.get("Uid")), _ids(status.get("Gid"))
    ctx.start_time = round(boot_time(ctx.procfs) + st.starttime / ctx.clk_tck, 2)
    out: dict[str, Any] = {
        "comm": ctx.text(st.comm),
        "exe": _optional_link(ctx, "exe", unreadable),
        # argv is redacted as one line, like exec events: "--password hunter2" spans two args
        "cmdline": ctx.text(" ".join(argv)),
        "argc": len(argv),
        "cmdline_truncated": cut,
        "cwd": _optional_link(ctx, "cwd", unreadable),
        "root": _optional_link(ctx, "root", unreadable),
        "state": STATES.get(st.state, st.state),
        "ppid": st.ppid,
        "uid": uid[0] if uid else None,
        "euid": uid[1] if len(uid) > 1 else None,
        "user": _user(uid[0] if uid else None),
        "gid": gid[0] if gid else None,
        "egid": gid[1] if len(gid) > 1 else None,
        "groups": _ids(status.get("Groups")),
        "start_time": ctx.start_time,
        "num_threads": st.num_threads,
    }
    if unreadable:
        out["unreadable"] = unreadable
    return out


def parents(ctx: Ctx) -> list[dict[str, Any]]:
    """The chain of parents up to pid 1: pid, comm and user of each."""
    me = parse_stat(ctx.proc.head("stat"))
    chain: list[dict[str, Any]] = []
    seen = {ctx.pid}
    ppid, child_start = me.ppid, me.starttime
    while ppid > 0 and ppid not in seen and len(chain) < MAX_PARENTS:
        seen.add(ppid)
        try:
            with ProcDir(ctx.procfs, ppid) as p:
                st = parse_stat(p.head("stat"))
                uid = _ids(parse_status(p.text("status", 64 << 10)).get("Uid"))
        except (SnapshotError, OSError):
            # The parent exited while we walked up (its children get reparented): the
            # chain we could read ends here.
            chain.append({"pid": ppid, "comm": None, "user": None, "gone": True})
            break
        if st.starttime > child_start:
            # Started after its "child": the parent exited and its pid was reused.
            chain.append({"pid": ppid, "comm": None, "user": None, "gone": True})
            break
        chain.append({"pid": ppid, "comm": ctx.text(st.comm),
                      "user": _user(uid[0] if uid else None)})
        ppid, child_start = st.ppid, st.starttime
    return chain


def cgroup(ctx: Ctx) -> dict[str, Any]:
    path = None
    version = None
    for line in ctx.proc.text("cgroup", 64 << 10).splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, p = rest.partition(":")
        if hier == "0" and not controllers:
            path, version = p, 2
            break
        if controllers == "name=systemd":  # cgroup v1 (hybrid): systemd's own hierarchy
            path, version = p, 1
    unit = unit_from_cgroup(path)
    return {"path": ctx.text(path) if path is not None else None, "version": version,
            "unit": ctx.text(unit) if unit else None}


def _namespaces(p: ProcDir) -> dict[str, int | None]:
    return {name: ns_inode(p.readlink(f"ns/{name}")) for name in sorted(p.listdir("ns"))}


def namespaces(ctx: Ctx) -> dict[str, Any]:
    """Namespace inode ids, and which ones differ from pid 1's (a container, a sandbox)."""
    ids = _namespaces(ctx.proc)
    try:
        with ProcDir(ctx.procfs, 1) as init:
            init_ids = _namespaces(init)
    except (SnapshotError, OSError):
        return {"ids": ids, "differs_from_pid1": None}
    return {"ids": ids, "differs_from_pid1": sorted(
        n for n, ino in ids.items() if n in init_ids and ino != init_ids[n])}


def cpu(ctx: Ctx) -> dict[str, Any]:
    st = parse_stat(ctx.proc.head("stat"))
    status = parse_status(ctx.proc.text("status", 64 << 10))
    vol, invol = status.get("voluntary_ctxt_switches"), status.get("nonvoluntary_ctxt_switches")
    return {"user_s": ctx.seconds(st.utime), "system_s": ctx.seconds(st.stime),
            "last_cpu": st.processor,
            "voluntary_ctxt_switches": int(vol) if vol else None,
            "nonvoluntary_ctxt_switches": int(invol) if invol else None}


def threads(ctx: Ctx) -> dict[str, Any]:
    tids = sorted(int(t) for t in ctx.proc.listdir("task") if t.isdigit())
    listed: list[dict[str, Any]] = []
    by_state: Counter[str] = Counter()
    vanished = 0
    for tid in tids[:MAX_THREADS]:
        try:
            st = parse_stat(ctx.proc.head(f"task/{tid}/stat"))
        except OSError as err:
            if err.errno not in GONE_ERRNOS:
                raise
            vanished += 1  # the thread ended between the listing and this read: expected
            continue
        state = STATES.get(st.state, st.state)
        by_state[state] += 1
        listed.append({"tid": tid, "name": ctx.text(st.comm), "state": state,
                       "user_s": ctx.seconds(st.utime), "system_s": ctx.seconds(st.stime),
                       "last_cpu": st.processor})
    return {"count": len(tids), "by_state": dict(by_state), "list": listed,
            "truncated": len(tids) > MAX_THREADS, "vanished": vanished}


def memory(ctx: Ctx) -> dict[str, Any]:
    s = parse_status(ctx.proc.text("status", 64 << 10))
    out: dict[str, Any] = {
        "rss": kb(s.get("VmRSS")), "rss_anon": kb(s.get("RssAnon")),
        "rss_file": kb(s.get("RssFile")), "rss_shmem": kb(s.get("RssShmem")),
        "swap": kb(s.get("VmSwap")), "vm_size": kb(s.get("VmSize")),
        "vm_peak": kb(s.get("VmPeak")), "vm_hwm": kb(s.get("VmHWM")),
    }
    try:
        r = parse_smaps_rollup(ctx.proc.text("smaps_rollup", 64 << 10))
    except OSError as err:
        refused = err.errno in (errno.EACCES, errno.EPERM)
        if not refused and not (err.errno in GONE_ERRNOS and ctx.proc.alive()):
            raise
        # refused, a kernel thread (no address space: ESRCH), or a kernel before 4.14
        out["unreadable"] = ["smaps_rollup"]
        return out
    out.update({
        "pss": r.get("pss"), "pss_anon": r.get("pss_anon"), "pss_file": r.get("pss_file"),
        "pss_shmem": r.get("pss_shmem"), "swap_pss": r.get("swappss"),
        "private": r.get("private_clean", 0) + r.get("private_dirty", 0),
        "shared": r.get("shared_clean", 0) + r.get("shared_dirty", 0),
    })
    if out["swap"] is None:
        out["swap"] = r.get("swap")
    return out


def limits(ctx: Ctx) -> dict[str, Any]:
    return parse_limits(ctx.proc.text("limits", 64 << 10))


def io(ctx: Ctx) -> dict[str, Any]:
    return dict(parse_io(ctx.proc.text("io", 4096)))


def environ(ctx: Ctx) -> dict[str, Any]:
    """Every variable through redact_field: secret-named ones masked whole by name, every
    other value redacted like payload text. Names go through redact_text."""
    raw, cut = ctx.proc.read("environ", MAX_ENVIRON)
    items = split_nul(raw)
    if cut and items:
        items = items[:-1]  # the last variable was cut mid-way: leave it out, not half of it
    out: list[dict[str, Any]] = []
    for item in items[:MAX_ENV_VARS]:
        name_b, sep, value_b = item.partition(b"=")
        name = name_b.decode("utf-8", "surrogateescape")
        value = value_b.decode("utf-8", "surrogateescape")
        out.append({"name": ctx.text(name),
                    "value": ctx.named(name, value) if sep else None})
    return {"count": len(items), "bytes": len(raw), "truncated": cut or len(items) > MAX_ENV_VARS,
            "vars": out}


def describe(err: BaseException) -> str:
    """Why a section failed, in words that never carry data read from the process."""
    if isinstance(err, OSError):
        if err.errno in GONE_ERRNOS:
            return "process exited"
        if err.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        return f"read error: {errno.errorcode.get(err.errno or 0, 'unknown')}"
    return f"unparsable procfs content ({type(err).__name__})"
