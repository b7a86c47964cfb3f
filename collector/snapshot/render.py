"""render_summary(): a snapshot as text an SRE can scan in ten seconds."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from collector.selectors import format_duration

FD_LINES = 12
SOCKET_LINES = 8
ENV_NAMES = 40
_FD_ORDER = {"file": 0, "memfd": 1, "blk": 2, "chr": 3, "fifo": 4, "pipe": 5}
_STATE_ORDER = {"LISTEN": 0, "ESTABLISHED": 1}


def _s(value: Any) -> str:
    """Text safe for a terminal: control and format characters (escape sequences, bidi
    overrides) from the process are shown as \\xNN / \\uNNNN, never interpreted."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else
                   (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
                   for c in text)


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _counts(d: Any) -> str:
    if not isinstance(d, dict) or not d:
        return "none"
    return ", ".join(f"{v} {_s(k)}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def _row(label: str, text: str) -> str:
    return f"{label:<10}{text}"


def _identity(snap: dict[str, Any]) -> Iterable[str]:
    ident = snap.get("identity")
    if not isinstance(ident, dict):
        return
    started = ident.get("start_time")
    up = ""
    if isinstance(started, (int, float)):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
        up = f", up {format_duration(snap.get('taken_at', started) - started)} (since {stamp})"
    yield _row("identity", f"user {_s(ident.get('user'))} (uid {ident.get('uid')}), "
                           f"state {_s(ident.get('state'))}{up}")
    refused = ident.get("unreadable") or []
    for key in ("exe", "cmdline", "cwd"):
        value = ident.get(key)
        shown = "(permission denied)" if key in refused else "-" if value is None else _s(value)
        yield _row("", f"{key:<8}{shown}")
    if ident.get("root") not in (None, "/"):
        yield _row("", f"{'root':<8}{_s(ident.get('root'))}")
    parents = snap.get("parents")
    if isinstance(parents, list) and parents:
        chain = " <- ".join(f"{p['pid']} {_s(p.get('comm') or '?')}" for p in parents)
        yield _row("", f"{'parents':<8}{chain}")


def _resources(snap: dict[str, Any]) -> Iterable[str]:
    cg, ns = snap.get("cgroup"), snap.get("namespaces")
    if isinstance(cg, dict):
        unit = f" (unit {_s(cg['unit'])})" if cg.get("unit") else ""
        differ = ns.get("differs_from_pid1") if isinstance(ns, dict) else None
        iso = f"; namespaces not shared with pid 1: {', '.join(differ)}" if differ else ""
        yield _row("cgroup", f"{_s(cg.get('path'))}{unit}{iso}")
    cpu, th = snap.get("cpu"), snap.get("threads")
    if isinstance(cpu, dict):
        yield _row("cpu", f"user {cpu.get('user_s')} s, system {cpu.get('system_s')} s; "
                          f"context switches {cpu.get('voluntary_ctxt_switches')} voluntary, "
                          f"{cpu.get('nonvoluntary_ctxt_switches')} involuntary")
    if isinstance(th, dict):
        yield _row("threads", f"{th.get('count')}: {_counts(th.get('by_state'))}")
    mem, maps = snap.get("memory"), snap.get("maps")
    if isinstance(mem, dict):
        line = (f"rss {_size(mem.get('rss'))}, pss {_size(mem.get('pss'))}, "
                f"swap {_size(mem.get('swap'))}")
        if isinstance(maps, dict):
            regions = ", ".join(f"{k} {_size(v)}" for k, v in sorted(
                maps.get("regions", {}).items(), key=lambda kv: -kv[1])[:4])
            line += f"; {maps.get('count')} mappings ({regions})"
        yield _row("memory", line)
    io = snap.get("io")
    if isinstance(io, dict):
        yield _row("io", f"read {_size(io.get('rchar'))} ({_size(io.get('read_bytes'))} "
                         f"from disk), written {_size(io.get('wchar'))} "
                         f"({_size(io.get('write_bytes'))} to disk)")
    lim = snap.get("limits")
    if isinstance(lim, dict):
        def one(key: str, label: str) -> str:
            v = lim.get(key) or {}
            soft, hard = (("unlimited" if v.get(k) is None else v.get(k))
                          for k in ("soft", "hard"))
            return f"{label} {soft}/{hard}"
        yield _row("limits", ", ".join((one("max_open_files", "open files"),
                                        one("max_processes", "processes"),
                                        one("max_address_space", "address space"))))


def _fd_text(e: dict[str, Any]) -> str:
    kind = e.get("type", "?")
    if "path" in e:
        extra = [e.get("mode", "")] + ([f"pos {e['pos']}"] if "pos" in e else [])
        extra += ["deleted"] if e.get("deleted") else []
        what = f"{_s(e['path'])} ({', '.join(x for x in extra if x)})"
    elif kind in ("pipe", "ns"):
        what = f"{_s(e.get('kind', kind))}:[{e.get('inode')}]"
    else:
        what = _s(e.get("kind") or e.get("target") or "")
    return f"{e.get('fd'):>6} {_s(kind):<10} {what}".rstrip()


def _sock_text(s: dict[str, Any]) -> str:
    def addr(a: Any) -> str:
        if isinstance(a, list):
            return f"[{a[0]}]:{a[1]}" if ":" in str(a[0]) else f"{a[0]}:{a[1]}"
        return _s(a) if a else "-"
    kind = {"SOCK_STREAM": "stream", "SOCK_DGRAM": "dgram"}.get(s.get("type") or "", "")
    fam = {"AF_INET": "inet", "AF_INET6": "inet6", "AF_UNIX": "unix",
           "AF_NETLINK": "netlink"}.get(s.get("family") or "", "?")
    peer = f" -> {addr(s['raddr'])}" if s.get("raddr") else ""
    return (f"{s.get('fd'):>6} {fam + ' ' + kind:<16} {addr(s.get('laddr'))}{peer} "
            f"{_s(s.get('state') or '')}").rstrip()


def _fds(snap: dict[str, Any]) -> Iterable[str]:
    fds = snap.get("fds")
    if isinstance(fds, dict):
        yield _row("fds", f"{fds.get('count')}: {_counts(fds.get('by_type'))}")
        entries = sorted((e for e in fds.get("list", []) if e.get("type") != "socket"),
                         key=lambda e: (_FD_ORDER.get(e.get("type"), 9), e.get("fd", 0)))
        for e in entries[:FD_LINES]:
            yield _row("", _fd_text(e))
        if len(entries) > FD_LINES:
            yield _row("", f"   ... {len(entries) - FD_LINES} more")
    socks = snap.get("sockets")
    if isinstance(socks, list):
        states: dict[str, int] = {}
        for s in socks:
            key = s.get("state") or "unknown"
            states[key] = states.get(key, 0) + 1
        yield _row("sockets", f"{len(socks)}: {_counts(states)}" if socks else "none")
        ranked = sorted(socks, key=lambda s: (_STATE_ORDER.get(s.get("state"), 2), s["fd"]))
        for s in ranked[:SOCKET_LINES]:
            yield _row("", _sock_text(s))
        if len(ranked) > SOCKET_LINES:
            yield _row("", f"   ... {len(ranked) - SOCKET_LINES} more")
    libs = snap.get("libraries")
    if isinstance(libs, list):
        tls = [lib for lib in libs if lib.get("tls")]
        text = ", ".join(
            f"{_s(lib['path'])} ({lib['tls']}, "
            + ("traceable" if lib.get("traceable") else f"not traceable: {_s(lib.get('why'))}")
            + ")" for lib in tls) or "none mapped"
        yield _row("libraries", f"{len(libs)} shared objects; TLS: {text}")


def _environ(snap: dict[str, Any]) -> Iterable[str]:
    env = snap.get("environ")
    if isinstance(env, dict):
        names = [_s(v.get("name")) for v in env.get("vars", [])]
        more = f" ... {len(names) - ENV_NAMES} more" if len(names) > ENV_NAMES else ""
        yield _row("environ", f"{env.get('count')} variables (values not shown): "
                              + " ".join(names[:ENV_NAMES]) + more)
    store = snap.get("store")
    if isinstance(store, dict):
        yield _row("store", ", ".join(
            f"{len(v) if isinstance(v, list) else _s(v)} {_s(k).replace('_', ' ')}"
            for k, v in store.items()) or "nothing recorded")


def render_summary(snapshot: dict[str, Any]) -> str:
    """Identity, resources, top fds and sockets, libraries with TLS status, environment
    names (never values), and what is missing when the snapshot is partial."""
    got = snapshot.get("identity")
    ident: dict[str, Any] = got if isinstance(got, dict) else {}
    taken = snapshot.get("taken_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(taken)) if taken else "?"
    lines = [f"pid {snapshot.get('pid')} {_s(ident.get('comm') or '?')}: snapshot taken "
             f"{when} in {snapshot.get('duration_ms')} ms (schema {snapshot.get('schema')})"]
    if snapshot.get("partial"):
        failed = snapshot.get("failed") or {}
        head = "PARTIAL (the process exited during the snapshot)" if snapshot.get(
            "exited") else "PARTIAL"
        if failed:
            lines.append(f"{head}: " + "; ".join(f"{k}: {_s(v)}" for k, v in failed.items()))
    cut = snapshot.get("truncated")
    if isinstance(cut, dict) and cut:
        lines.append("TRUNCATED to fit the daemon's reply cap, entries left out: "
                     + ", ".join(f"{_s(k)} {v:,}" for k, v in cut.items()))
    for part in (_identity, _resources, _fds, _environ):
        lines.extend(part(snapshot))
    return "\n".join(lines) + "\n"
