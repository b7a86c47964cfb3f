"""Snapshot sections for open fds (type, path or peer, offset, flags) and their sockets."""

from __future__ import annotations

import re
import stat
from collections import Counter
from typing import Any

from collector.snapshot.context import Ctx, SectionSkipped
from collector.snapshot.net import (
    INET_TABLES,
    Sock,
    addr_json,
    parse_inet,
    parse_netlink,
    parse_unix,
)
from collector.snapshot.parse import open_mode, parse_fdinfo
from collector.snapshot.procdir import GONE_ERRNOS

MAX_FDS = 16384
MAX_NET = 32 << 20  # bytes of one socket table (a host with ~200k sockets)

_INODE_LINK = re.compile(r"^(socket|pipe):\[(\d+)\]$")
_NS_LINK = re.compile(r"^(cgroup|ipc|mnt|net|pid|time|user|uts):\[(\d+)\]$")
_DELETED = " (deleted)"
_STAT_TYPES = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISCHR, "chr"),
               (stat.S_ISBLK, "blk"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"))


def classify(ctx: Ctx, fd: int, target: str) -> dict[str, Any]:
    """An fd entry from its /proc/PID/fd link text (and a stat() for paths)."""
    m = _INODE_LINK.match(target)
    if m:
        return {"fd": fd, "type": m.group(1), "inode": int(m.group(2))}
    m = _NS_LINK.match(target)
    if m:
        return {"fd": fd, "type": "ns", "kind": m.group(1), "inode": int(m.group(2))}
    if target.startswith("anon_inode:"):
        return {"fd": fd, "type": "anon_inode", "kind": ctx.text(target[11:].strip("[]"))}
    if not target.startswith("/"):  # dmabuf:, future kernel link kinds
        return {"fd": fd, "type": "other", "target": ctx.text(target)}
    entry: dict[str, Any] = {"fd": fd}
    path = target
    if path.endswith(_DELETED):
        path = path[:-len(_DELETED)]
        entry["deleted"] = True
    if path.startswith("/memfd:"):
        entry["type"] = "memfd"
    else:
        try:
            # stat through the fd link: the open file itself, never a path lookup that
            # could land elsewhere (the path may be in another mount namespace). Like
            # `ls -l /proc/PID/fd`, it can wait on a hung network filesystem.
            mode = ctx.proc.stat(f"fd/{fd}").st_mode
            entry["type"] = next((name for test, name in _STAT_TYPES if test(mode)), "file")
        except OSError:
            entry["type"] = "file"  # closed meanwhile, or unstatable: the link says a path
    entry["path"] = ctx.text(path)
    return entry


def fds(ctx: Ctx) -> dict[str, Any]:
    nums = sorted(int(n) for n in ctx.proc.listdir("fd") if n.isdigit())
    out: list[dict[str, Any]] = []
    by_type: Counter[str] = Counter()
    vanished = 0
    for fd in nums[:MAX_FDS]:
        try:
            entry = classify(ctx, fd, ctx.proc.readlink(f"fd/{fd}"))
            info = parse_fdinfo(ctx.proc.head(f"fdinfo/{fd}"))
        except OSError as err:
            if err.errno not in GONE_ERRNOS:
                raise
            vanished += 1  # closed between the listing and this read: expected
            continue
        if "flags" in info:
            entry["mode"], entry["flags"] = open_mode(info["flags"])
        if entry["type"] in ("file", "blk", "memfd") and "pos" in info:
            entry["pos"] = info["pos"]
        by_type[entry["type"]] += 1
        out.append(entry)
        if entry["type"] == "socket":
            ctx.socket_fds.setdefault(entry["inode"], []).append(entry)
    ctx.fds_read = True
    return {"count": len(nums), "by_type": dict(by_type), "list": out,
            "truncated": len(nums) > MAX_FDS, "vanished": vanished}


def _table(ctx: Ctx, name: str) -> str | None:
    try:
        return ctx.proc.text(f"net/{name}", MAX_NET)
    except OSError as err:
        if err.errno in GONE_ERRNOS and ctx.proc.alive():
            return None  # no such table in this kernel (IPv6 off): not a failure
        raise


def _endpoint(ctx: Ctx, s: Sock, addr: tuple[str, int] | str | None) -> Any:
    if isinstance(addr, str) and s.family == "AF_UNIX":
        return ctx.text(addr)
    return addr_json(addr)


def _show(a: Any) -> str | None:
    """[ip, port] -> "1.2.3.4:80" / "[::1]:443", as connect/accept events show a peer."""
    if isinstance(a, list):
        return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"
    return a if isinstance(a, str) else None


def sockets(ctx: Ctx) -> list[dict[str, Any]]:
    """Each socket fd with family, type, local/remote address and state, from the socket
    tables of the process's own network namespace. Also sets local/peer/state on the fd
    entries of the fds section."""
    if not ctx.fds_read:
        raise SectionSkipped("needs fds")
    want = set(ctx.socket_fds)
    found: dict[int, Sock] = {}
    if want:
        for name, family, type_ in INET_TABLES:
            text = _table(ctx, name)
            if text is not None:
                found.update(parse_inet(text, family, type_, want - found.keys()))
        for name, parse in (("unix", parse_unix), ("netlink", parse_netlink)):
            if want - found.keys():
                text = _table(ctx, name)
                if text is not None:
                    found.update(parse(text, want - found.keys()))
    out: list[dict[str, Any]] = []
    for inode, entries in ctx.socket_fds.items():
        s = found.get(inode)
        for e in entries:
            rec: dict[str, Any] = {"pid": ctx.pid, "fd": e["fd"], "inode": inode}
            if s is None:  # a family we do not read (packet, raw, vsock, ...)
                rec.update(family=None, type=None, laddr=None, raddr=None, state=None)
            else:
                rec.update(family=s.family, type=s.type, laddr=_endpoint(ctx, s, s.laddr),
                           raddr=_endpoint(ctx, s, s.raddr), state=s.state)
                if s.tx_queue is not None:
                    rec.update(tx_queue=s.tx_queue, rx_queue=s.rx_queue)
                e.update(family=s.family, local=_show(rec["laddr"]), peer=_show(rec["raddr"]),
                         state=s.state)
            out.append(rec)
    return sorted(out, key=lambda r: r["fd"])
