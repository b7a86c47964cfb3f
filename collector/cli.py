"""periscope: the client. bcc-style flags, human tables by default, JSON lines with --json."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson

from collector import protocol
from collector.selectors import SelectorError, parse_duration

DEFAULT_SOCKET = "/run/periscope/periscope.sock"

EPILOG = """examples:
  periscope trace -p 1234                       syscalls of pid 1234 (meta level)
  periscope trace -n nginx --level payload --reason INC-1234 -d 5m
  periscope trace -u checkout.service --json    JSON lines, one event per line
  periscope events -p 1234 --limit 50           stored events
  periscope errors                              recent failed syscalls
  periscope status                              daemon health, targets, drops
  periscope grant add alice --target unit:checkout.service --level payload \\
        --for 2h --reason INC-1234
  periscope audit verify                        check the audit hash chain
"""


class ClientError(Exception):
    pass


def _pid(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"PID must be a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"PID must be a positive integer, got {text!r}")
    return v


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except SelectorError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _comm(text: str) -> str:
    if not text or len(text.encode()) > 15:
        raise argparse.ArgumentTypeError(f"NAME must be 1-15 bytes (kernel comm), got {text!r}")
    return text


class Connection:
    def __init__(self, path: str, timeout: float | None = 30) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            raise ClientError(f"no daemon socket at {path}: is periscoped running?") from None
        except PermissionError:
            raise ClientError(f"permission denied on {path}: you need to be in the "
                              "'periscope' group (or root)") from None
        except OSError as err:
            raise ClientError(f"cannot connect to {path}: {err.strerror}") from None
        self.file = self.sock.makefile("rb")

    def send(self, op: str, args: dict[str, Any]) -> None:
        self.sock.sendall(protocol.request(op, args))

    def lines(self) -> Iterator[dict[str, Any]]:
        for line in self.file:
            yield orjson.loads(line)

    def call(self, op: str, args: dict[str, Any]) -> Any:
        self.send(op, args)
        for msg in self.lines():
            return check_reply(msg)
        raise ClientError("daemon closed the connection without a reply")


def check_reply(msg: dict[str, Any]) -> Any:
    if msg.get("ok"):
        return msg.get("result")
    err = msg.get("error") or {}
    raise ClientError(f"{err.get('name', 'ERROR')}: {err.get('message', 'unknown error')}")


# -- output ------------------------------------------------------------------------
def fmt_time(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def detail(ev: dict[str, Any]) -> str:
    kind = ev["kind"]
    if kind == "exec":
        return f"{ev.get('filename', '')} [{ev.get('argv', '')}]"
    if kind == "fork":
        return f"child {ev['child']}"
    if kind == "exit":
        return f"code {ev['code']}"
    parts = []
    for key in ("path", "flags", "family", "peer", "direction", "size"):
        if key in ev:
            parts.append(f"{key}={ev[key]}")
    if "payload" in ev:
        parts.append(f'"{ev["payload"][:120]}"')
    if ev.get("truncated"):
        parts.append("(truncated)")
    return " ".join(parts)


COLS = "{:<12} {:>7} {:<15} {:<9} {:>4} {:>8} {:>9}  {}"


def print_header() -> None:
    print(COLS.format("TIME", "PID", "COMM", "SYSCALL", "FD", "RET", "LAT(us)", "DETAIL"))


def print_event(ev: dict[str, Any]) -> None:
    ret = ev.get("errno") or ev.get("ret", "")
    print(COLS.format(fmt_time(ev["ts"]), ev["pid"], ev.get("comm", "?")[:15],
                      ev.get("syscall", ev["kind"]), ev.get("fd", ""), ret,
                      ev.get("latency_us", ""), detail(ev)), flush=True)


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(none)")
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    width = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    width = {k: min(w, 60) for k, w in width.items()}
    print("  ".join(k.upper().ljust(width[k]) for k in keys))
    for r in rows:
        print("  ".join(str(r.get(k, ""))[:60].ljust(width[k]) for k in keys))


def emit(result: Any, as_json: bool) -> None:
    if as_json:
        items = result if isinstance(result, list) else [result]
        for it in items:
            sys.stdout.write(orjson.dumps(it).decode() + "\n")
        return
    if isinstance(result, list) and result and "kind" in result[0]:
        print_header()
        for ev in result:
            print_event(ev)
    elif isinstance(result, list):
        print_table(result)
    elif isinstance(result, dict):
        for k, v in result.items():
            print(f"{k:>16}: {orjson.dumps(v).decode() if isinstance(v, (dict, list)) else v}")
    else:
        print(result)


# -- commands ---------------------------------------------------------------------
def trace_targets(a: argparse.Namespace) -> list[str]:
    targets = [f"pid:{p}" for p in a.pid or []]
    targets += [f"comm:{n}" for n in a.name or []]
    targets += [f"cgroup:{c}" for c in a.cgroup or []]
    targets += [f"unit:{u}" for u in a.unit or []]
    return targets


def cmd_trace(a: argparse.Namespace, sock: str) -> int:
    targets = trace_targets(a)
    if not targets:
        raise ClientError("trace needs a target: -p PID, -n NAME, -c CGROUP or -u UNIT")
    args: dict[str, Any] = {"targets": targets, "level": a.level}
    if a.duration:
        args["duration"] = a.duration
    if a.reason:
        args["reason"] = a.reason
    conn = Connection(sock, timeout=None)
    conn.send("trace", args)
    print("periscope: attaching probes (the first session compiles BPF: a few seconds)...",
          file=sys.stderr, flush=True)
    lines = conn.lines()
    head = check_reply(next(lines))
    print(f"periscope: session {head['session']} level={head['level']} targets="
          f"{','.join(head['targets'])} until {fmt_time(head['deadline'])}", file=sys.stderr)
    for note in head.get("narrowed", []):
        print(f"periscope: narrowed: {note}", file=sys.stderr)
    if not a.json:
        print_header()
    for msg in lines:
        if "event" in msg:
            if a.json:
                sys.stdout.write(orjson.dumps(msg["event"]).decode() + "\n")
                sys.stdout.flush()
            else:
                print_event(msg["event"])
        elif "end" in msg:
            e = msg["end"]
            print(f"periscope: session ended ({e['reason']}): {e['events']} events",
                  file=sys.stderr)
            if e.get("losses"):
                print("periscope: during the session, host-wide: " + ", ".join(
                    f"{n:,} {LOSS_TEXT.get(k, k)}" for k, n in e["losses"].items()),
                      file=sys.stderr)
            return 0 if e["reason"] in ("deadline", "client_closed") else 3
    return 0


LOSS_TEXT = protocol.LOSS_TEXT  # one table, shared with the daemon


def cmd_simple(op: str, args: dict[str, Any], a: argparse.Namespace, sock: str) -> int:
    result = Connection(sock).call(op, args)
    emit(result, a.json)
    if op == "audit.verify" and not result.get("ok"):
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="periscope", description="query and stream redacted "
                                "traces from periscoped", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", default=os.environ.get("PERISCOPE_SOCKET", DEFAULT_SOCKET),
                   help="daemon socket (env PERISCOPE_SOCKET; default %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="JSON lines instead of a table")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, epilog=EPILOG, parents=[common],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    t = add("trace", "stream live events of targets")
    t.add_argument("-p", "--pid", type=_pid, action="append", help="trace this PID (repeatable)")
    t.add_argument("-n", "--name", type=_comm, action="append", help="trace processes named NAME")
    t.add_argument("-c", "--cgroup", action="append", help="trace a cgroup v2 path")
    t.add_argument("-u", "--unit", action="append", help="trace a systemd unit")
    t.add_argument("-d", "--duration", "--for", type=_duration, help="stop after e.g. 30s, 10m")
    t.add_argument("--level", choices=("meta", "payload"), default="meta")
    t.add_argument("--reason", help="why (required for payload by default policy)")
    for name, help_ in (("events", "stored events"), ("errors", "stored failed syscalls"),
                        ("conns", "stored connects/accepts"), ("http", "stored HTTP payloads"),
                        ("top", "busiest pid/syscall pairs")):
        q = add(name, help_)
        q.add_argument("-p", "--pid", type=_pid)
        q.add_argument("--limit", type=int, default=100)
        q.add_argument("--reason")
    s = add("snapshot", "process facts and sockets of a PID")
    s.add_argument("pid", type=_pid)
    s.add_argument("--reason")
    add("status", "daemon health, targets, drops")
    add("whoami", "who the daemon thinks you are")
    g = add("grant", "manage time-boxed grants")
    gs = g.add_subparsers(dest="gcmd", required=True)
    ga = gs.add_parser("add", help="grant USER or @GROUP access to a target", parents=[common])
    ga.add_argument("principal", help="user name or @group")
    ga.add_argument("--target", required=True, help="unit:X.service, comm:X, pid:N, ...")
    ga.add_argument("--level", choices=("meta", "payload"), default="meta")
    ga.add_argument("--for", dest="for_", required=True, type=_duration, help="e.g. 2h")
    ga.add_argument("--reason", required=True)
    gs.add_parser("list", help="active grants", parents=[common])
    gr = gs.add_parser("revoke", help="revoke a grant (ends its sessions now)",
                        parents=[common])
    gr.add_argument("id")
    au = add("audit", "read or verify the audit log")
    aus = au.add_subparsers(dest="acmd", required=True)
    sh = aus.add_parser("show", help="last audit records", parents=[common])
    sh.add_argument("--limit", type=int, default=50)
    aus.add_parser("verify", help="verify the hash chain against anchors", parents=[common])
    return p


def run(a: argparse.Namespace) -> int:
    sock = a.socket
    if a.cmd == "trace":
        return cmd_trace(a, sock)
    if a.cmd in ("events", "errors", "conns", "http", "top"):
        args: dict[str, Any] = {"limit": a.limit}
        if a.pid:
            args["pid"] = a.pid
            args["targets"] = [f"pid:{a.pid}"]
        if a.reason:
            args["reason"] = a.reason
        return cmd_simple(a.cmd, args, a, sock)
    if a.cmd == "snapshot":
        return cmd_simple("snapshot", {"targets": [f"pid:{a.pid}"], "reason": a.reason}
                          if a.reason else {"targets": [f"pid:{a.pid}"]}, a, sock)
    if a.cmd == "status":
        return cmd_simple("status", {}, a, sock)
    if a.cmd == "whoami":
        return cmd_simple("hello", {}, a, sock)
    if a.cmd == "grant":
        if a.gcmd == "add":
            return cmd_simple("grant.add", {"principal": a.principal, "target": a.target,
                                            "level": a.level, "for": f"{a.for_}s",
                                            "reason": a.reason}, a, sock)
        if a.gcmd == "list":
            return cmd_simple("grant.list", {}, a, sock)
        return cmd_simple("grant.revoke", {"id": a.id}, a, sock)
    if a.acmd == "show":
        return cmd_simple("audit.show", {"limit": a.limit}, a, sock)
    return cmd_simple("audit.verify", {}, a, sock)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if getattr(a, "json", None) is None:
        a.json = False
    try:
        return run(a)
    except ClientError as err:
        print(f"periscope: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
