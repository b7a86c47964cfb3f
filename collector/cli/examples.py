"""Every example the client's --help shows, in one table (a root test runs each of them)."""

from __future__ import annotations

from typing import NamedTuple


class Example(NamedTuple):
    """One command line as typed (with {placeholders}) and what it shows."""

    line: str
    says: str


# What the placeholders read as in --help. The root test substitutes real ones
# (a pid it started, a user it created, a grant it added, ...).
SAMPLE: dict[str, str] = {
    "pid": "181",
    "comm": "nginx",
    "unit": "checkout.service",
    "cgroup": "/system.slice/checkout.service",
    "user": "alice",
    "group": "oncall",
    "grant": "3f9c01ab",
    "reason": "INC-1234",
    "time": "2026-11-29T10:00",
    "file": "snap.json",
    "svg": "cpu.svg",
    "request": "7c2e9d10",
}

# command (as typed, sub-commands joined by a space) -> its examples, bcc style.
EXAMPLES: dict[str, tuple[Example, ...]] = {
    "trace": (
        Example("periscope trace -p {pid}",
                "PID {pid}, live, meta level (no bytes)"),
        Example("periscope trace -n {comm} -d 30s",
                "processes named {comm}, for 30 s"),
        Example("periscope trace -u {unit} --json",
                "a systemd unit, as JSON lines"),
        Example("periscope trace -c {cgroup} -d 1m",
                "a cgroup v2 subtree, for a minute"),
        Example("periscope trace -p {pid} --level payload --reason {reason} -d 5m",
                "plus redacted payload bytes (needs a reason)"),
        Example("periscope trace -p {pid} --export -d 10m",
                "also sent off the host, if your role may"),
        Example("periscope trace --request {request} --wait",
                "start as soon as request {request} is approved"),
    ),
    "events": (
        Example("periscope events -p {pid} --limit 50",
                "the last 50 stored events of PID {pid}"),
        Example("periscope events -n {comm} --since 15m --json",
                "{comm}'s events of the last 15 min, JSON"),
        Example("periscope events -p {pid} --syscall openat --errno ENOENT",
                "PID {pid}'s opens that found no file"),
        Example("periscope events --kind exec --since {time} --until 1m",
                "execs from a local time until a minute ago"),
    ),
    "errors": (
        Example("periscope errors --since 1h",
                "failed syscalls of the last hour, grouped"),
        Example("periscope errors -u {unit} --since {time}",
                "a unit's failures since a local time"),
        Example("periscope errors -p {pid} --errno ECONNREFUSED",
                "refused connects of PID {pid}, per peer"),
    ),
    "conns": (
        Example("periscope conns -p {pid}",
                "PID {pid}'s connections, newest opened last"),
        Example("periscope conns --errors --since 1h",
                "connections refused, reset or timed out"),
        Example("periscope conns -n {comm} --peer :5432 --limit 5",
                "{comm}'s 5 latest connections to port 5432"),
    ),
    "http": (
        Example("periscope http -u {unit} --since 2h --limit 20",
                "a unit's last 20 HTTP requests (redacted)"),
        Example("periscope http --status 5xx --since 1h",
                "server errors of the last hour"),
        Example("periscope http -p {pid} --slow 200ms --json",
                "requests that took 200 ms or more, JSON"),
    ),
    "sql": (
        Example("periscope sql --errors --since 1h",
                "failed SQL queries and their error codes"),
        Example("periscope sql -n {comm} --slow 100ms --method SELECT",
                "{comm}'s SELECTs that took 100 ms or more"),
    ),
    "redis": (
        Example("periscope redis -p {pid} --method GET --limit 20",
                "PID {pid}'s last 20 Redis GETs"),
    ),
    "dns": (
        Example("periscope dns --status NXDOMAIN --since 30m",
                "names that did not resolve, last 30 min"),
    ),
    "top": (
        Example("periscope top --since 10m",
                "busiest PID/syscall pairs, last 10 min"),
        Example("periscope top -c {cgroup} --limit 5",
                "a cgroup's 5 busiest, everything stored"),
        Example("periscope top -n {comm} --syscall read --since 1h",
                "{comm}'s reads of the last hour, p50/p99"),
    ),
    "snapshot": (
        Example("periscope snapshot {pid}",
                "PID {pid} now: files, sockets, memory, env names"),
        Example("periscope snapshot {pid} -o {file}",
                "the whole redacted snapshot as JSON (0600)"),
    ),
    "profile": (
        Example("periscope profile -p {pid} -d 5s",
                "PID {pid}'s hottest functions, 5 s at 99 Hz"),
        Example("periscope profile -u {unit} -d 5s --svg {svg}",
                "a unit's flame graph, for a browser"),
        Example("periscope profile -n {comm} -d 3s -F 49 --folded",
                "folded stacks for flamegraph.pl/speedscope"),
    ),
    "status": (
        Example("periscope status",
                "health, targets, sessions, losses"),
        Example("periscope status --json",
                "every counter, as one JSON object"),
    ),
    "whoami": (
        Example("periscope whoami",
                "who the daemon says you are"),
    ),
    "grant add": (
        Example("periscope grant add {user} --target unit:{unit} --level payload --for 2h"
                " --reason {reason}",
                "{user} may trace a unit with payload, 2 h"),
        Example("periscope grant add @{group} --target comm:{comm} --for 30m --reason {reason}",
                "group {group} may trace {comm} (meta), 30 min"),
    ),
    "grant list": (
        Example("periscope grant list", "active grants and when they end"),
    ),
    "grant revoke": (
        Example("periscope grant revoke {grant}",
                "end grant {grant} and its sessions now"),
        Example("periscope grant revoke --all",
                "emergency: end every grant and its sessions"),
    ),
    "audit show": (
        Example("periscope audit show --limit 20",
                "who asked for what, allowed or denied"),
        Example("periscope audit show --since 7d --kind request,grant,break_glass",
                "a week of access requests, grants and break-glass"),
    ),
    "audit verify": (
        Example("periscope audit verify",
                "check the hash chain; exit 1 if broken"),
    ),
    "request create": (
        Example("periscope request create -u {unit} --level payload --for 1h --reason {reason}",
                "ask for payload on a unit for 1 h"),
    ),
    "request list": (
        Example("periscope request list --state pending",
                "pending requests you filed or may review"),
    ),
    "request show": (
        Example("periscope request show {request}", "its state, reviews and grant"),
    ),
    "request approve": (
        Example("periscope request approve {request} --comment 'scope is right'",
                "approve it (never your own)"),
    ),
    "request deny": (
        Example("periscope request deny {request} --reason 'meta is enough'",
                "deny it, saying why"),
    ),
    "request cancel": (
        Example("periscope request cancel {request}",
                "withdraw your request (ends its grant)"),
    ),
    "request break-glass": (
        Example("periscope request break-glass -u {unit} --for 10m --reason {reason}",
                "on-call: payload now, 10 min, loudly"),
    ),
    "login": (
        Example("periscope login", "an ID token from your identity provider"),
    ),
}

_COMMENT_COLUMN = 46


def render(example: Example, values: dict[str, str] | None = None) -> tuple[str, str]:
    """The example's line and explanation with placeholders filled (SAMPLE by default)."""
    v = SAMPLE if values is None else values
    return example.line.format(**v), example.says.format(**v)


def for_command(command: str) -> list[Example]:
    """A command's examples; for a group ("grant"), those of all its sub-commands."""
    return [ex for cmd, exs in EXAMPLES.items()
            if cmd == command or cmd.startswith(command + " ") for ex in exs]


def epilog(examples: list[Example]) -> str:
    """The examples as --help shows them: the line, then `# what it shows`."""
    out = ["examples:"]
    for ex in examples:
        line, says = render(ex)
        if len(line) + 2 < _COMMENT_COLUMN:
            out.append(f"  {line.ljust(_COMMENT_COLUMN - 2)}# {says}")
        else:
            out += [f"  {line}", f"  {'':<{_COMMENT_COLUMN - 2}}# {says}"]
    return "\n".join(out)
