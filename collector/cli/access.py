"""The client's side of the access protocol: `request ...` (file, list, show, approve, deny,
cancel, break-glass) and `login` flags, their wire arguments and their human output."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from collector.cli import render
from collector.cli.argtypes import Adder, duration, target
from collector.selectors import format_duration

Args = dict[str, Any]


# -- flags -------------------------------------------------------------------------------------
def _of(kind: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        return target(f"{kind}:{text}")
    return parse


def _target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    for flag, long, kind, what in (("-p", "--pid", "pid", "a process"),
                                   ("-n", "--name", "comm", "processes named NAME"),
                                   ("-u", "--unit", "unit", "a systemd unit, e.g. nginx.service"),
                                   ("-c", "--cgroup", "cgroup", "a cgroup v2 subtree")):
        g.add_argument(flag, long, dest="target", metavar=long[2:].upper(), type=_of(kind),
                       help=what)
    g.add_argument("--target", dest="target", type=target, metavar="SELECTOR",
                   help="any selector: unit:NAME.service, cgroup:PATH, comm:NAME, exe:PATH, pid:N")


def add_commands(add: Adder, adder: Any) -> None:
    r = add("request", "ask for access, and review what others asked for",
            "Access requests: ask for a time-boxed slice of access with a reason; another "
            "person approves it (as many as the policy says) and it becomes a grant, bounded "
            "by the approvers' own rights, that starts when approved.", leaf=False)
    radd = adder(r.add_subparsers(dest="sub", required=True, metavar="ACTION",
                                  help="create, list, show, approve, deny, cancel, break-glass"),
                 "request ")
    c = radd("create", "ask for access to one target",
             "File a request for one target at a level, for a while, with a reason. It waits "
             "for its reviewers (periscope request show ID) and expires unreviewed after 24 h "
             "by default. Then: periscope trace --request ID --wait.")
    _target(c)
    c.add_argument("--level", choices=("meta", "payload"), default="payload",
                   help="the level asked for (default %(default)s)")
    c.add_argument("--for", dest="duration", type=duration, metavar="DURATION",
                   help="how long the grant lasts once approved, e.g. 30m, 1h (default: the "
                   "longest your role may ask)")
    c.add_argument("--reason", required=True, metavar="TEXT",
                   help="why: an incident or ticket id; reviewers and the audit log see it")
    ls = radd("list", "requests you filed or may review",
              "Requests you filed, those you may review, or (admins) all of them.")
    ls.add_argument("--state", choices=("pending", "approved", "denied", "expired",
                                        "cancelled", "revoked"), help="only these")
    for name, short, text in (
            ("show", "one request and its reviews", "A request: what it asks, its state, who "
             "reviewed it and the grant it became."),
            ("approve", "approve a request (a reviewer other than the requester)",
             "Approve a request you may review. The grant is bounded by what you could use "
             "yourself; it starts when the last approval needed arrives."),
            ("deny", "deny a request, with a reason", "Deny a request you may review; it "
             "ends there."),
            ("cancel", "withdraw your request (ends its grant if approved)",
             "Cancel a request you filed; an approved one's grant is revoked and its sessions "
             "end.")):
        sp = radd(name, short, text)
        sp.add_argument("id", metavar="ID", help="the request's id (from request create/list)")
        if name == "approve":
            sp.add_argument("--comment", default="", metavar="TEXT",
                            help="a note for the audit log")
        if name == "deny":
            sp.add_argument("--reason", required=True, metavar="TEXT", help="why not")
    bg = radd("break-glass", "self-grant payload for at most 15 min (on-call, loud)",
              "Emergency access without a reviewer, for roles with break_glass = true: "
              "payload on one target for at most 15 minutes. It is audited as break_glass, "
              "logged at warning, counted, and sent to the on-call hook.")
    _target(bg)
    bg.add_argument("--for", dest="duration", type=duration, metavar="DURATION",
                    help="at most 15m (the default)")
    bg.add_argument("--reason", required=True, metavar="TEXT", help="the incident")

    lg = add("login", "log in to the identity provider (OIDC device flow)",
             "Get an ID token from your identity provider (Okta, Auth0, Keycloak, ...) with "
             "the device flow and keep it for later commands. Roles with require_idp = true "
             "allow payload only with it. The daemon says which provider to use.")
    lg.add_argument("--issuer", metavar="URL", help="the provider (default: the daemon's)")
    lg.add_argument("--client-id", metavar="ID", help="the OAuth client (default: the "
                    "daemon's)")


# -- wire arguments ------------------------------------------------------------------------------
def create_args(a: argparse.Namespace) -> Args:
    args: Args = {"target": a.target, "level": a.level, "reason": a.reason}
    if a.duration:
        args["duration"] = a.duration
    return args


def break_glass_args(a: argparse.Namespace) -> Args:
    args: Args = {"target": a.target, "reason": a.reason}
    if a.duration:
        args["duration"] = a.duration
    return args


ARGS: dict[str, Callable[[argparse.Namespace], Args]] = {
    "request create": create_args,
    "request list": lambda a: {"state": a.state} if a.state else {},
    "request show": lambda a: {"id": a.id},
    "request approve": lambda a: {"id": a.id, "comment": a.comment},
    "request deny": lambda a: {"id": a.id, "reason": a.reason},
    "request cancel": lambda a: {"id": a.id},
    "request break-glass": break_glass_args,
}


# -- output --------------------------------------------------------------------------------------
def _state(r: dict[str, Any]) -> str:
    if r["state"] == "pending":
        return f"pending ({len([v for v in r['reviews'] if v['decision'] == 'approve'])}" \
               f"/{r['approvals']})"
    if r["state"] == "approved" and (r.get("grant_expires") or 0) <= time.time():
        return "approved (ended)"
    return str(r["state"]) + (" (break-glass)" if r.get("break_glass") else "")


def one(r: dict[str, Any]) -> None:
    print(f"request {r['id']}: {r['requester']} asks {r['level']} on {r['target']} for "
          f"{format_duration(r['duration'])}; reason: {r['reason']}")
    print(f"  state:   {_state(r)}, role {r['role']}, filed "
          f"{render.fmt_time(r['created'], True)[:-4]}")
    if r["state"] == "pending":
        print(f"  expires: {render.fmt_time(r['expires'], True)[:-4]} unless reviewed")
    for v in r["reviews"]:
        what = "approved" if v["decision"] == "approve" else "denied"
        bound = f" (could grant {v['level']}, {format_duration(v['duration'])})" \
            if v.get("level") else ""
        print(f"  {what} by {v['user']} at {render.fmt_time(v['time'], True)[:-4]}{bound}"
              + (f": {v['comment']}" if v.get("comment") else ""))
    if r.get("grant"):
        print(f"  grant:   {r['grant']} at {r['granted_level']} until "
              f"{render.fmt_time(r['grant_expires'], True)[:-4]}; sessions: {r['used']}")
    for note in r.get("notes", []):
        print(f"  note:    {note}")


def table(rows: list[dict[str, Any]]) -> None:
    shown = [{**r, "state_text": _state(r), "for": format_duration(r["duration"])}
             for r in rows]
    render.table(shown, [render.Col("id", "ID"), render.Col("requester", "WHO"),
                         render.Col("target", "TARGET"), render.Col("level", "LEVEL"),
                         render.Col("for", "FOR"), render.Col("state_text", "STATE"),
                         render.Col("reason", "REASON")], empty="(no requests)")


def cancelled(r: dict[str, Any]) -> None:
    one(r)
    if r.get("sessions_ended"):
        print(f"  {r['sessions_ended']} session(s) ended")


SHOW: dict[str, Callable[[Any], None]] = {
    "request create": one, "request list": table, "request show": one,
    "request approve": one, "request deny": one, "request cancel": cancelled,
    "request break-glass": one,
}
