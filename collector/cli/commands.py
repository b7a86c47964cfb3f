"""What each command sends and prints: one dispatch table, command -> handler; no fall-through."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from collector.cli import records, render
from collector.cli.client import ClientError, Connection, check_reply
from collector.cli.parser import build_parser

# Command -> wire op name, in one place (collector.protocol owns the names themselves).
OPS: dict[str, str] = {
    "trace": "trace", "events": "events", "errors": "errors", "conns": "conns",
    "http": "http", "sql": "sql", "redis": "redis", "dns": "dns",
    "top": "top", "snapshot": "snapshot", "status": "status",
    "whoami": "hello", "grant add": "grant.add", "grant list": "grant.list",
    "grant revoke": "grant.revoke", "audit show": "audit.show", "audit verify": "audit.verify",
}

Args = dict[str, Any]


def _reason(a: argparse.Namespace, args: Args) -> Args:
    if a.reason:
        args["reason"] = a.reason
    return args


def query_args(a: argparse.Namespace) -> Args:
    """events/errors/conns/http/top: selectors as targets (filters under the caller's
    decision), --since as a unix timestamp, --limit."""
    targets: list[str] = a.targets or []
    args: Args = {"targets": targets, "limit": a.limit}
    if a.since is not None:
        args["since"] = a.since
    return _reason(a, args)


def record_args(a: argparse.Namespace) -> Args:
    """conns/http/sql/redis/dns: query_args plus the filters each takes (only those given)."""
    args = query_args(a)
    for key in ("until", "status", "slow", "method", "peer", "before"):
        value = getattr(a, key, None)
        if value is not None:
            args[key] = value
    if a.errors:
        args["errors"] = True
    return args


def trace_args(a: argparse.Namespace) -> Args:
    if not a.targets:
        raise ClientError("trace needs a target: -p PID, -n NAME, -u UNIT or -c CGROUP")
    args: Args = {"targets": a.targets, "level": a.level}
    if a.duration:
        args["duration"] = a.duration
    return _reason(a, args)


@dataclass(frozen=True)
class Simple:
    """A one-request command: its wire arguments, its human output, its exit status."""

    args: Callable[[argparse.Namespace], Args]
    show: Callable[[Any], None]
    failed: Callable[[Any], bool] = lambda _result: False
    paged: bool = False  # the result is a page ({"rows", "more", "before"}): records.show


def _none(a: argparse.Namespace) -> Args:
    return {}


SIMPLE: dict[str, Simple] = {
    **{q: Simple(query_args, render.events) for q in ("events", "errors")},
    **{q: Simple(record_args, records.TABLES[q], paged=True) for q in records.TABLES},
    "top": Simple(query_args, render.top),
    "snapshot": Simple(lambda a: _reason(a, {"targets": [f"pid:{a.pid}"]}), render.snapshot),
    "status": Simple(_none, render.status),
    "whoami": Simple(_none, render.whoami),
    "grant add": Simple(lambda a: {"principal": a.principal, "target": a.target,
                                   "level": a.level, "for": f"{a.duration}s",
                                   "reason": a.reason}, render.grant_added),
    "grant list": Simple(_none, render.grants),
    "grant revoke": Simple(lambda a: {"id": a.id}, render.revoked),
    "audit show": Simple(lambda a: {"limit": a.limit}, render.audit),
    "audit verify": Simple(_none, render.audit_verified, lambda r: not r.get("ok")),
}


def run_simple(a: argparse.Namespace) -> int:
    cmd = SIMPLE[a.command]
    conn = Connection(a.socket)
    try:
        result = conn.call(OPS[a.command], cmd.args(a))
    finally:
        conn.close()
    if cmd.paged:
        records.show(a.command, result, a.json)
    elif a.json:
        render.json_lines(result)
    else:
        cmd.show(result)
    return 1 if cmd.failed(result) else 0


def _say(text: str) -> None:
    print(f"periscope: {text}", file=sys.stderr, flush=True)


def run_trace(a: argparse.Namespace) -> int:
    args = trace_args(a)
    conn = Connection(a.socket, timeout=None)
    received = 0
    try:
        conn.send(OPS["trace"], args)
        _say("attaching probes (the first session compiles BPF: a few seconds)...")
        lines = conn.lines()
        head = check_reply(next(lines, {"ok": False, "error": {
            "message": "daemon closed the connection without a reply"}}))
        _say(f"session {head['session']} level={head['level']} targets="
             f"{','.join(head['targets'])} until {render.fmt_time(head['deadline'])}")
        for note in head.get("narrowed", []):
            _say(f"narrowed: {note}")
        printer = render.EventPrinter()
        if not a.json:
            printer.header()
        for msg in lines:
            if "event" in msg:
                received += 1
                if a.json:
                    sys.stdout.write(orjson.dumps(msg["event"]).decode() + "\n")
                    sys.stdout.flush()
                else:
                    printer.row(msg["event"])
            elif "end" in msg:
                e = msg["end"]
                _say(f"session ended ({e['reason']}): {e['events']} events")
                if e.get("losses"):
                    _say("during the session, host-wide: " + render.losses_line(e["losses"]))
                return 0 if e["reason"] in ("deadline", "client_closed") else 3
        _say(f"the daemon closed the stream: {received} events")
        return 3
    except KeyboardInterrupt:
        # Ctrl-C is how a trace is meant to be stopped early: the daemon ends the
        # session when we close (client_closed) and audits it.
        _say(f"session ended (interrupted): {received} events")
        return 0
    finally:
        conn.close()


# Every leaf command of the parser -> its handler. An unknown command is an error.
DISPATCH: dict[str, Callable[[argparse.Namespace], int]] = {
    "trace": run_trace, **{name: run_simple for name in SIMPLE},
}


def run(a: argparse.Namespace) -> int:
    handler = DISPATCH.get(getattr(a, "command", None) or "")
    if handler is None:
        raise ClientError(f"no such command: {getattr(a, 'command', None)!r}")
    return handler(a)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return run(a)
    except ClientError as err:
        print(f"periscope: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `periscope ... | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not print a second error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
