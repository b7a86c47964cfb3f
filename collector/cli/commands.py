"""What each command sends and prints: one dispatch table, command -> handler; no fall-through."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from collector.cli import access, debug, login, records, render
from collector.cli.client import ClientError, Connection, check_reply
from collector.cli.parser import build_parser

# Command -> wire op name, in one place (collector.protocol owns the names themselves).
OPS: dict[str, str] = {
    "trace": "trace", "events": "events", "errors": "errors", "conns": "conns",
    "http": "http", "sql": "sql", "redis": "redis", "dns": "dns",
    "top": "top", "snapshot": "snapshot", "profile": "profile", "status": "status",
    "whoami": "hello", "grant add": "grant.add", "grant list": "grant.list",
    "grant revoke": "grant.revoke", "audit show": "audit.show", "audit verify": "audit.verify",
    "request create": "request.create", "request list": "request.list",
    "request show": "request.show", "request approve": "request.approve",
    "request deny": "request.deny", "request cancel": "request.cancel",
    "request break-glass": "request.break_glass",
    "login": "hello",  # asks the daemon which identity provider to use; the rest is HTTP
}

Args = dict[str, Any]


def _reason(a: argparse.Namespace, args: Args) -> Args:
    if a.reason:
        args["reason"] = a.reason
    return args


def query_args(a: argparse.Namespace) -> Args:
    """events/errors/conns/http/top: selectors as targets (filters under the caller's
    decision), --since/--until as unix timestamps, the command's own filters, --limit."""
    targets: list[str] = a.targets or []
    args: Args = {"targets": targets, "limit": a.limit}
    for key in ("since", "until", "kind", "syscall", "errno", "before"):
        value = getattr(a, key, None)
        if value:
            args[key] = value
    if a.command == "events":
        args["page"] = True  # {"events", "more", "next"}: the note on older matches
    return _reason(a, args)


def record_args(a: argparse.Namespace) -> Args:
    """conns/http/sql/redis/dns: query_args plus the filters each takes (only those given)."""
    args = query_args(a)
    for key in ("status", "slow", "method", "peer"):
        value = getattr(a, key, None)
        if value is not None:
            args[key] = value
    if a.errors:
        args["errors"] = True
    return args


def _json_page(page: dict[str, Any]) -> None:
    render.json_lines(page["events"])
    render.page_note(page)


def trace_args(a: argparse.Namespace) -> Args:
    if not a.targets:
        raise ClientError("trace needs a target: -p PID, -n NAME, -u UNIT or -c CGROUP")
    # Batches: one line per delivery instead of one per event (the daemon serializes each
    # batch once); a daemon from before batches ignores the key and sends {"event"} lines.
    args: Args = {"targets": a.targets, "level": a.level, "frames": "batch"}
    if a.duration:
        args["duration"] = a.duration
    if a.export:
        args["export"] = True
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
    "events": Simple(query_args, render.event_page),
    **{q: Simple(record_args, records.TABLES[q], paged=True) for q in records.TABLES},
    "errors": Simple(query_args, render.errors),
    "top": Simple(query_args, render.top),
    "status": Simple(_none, render.status),
    "whoami": Simple(_none, render.whoami),
    "grant add": Simple(lambda a: {"principal": a.principal, "target": a.target,
                                   "level": a.level, "for": f"{a.duration}s",
                                   "reason": a.reason}, render.grant_added),
    "grant list": Simple(_none, render.grants),
    "grant revoke": Simple(lambda a: {"all": True} if a.all else {"id": a.id},
                           render.revoked),
    "audit show": Simple(lambda a: {k: v for k, v in (("limit", a.limit), ("since", a.since),
                                                      ("kinds", a.kind)) if v is not None},
                         render.audit),
    "audit verify": Simple(_none, render.audit_verified, lambda r: not r.get("ok")),
    **{name: Simple(access.ARGS[name], access.SHOW[name]) for name in access.ARGS},
}


def connect(a: argparse.Namespace, timeout: float | None = 30) -> Connection:
    """A connection to the daemon; with an ID token (flag, environment or login cache) it
    is presented first, so the daemon knows this connection's IdP identity too."""
    token = login.token_from(getattr(a, "id_token_file", None))
    conn = Connection(a.socket, timeout)
    if token:
        try:
            got = conn.call("auth", {"id_token": token})
        except ClientError:
            conn.close()
            raise
        _say(f"identity provider: {got['username']} (sub {got['sub']})")
    return conn


def run_simple(a: argparse.Namespace) -> int:
    cmd = SIMPLE[a.command]
    conn = connect(a)
    try:
        result = conn.call(OPS[a.command], cmd.args(a))
    finally:
        conn.close()
    if cmd.paged:
        records.show(a.command, result, a.json)
    elif a.json:
        (_json_page if a.command == "events" else render.json_lines)(result)
    else:
        cmd.show(result)
    return 1 if cmd.failed(result) else 0


def _say(text: str) -> None:
    print(f"periscope: {text}", file=sys.stderr, flush=True)


def approved_request(a: argparse.Namespace) -> dict[str, Any]:
    """--request ID [--wait]: the request once approved; a clear error if it cannot be."""
    while True:
        conn = connect(a, timeout=None)
        try:
            if a.wait:
                _say(f"waiting for request {a.request} to be reviewed...")
            req: dict[str, Any] = conn.call("request.wait" if a.wait else "request.show",
                                            {"id": a.request, "timeout": 600} if a.wait
                                            else {"id": a.request})
        finally:
            conn.close()
        if req["state"] == "approved":
            return req
        if req["state"] != "pending":
            raise ClientError(f"request {a.request} is {req['state']}: no session")
        if not a.wait:
            raise ClientError(f"request {a.request} is pending: add --wait to start when "
                              "it is approved")


def run_trace(a: argparse.Namespace) -> int:
    if a.wait and not a.request:
        raise ClientError("--wait needs --request ID")
    if a.request:
        req = approved_request(a)
        a.targets = a.targets or [req["target"]]
        a.level = req["granted_level"] if a.level == "meta" else a.level
        a.reason = a.reason or req["reason"]
    args = trace_args(a)
    if a.request:
        args["request"] = a.request
    conn = connect(a, timeout=None)
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
        if "export" in head:
            _say(f"exported at {head['export']['level']} to "
                 f"{', '.join(head['export']['to'])}")
        printer = render.EventPrinter()
        if not a.json:
            printer.header()
        for msg in lines:
            batch = msg.get("events")
            if batch is None and "event" in msg:
                batch = [msg["event"]]
            if batch is not None:
                received += len(batch)
                if a.json:
                    sys.stdout.write("".join([orjson.dumps(ev).decode() + "\n" for ev in batch]))
                    sys.stdout.flush()
                else:
                    for ev in batch:
                        printer.row(ev)
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


def run_login(a: argparse.Namespace) -> int:
    issuer, client_id = a.issuer, a.client_id
    if not (issuer and client_id):  # the daemon says which provider it trusts
        conn = Connection(a.socket)
        try:
            idp = conn.call(OPS["login"], {}).get("idp") or {}
        finally:
            conn.close()
        issuer, client_id = issuer or idp.get("issuer"), client_id or idp.get("client_id")
    if not issuer or not client_id:
        raise ClientError("this daemon has no identity provider configured ([idp] issuer); "
                          "pass --issuer and --client-id")
    token = login.device_flow(issuer, client_id)
    path = login.save(token)
    who = login.claims(token)
    _say(f"logged in as {who.get('preferred_username') or who.get('email') or who.get('sub')};"
         f" token kept in {path} (0600)")
    return 0


# Every leaf command of the parser -> its handler. An unknown command is an error.
DISPATCH: dict[str, Callable[[argparse.Namespace], int]] = {
    "trace": run_trace, "login": run_login, "snapshot": debug.run_snapshot,
    "profile": debug.run_profile, **{name: run_simple for name in SIMPLE},
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
