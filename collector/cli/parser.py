"""The client's flags: bcc vocabulary, values validated at parse time, examples in every --help."""

from __future__ import annotations

import argparse
import os
import textwrap
from typing import NamedTuple

from collector.cli import examples
from collector.cli.argtypes import (
    MAX_LIMIT,
    Adder,
    cursor,
    duration,
    kinds,
    limit,
    millis,
    name,
    pid,
    selector,
    since,
    target,
    until,
    whole,
)

DEFAULT_SOCKET = "/run/periscope/periscope.sock"
MAX_PROFILE_S = 600  # the daemon's longest profile (collector.profile.MAX_DURATION_S)
MAX_FREQ = 1000      # Hz (collector.profile.MAX_FREQ)

EXIT_STATUS = """exit status:
  0  done
  1  audit verify: the audit log was changed or truncated
  2  an error; the message on stderr says which
  3  a trace session or a profile was ended early (grant revoked, daemon stopping,
     client too slow)"""


# -- the parser ------------------------------------------------------------------------
def _targets(p: argparse.ArgumentParser, live: bool, verb: str = "trace") -> None:
    """-p/-n/-u/-c, repeatable, all into one ordered list of selector strings."""
    g = p.add_argument_group("targets (repeatable; any of them matches)" if live else
                             "filters (repeatable; a row matching any of them is shown)")
    what, kids = (verb, " and the children it forks" if verb == "trace" else "") if live \
        else ("only", "")
    g.add_argument("-p", "--pid", dest="targets", action="append", type=selector("pid"),
                   metavar="PID", help=f"{what} this process{kids}")
    g.add_argument("-n", "--name", dest="targets", action="append", type=selector("comm"),
                   metavar="NAME", help=f"{what} processes whose comm is NAME (1-15 bytes)")
    g.add_argument("-u", "--unit", dest="targets", action="append", type=selector("unit"),
                   metavar="UNIT", help=f"{what} the processes of a systemd unit, e.g. "
                   "nginx.service")
    g.add_argument("-c", "--cgroup", dest="targets", action="append", type=selector("cgroup"),
                   metavar="CGROUP", help=f"{what} a cgroup v2 subtree: an absolute path "
                   "like /system.slice/nginx.service")


def _reason(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--reason", required=required, metavar="TEXT",
                   help="why (a ticket id); recorded in the audit log" + (
                       "" if required else "; roles with payload access usually require it"))


def _trace(add: Adder) -> None:
    t = add("trace", "stream live events of processes",
            "Trace processes live: syscalls, files, connections, exec/fork/exit, and with "
            "--level payload a redacted prefix of the bytes they move. The session is the "
            "intersection of the request with what you may do; it stops at its deadline, at "
            "Ctrl-C, or when its grant is revoked.")
    _targets(t, live=True)
    t.add_argument("-d", "--duration", "--for", type=duration, metavar="DURATION",
                   help="stop after this long, e.g. 30s, 10m, 1h30m (default: your role's "
                   "longest session)")
    t.add_argument("--level", choices=("meta", "payload"), default="meta",
                   help="meta: syscalls, sizes, paths, peers; payload: plus redacted bytes "
                   "(default %(default)s)")
    t.add_argument("--export", action="store_true",
                   help="also send the session's redacted events off the host, through the "
                   "exporters the daemon is configured with (OTLP, JSON lines); your role "
                   "must allow it (policy key export), and it is audited")
    _reason(t)
    r = t.add_argument_group("with an access request")
    r.add_argument("--request", metavar="ID", help="use this approved request: its target, "
                   "level and reason unless given, until its grant ends")
    r.add_argument("--wait", action="store_true",
                   help="with --request: wait until it is approved, then start at once")


def profile_duration(text: str) -> int:
    """A profile's -d: a duration of at most 10 minutes."""
    seconds = duration(text)
    if seconds > MAX_PROFILE_S:
        raise argparse.ArgumentTypeError(f"a profile lasts at most {MAX_PROFILE_S // 60} "
                                         f"minutes, got {text!r}")
    return seconds


def frequency(text: str) -> int:
    return whole(text, MAX_FREQ, "Hz")


def _snapshot(add: Adder) -> None:
    s = add("snapshot", "a process's whole state now, redacted",
            "A read-only, redacted picture of one process now, read from procfs (never "
            "attached to, never its memory): identity and parents, cgroup and namespaces, "
            "threads, open fds and sockets, memory and mapped libraries (TLS flagged), limits, "
            "IO, the environment (values redacted) and the failed syscalls the daemon stored "
            "for it. A summary by default; -o writes the whole snapshot as JSON.")
    s.add_argument("pid", type=pid, metavar="PID", help="the process")
    s.add_argument("-o", "--output", metavar="FILE",
                   help="also write the whole snapshot as JSON to FILE (mode 0600, replaced "
                   "atomically)")
    _reason(s)


def _profile(add: Adder) -> None:
    p = add("profile", "where processes spend their CPU: sampled stacks",
            "Sample the on-CPU stacks (user and kernel) of processes with BPF, F times a "
            "second for a while, then show the functions that were on the CPU most. Read-"
            "only (nothing is written to or signalled in the targets) and meta level: frame "
            "names, redacted, never data. Ctrl-C stops early and shows what was sampled.")
    _targets(p, live=True, verb="profile")
    p.add_argument("-d", "--duration", type=profile_duration, default=10, metavar="DURATION",
                   help="how long to sample, e.g. 10s, 1m (at most 10m; default 10s, "
                   "within your role's limit)")
    p.add_argument("-F", "--frequency", type=frequency, default=99, metavar="HZ",
                   help=f"samples per second on each CPU (1-{MAX_FREQ}, default %(default)s)")
    p.add_argument("--folded", action="store_true",
                   help="print folded stacks (flamegraph.pl, inferno, speedscope read them) "
                   "instead of the top frames")
    p.add_argument("--svg", metavar="FILE",
                   help="also write an interactive flame graph (SVG, opens in a browser; "
                   "mode 0600)")
    _reason(p)


QUERIES = {
    "events": ("stored events", "Events the daemon stored from earlier trace sessions, "
               "newest last, only those you may see. Filters apply before --limit; when more "
               "match, a note says how to read the older ones (--before)."),
    "errors": ("stored failed syscalls, grouped", "Stored syscalls that failed, counted per "
               "process, syscall, errno and path or peer over the whole time range, "
               "commonest first."),
    "top": ("busiest PID/syscall pairs", "Stored syscalls counted per process and syscall "
            "over the whole time range: count, errors, bytes, p50/p99 latency (from "
            "quarter-octave histograms: within 9 %) and total latency, busiest first."),
}


EVENT_KINDS = ("syscall", "tls", "exec", "fork", "exit", "data")


def _query(add: Adder, name_: str) -> None:
    short, description = QUERIES[name_]
    q = add(name_, short, description)
    _targets(q, live=False)
    q.add_argument("--since", type=since, metavar="TIME",
                   help="only events at or after TIME: how long ago (15m, 2h, 1d) or an ISO "
                   "time (2026-11-29T10:00, local)")
    q.add_argument("--until", type=since, metavar="TIME",
                   help="only events before TIME (same forms as --since)")
    if name_ == "events":
        q.add_argument("--kind", action="append", choices=EVENT_KINDS,
                       help="only events of this kind (repeatable)")
    if name_ in ("events", "top"):
        q.add_argument("--syscall", action="append", metavar="NAME",
                       type=name(r"^[a-z0-9_]{1,32}$", "a syscall name (e.g. openat)"),
                       help="only this syscall, e.g. openat, connect, write (repeatable)")
    if name_ in ("events", "errors"):
        q.add_argument("--errno", action="append", metavar="NAME",
                       type=name(r"^E[A-Z0-9]{1,31}$", "an errno name (e.g. ENOENT)"),
                       help="only calls that failed with this errno, e.g. ENOENT (repeatable)")
    if name_ == "events":
        q.add_argument("--before", type=cursor, metavar="CURSOR",
                       help="the next page: events older than the cursor a previous page "
                       "printed")
    q.add_argument("--limit", type=limit, default=100, metavar="N",
                   help=("at most N rows, the busiest" if name_ in ("top", "errors") else
                         "at most N events, the newest that match every filter")
                   + f" (1-{MAX_LIMIT}, default %(default)s)")
    _reason(q)


class Records(NamedTuple):
    """A connection or L7 query command: its help, and what --method and --status match
    (None: the command has no such filter)."""

    short: str
    description: str
    method: str | None
    status: str | None


RECORDS = {
    "conns": Records("stored connections", "Connections of traced processes, one row each: "
                     "peer, local address, role, bytes and calls each way, errors (refused, "
                     "reset, timeout), duration, the protocol seen on it, and whether it was "
                     "already open when tracing started (pre-existing). The newest opened, "
                     "oldest of them first.", None, None),
    "http": Records("stored HTTP requests", "HTTP/1 requests with their responses (traced at "
                    "payload level): method, path (query redacted), status, latency, sizes.",
                    "the request method, e.g. GET", "a code (404) or a class (5xx)"),
    "sql": Records("stored SQL queries", "PostgreSQL and MySQL/MariaDB queries (traced at "
                   "payload level): normalized, redacted text, command tag or error code, "
                   "latency.", "the statement's first keyword, e.g. SELECT",
                   "a command tag (SELECT 1, OK) or an error code (42P01, 1146)"),
    "redis": Records("stored Redis commands", "Redis commands with their replies (traced at "
                     "payload level): arguments redacted, reply type or error, latency.",
                     "the command, e.g. GET", "a reply (OK, PONG, bulk, nil) or error (ERR)"),
    "dns": Records("stored DNS queries", "DNS queries over UDP and TCP (traced at payload "
                   "level): name, type, rcode, answers, latency.", "the query type, e.g. AAAA",
                   "an rcode (NXDOMAIN, SERVFAIL)"),
}


def _records(add: Adder, name: str) -> None:
    r = RECORDS[name]
    q = add(name, r.short, r.description)
    _targets(q, live=False)
    g = q.add_argument_group("row filters (every one given must match)")
    g.add_argument("--since", type=since, metavar="TIME",
                   help="only rows after TIME: how long ago (15m, 2h, 1d) or an ISO time "
                   "(2026-11-29T10:00, local)")
    g.add_argument("--until", type=until, metavar="TIME",
                   help="only rows before TIME (same forms as --since)")
    if r.status:
        g.add_argument("--status", metavar="STATUS", help=f"only this outcome: {r.status}")
    if r.method:
        g.add_argument("--slow", type=millis, metavar="DURATION",
                       help="only requests that took at least this long: 200ms, 1.5s")
        g.add_argument("--method", metavar="NAME", help=f"only this kind of request: {r.method}")
    g.add_argument("--errors", action="store_true",
                   help="only failed ones" + (" (HTTP 4xx/5xx, SQL and Redis errors, DNS "
                                              "rcodes other than NOERROR)" if r.method else
                                              " (refused, reset, timed out, ...)"))
    g.add_argument("--peer", metavar="ADDR",
                   help="only this peer: 10.0.0.5:5432, 10.0.0.5 (any port) or :5432")
    q.add_argument("--limit", type=limit, default=100, metavar="N",
                   help=f"at most N rows, the newest that match (1-{MAX_LIMIT}, default "
                   "%(default)s)")
    q.add_argument("--before", type=int, metavar="CURSOR",
                   help="the next page: rows older than CURSOR (the note under a full page "
                   "says which)")
    _reason(q)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="periscope", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill("Trace processes live and query what was traced, through "
                                  "periscoped. Everything you see is redacted, scoped by "
                                  "policy and grants, and audited.", 79),
        epilog=examples.epilog([exs[0] for exs in examples.EXAMPLES.values()]) + "\n\n"
        "periscope COMMAND --help shows each command's options and more examples.\n\n"
        + EXIT_STATUS)
    p.add_argument("--socket", default=os.environ.get("PERISCOPE_SOCKET", DEFAULT_SOCKET),
                   metavar="PATH", help="the daemon's socket (env PERISCOPE_SOCKET; default "
                   "%(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                           help="what to do (periscope COMMAND --help for details)")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true",
                        help="JSON lines (one object per line) instead of human output")
    common.add_argument("--id-token-file", metavar="PATH",
                        help="an OIDC ID token to present (else env PERISCOPE_ID_TOKEN, else "
                        "the one `periscope login` keeps)")

    def adder(parent: argparse._SubParsersAction[argparse.ArgumentParser],
              prefix: str) -> Adder:
        def add(name: str, short: str, description: str,
                leaf: bool = True) -> argparse.ArgumentParser:
            command = f"{prefix}{name}"
            sp = parent.add_parser(
                name, help=short, description=textwrap.fill(description, 79),
                epilog=examples.epilog(examples.for_command(command)),
                parents=[common] if leaf else [],
                formatter_class=argparse.RawDescriptionHelpFormatter)
            if leaf:
                sp.set_defaults(command=command)
            return sp
        return add

    add = adder(sub, "")
    _trace(add)
    for command in QUERIES:
        _query(add, command)
    for command in RECORDS:
        _records(add, command)
    _snapshot(add)
    _profile(add)
    add("status", "daemon health: probes, targets, sessions, losses",
        "The daemon's health: uptime, probes, traced targets, live sessions, every counted "
        "loss, stored events and the audit head. Admins only by default.")
    add("whoami", "who the daemon thinks you are",
        "Your identity as the daemon sees it (SO_PEERCRED: uid and groups, never claimed).")

    g = add("grant", "manage time-boxed grants (admin)",
            "Grants give a user or group access to one target at a level, until they expire.",
            leaf=False)
    gadd = adder(g.add_subparsers(dest="sub", required=True, metavar="ACTION",
                                  help="add, list or revoke"), "grant ")
    ga = gadd("add", "grant USER or @GROUP access to a target",
              "Grant a user (alice) or a group (@oncall) access to one target, at a level, "
              "for a while. The grant expires on its own; revoking it ends its sessions.")
    ga.add_argument("principal", metavar="USER|@GROUP", help="a user name, or @ and a group")
    ga.add_argument("--target", required=True, type=target, metavar="SELECTOR",
                    help="unit:NAME.service, cgroup:PATH, comm:NAME, exe:PATH or pid:N")
    ga.add_argument("--level", choices=("meta", "payload"), default="meta",
                    help="the highest level granted (default %(default)s)")
    ga.add_argument("--for", dest="duration", required=True, type=duration,
                    metavar="DURATION", help="how long it lasts, e.g. 30m, 2h")
    _reason(ga, required=True)
    gadd("list", "active grants", "Grants in force now, with who made them and when they end.")
    gr = gadd("revoke", "revoke a grant (ends its sessions now)",
              "Revoke a grant: it stops applying now and every session it allowed ends. "
              "--all revokes every active grant (an emergency stop).")
    which = gr.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID",
                       help="the grant's id (from grant add or grant list)")
    which.add_argument("--all", action="store_true", help="every active grant")

    au = add("audit", "read or verify the audit log (admin)",
             "The hash-chained audit log: every request, allowed or denied.", leaf=False)
    aadd = adder(au.add_subparsers(dest="sub", required=True, metavar="ACTION",
                                   help="show or verify"), "audit ")
    sh = aadd("show", "the last audit records", "The newest audit records, oldest first.")
    sh.add_argument("--limit", type=limit, default=50, metavar="N",
                    help=f"how many records (1-{MAX_LIMIT}, default %(default)s)")
    sh.add_argument("--since", type=since, metavar="TIME",
                    help="only records after TIME: how long ago (7d, 2h) or an ISO time")
    sh.add_argument("--kind", type=kinds, metavar="KIND[,KIND...]",
                    help="only these kinds: an op family (request, grant, trace, audit, ...) "
                    "or a record kind (break_glass, session_end, idp_auth, start, stop, "
                    "policy_reload, crash_recovered)")
    aadd("verify", "verify the hash chain against its anchors",
         "Recompute the hash chain and compare it with the anchors (also sent to journald). "
         "Exit status 1 if the log was changed or truncated.")
    from collector.cli import access  # it builds on this module's value types

    access.add_commands(add, adder)
    return p
