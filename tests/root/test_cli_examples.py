"""Every example in `periscope --help` runs against a real daemon and shows what it says.

The examples come from collector/cli/examples.py; their placeholders are filled with
things this module creates: two workloads (one in a cgroup named like a systemd unit, with
its own comm), a user, a group and grants. Each example's check knows the ground truth.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collector.cli import examples
from tests.root.conftest import REPO, TEST_GROUP, Daemon, start_daemon, stop_daemon, wait_for

# Until the server treats a stored query's targets as filters (the collector restructuring
# does that), -n/-u/-c on events/errors/conns/http/top do not narrow the rows. The checks
# of those examples assert everything else now, and that only matching rows come back once
# this is True (set it when the server filters; the other workload's rows are always there
# to be filtered out).
SERVER_FILTERS_STORED_QUERIES = True

COMM = "pscliex"          # the traced workload's comm (set by the workload itself)
OTHER_COMM = "pscliother"  # a second traced workload that no -n/-u/-c example names
SECRET = "s3cr3t-cli-example-t0ken"

WORKLOAD = r"""
import http.client, http.server, sys, threading, time
open("/proc/self/comm", "w").write(sys.argv[1])  # before any thread: they inherit it
port = int(sys.argv[2])
if port == 0:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a): pass
    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
print(port, flush=True)
while True:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/orders?id=7", headers={"Authorization": "Bearer " + sys.argv[3]})
    c.getresponse().read(); c.close()
    try:
        open("/nonexistent/periscope-cli-example")
    except OSError:
        pass
    with open("/etc/hostname") as f:
        f.read()
    time.sleep(float(sys.argv[4]))
"""


def cgroup2_mount() -> str | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return left.split()[4]
    return None


@dataclass
class World:
    """The daemon, the workloads and the placeholder values the examples are run with."""

    daemon: Daemon
    main: subprocess.Popen[bytes]
    other: subprocess.Popen[bytes]
    values: dict[str, str]
    cgroup_dir: Path | None
    daemon_sees_cgroup: bool  # a cgroup v2 hierarchy exists (the daemon finds its mount)
    grants_made: list[str] = field(default_factory=list)

    def grant(self, principal: str) -> str:
        r = self.daemon.request("grant.add", {"principal": principal, "target": "pid:1",
                                              "level": "meta", "for": "10m", "reason": "t"})
        assert r["ok"], r
        gid = str(r["result"]["id"])
        self.grants_made.append(gid)
        return gid

    def active_grants(self) -> dict[str, dict[str, Any]]:
        return {g["id"]: g for g in self.daemon.request("grant.list")["result"]}


def _spawn(comm: str, port: int, pause: float,
           stack: contextlib.ExitStack) -> tuple[subprocess.Popen[bytes], int]:
    """A workload (HTTP server when port is 0, else a client of it); prints its port."""
    p = subprocess.Popen([sys.executable, "-c", WORKLOAD, comm, str(port), SECRET, str(pause)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stack.callback(p.wait)
    stack.callback(p.kill)
    assert p.stdout is not None
    return p, int(p.stdout.readline())


def _make_cgroup(unit: str, stack: contextlib.ExitStack) -> tuple[Path, str] | None:
    """A fresh cgroup v2 named like a unit: (its directory, the mount point), or None.

    Made before the workloads so that it is removed after they are killed."""
    mnt = cgroup2_mount()
    if mnt is None:
        return None
    cg_dir = Path(mnt) / "periscope-cli-test.slice" / unit
    try:
        cg_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # not ours to create here (a read-only or delegated hierarchy)

    def remove() -> None:
        wait_for(lambda: not (cg_dir / "cgroup.procs").read_text().strip(), 10,
                 what="the test cgroup to empty")
        cg_dir.rmdir()
        if all(c.is_file() for c in cg_dir.parent.iterdir()):  # no other child cgroups
            cg_dir.parent.rmdir()

    stack.callback(remove)
    return cg_dir, mnt


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with contextlib.ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="periscope-cli-"))
        stack.callback(subprocess.run, ["rm", "-rf", str(base)], check=False)
        d = start_daemon(base)

        def stop() -> None:
            rc = stop_daemon(d)
            assert rc == 0, d.log_text()[-3000:]

        stack.callback(stop)
        user = f"pscli{os.getpid() % 100000}"
        subprocess.run(["userdel", user], check=False, capture_output=True)
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", user], check=True)
        stack.callback(subprocess.run, ["userdel", user], check=False, capture_output=True)
        unit = f"pscli-{os.getpid()}.service"
        cg = _make_cgroup(unit, stack)
        main, port = _spawn(COMM, 0, 0.2, stack)
        if cg is not None:
            (cg[0] / "cgroup.procs").write_text(str(main.pid))
        # A busy client of main's HTTP server: the newest stored rows always include
        # some of its rows, so a filter that does not filter shows.
        other, _ = _spawn(OTHER_COMM, port, 0.05, stack)
        ago = dt.datetime.now() - dt.timedelta(minutes=10)
        values = {**examples.SAMPLE, "pid": str(main.pid), "comm": COMM, "unit": unit,
                  "cgroup": "/" + str(cg[0].relative_to(cg[1])) if cg else "/none",
                  "user": user, "group": TEST_GROUP, "reason": "INC-1234",
                  "time": ago.strftime("%Y-%m-%dT%H:%M")}
        w = World(d, main, other, values, cg[0] if cg else None, cg is not None)
        # Stored queries need stored rows of both workloads, interleaved, all along: one
        # session traces both at payload level for the whole module.
        background = subprocess.Popen(
            _argv(w, f"periscope trace -p {main.pid} -p {other.pid} --level payload "
                  "--reason background -d 1h --json"), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        stack.callback(_interrupt, background)
        wait_for(lambda: d.request("status")["result"]["stored_events"] > 200, 120,
                 what="stored events of both workloads")
        yield w


def _interrupt(p: subprocess.Popen[Any]) -> None:
    p.send_signal(signal.SIGINT)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


# -- running an example ----------------------------------------------------------------------
@dataclass
class Run:
    rc: int
    out: str
    err: str


def _argv(w: World, line: str) -> list[str]:
    words = shlex.split(line)
    assert words[0] == "periscope"
    return [sys.executable, "-m", "collector.cli", "--socket", w.daemon.socket, *words[1:]]


def run_once(w: World, line: str) -> Run:
    r = subprocess.run(_argv(w, line), capture_output=True, text=True, timeout=120, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    return Run(r.returncode, r.stdout, r.stderr)


def run_trace(w: World, line: str, enough: Callable[[str], bool]) -> Run:
    """Start a trace example, wait until its output shows enough, then Ctrl-C it."""
    p = subprocess.Popen(_argv(w, line), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    out: list[str] = []
    assert p.stdout is not None
    stdout = p.stdout
    reader = threading.Thread(target=lambda: out.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: enough("".join(out)) or p.poll() is not None, 90,
                 what=f"output of {line!r}")
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    reader.join(10)
    assert p.stderr is not None
    return Run(p.returncode, "".join(out), p.stderr.read())


# -- reading the output ------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    pid: int
    comm: str
    syscall: str
    line: str


def event_rows(out: str) -> list[Row]:
    """The human event table: TIME [date] PID COMM SYSCALL ..."""
    rows, seen_header = [], False
    for line in out.splitlines():
        if line.startswith("TIME "):
            seen_header = True
            continue
        if not seen_header or not line.strip():
            continue
        t = line.split()
        if re.fullmatch(r"\d{4}-\d\d-\d\d", t[0]):
            t = t[1:]
        rows.append(Row(int(t[1]), t[2], t[3], line))
    return rows


def json_rows(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def table_rows(out: str) -> list[list[str]]:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return [ln.split() for ln in lines[1:]]


def pid_of(w: World) -> int:
    return w.main.pid


# -- what each example must show ------------------------------------------------------------
def _trace_check(w: World, line: str, rows: Callable[[str], list[Any]],
                 ok: Callable[[Any], bool], payload: bool = False) -> None:
    def enough(out: str) -> bool:
        got = rows(out)
        return len(got) >= 5 and (not payload or any('"' in r.line for r in got))

    r = run_trace(w, line, enough)
    assert r.rc == 0, r.err
    assert "session ended (interrupted)" in r.err, r.err
    got = rows(r.out)
    assert len(got) >= 5, r.out[-2000:] + r.err
    bad = [g for g in got if not ok(g)]
    assert not bad, bad[:5]
    quoted = [g for g in got if hasattr(g, "line") and '"' in g.line]
    if payload:
        assert any('"GET /orders' in g.line for g in quoted), r.out[-2000:]
    else:
        assert not quoted, f"payload bytes at meta level: {quoted[:3]}"
    assert SECRET not in r.out and SECRET not in r.err


def check_trace_pid(w: World, line: str) -> None:
    _trace_check(w, line, event_rows, lambda r: r.pid == pid_of(w))


def check_trace_comm(w: World, line: str) -> None:
    _trace_check(w, line, event_rows, lambda r: r.comm == COMM)


def check_trace_unit_json(w: World, line: str) -> None:
    r = run_trace(w, line, lambda out: len(json_rows(out)) >= 5)
    assert r.rc == 0, r.err
    evs = json_rows(r.out)
    assert len(evs) >= 5 and all(e["pid"] == pid_of(w) for e in evs), evs[:5]
    assert not [e for e in evs if "payload" in e]


def check_trace_cgroup(w: World, line: str) -> None:
    if not w.daemon_sees_cgroup:
        pytest.skip("no cgroup v2 hierarchy on this host")
    _trace_check(w, line, event_rows, lambda r: r.pid == pid_of(w))


def check_trace_payload(w: World, line: str) -> None:
    _trace_check(w, line, event_rows, lambda r: r.pid == pid_of(w), payload=True)


def _query(w: World, line: str) -> tuple[Run, list[Row]]:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    return r, event_rows(r.out)


def check_events_pid(w: World, line: str) -> None:
    _, rows = _query(w, line)
    assert 1 <= len(rows) <= 50 and all(r.pid == pid_of(w) for r in rows), rows[:5]


def check_events_comm_json(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    evs = json_rows(r.out)
    assert evs and all(e["pid"] in (w.main.pid, w.other.pid) for e in evs), evs[:3]
    if SERVER_FILTERS_STORED_QUERIES:
        assert all(e["comm"] == COMM for e in evs), {e["comm"] for e in evs}
    assert min(e["ts"] for e in evs) >= time.time() - 15 * 60 - 60


def _errno(row: Row) -> bool:
    return re.search(r"\sE[A-Z0-9]+\s", row.line) is not None


def check_errors(w: World, line: str) -> None:
    _, rows = _query(w, line)
    assert rows and all(_errno(r) for r in rows), rows[:5]
    assert any("/nonexistent/periscope-cli-example" in r.line for r in rows)


def check_errors_unit(w: World, line: str) -> None:
    _, rows = _query(w, line)
    assert rows and all(_errno(r) for r in rows), rows[:5]
    if SERVER_FILTERS_STORED_QUERIES:
        assert all(r.pid == pid_of(w) for r in rows), rows[:5]


def check_conns_pid(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    rows = table_rows(r.out)
    assert rows and r.out.startswith("TIME "), r.out
    # TIME PID COMM FD ROLE ...: the main workload serves HTTP (accepted connections)
    assert all(int(x[1]) == pid_of(w) for x in rows), rows[:5]
    assert any("server" in x and "http" in x for x in rows), rows[:5]


def check_conns_errors(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    # the workloads' connections all succeed: nothing refused, reset or timed out
    assert r.out == "(no stored connections match)\n", r.out


def check_conns_peer_limit(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    assert r.out == "(no stored connections match)\n", r.out  # nothing talks to :5432


def _l7_json(r: Run) -> list[dict[str, Any]]:
    assert r.rc == 0, r.err
    return json_rows(r.out)


def check_http_unit(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    rows = table_rows(r.out)
    assert 1 <= len(rows) <= 20, r.out
    if SERVER_FILTERS_STORED_QUERIES:
        assert all(int(x[1]) == pid_of(w) for x in rows), rows[:5]
    # TIME PID COMM METHOD PATH STATUS ...: the workload's one request, answered 200
    assert all(x[3:6] == ["GET", "/orders?id=7", "200"] for x in rows), rows[:5]
    assert SECRET not in r.out
    assert ("20 newest rows shown" in r.err) <= (len(rows) == 20), r.err


def check_http_5xx(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    assert r.out == "(no stored HTTP requests match)\n", r.out  # the workload answers 200


def check_http_slow_json(w: World, line: str) -> None:
    rows = _l7_json(run_once(w, line))
    # the handler answers at once; a busy host may still make one slow: only those show
    assert all(r["latency_ms"] >= 200 and r["pid"] == pid_of(w) for r in rows), rows[:3]


def check_sql_errors(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0 and r.out == "(no stored SQL queries match)\n", r.out + r.err


def check_sql_slow_select(w: World, line: str) -> None:
    check_sql_errors(w, line)


def check_redis_get(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0 and r.out == "(no stored Redis commands match)\n", r.out + r.err


def check_dns_nxdomain(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0 and r.out == "(no stored DNS queries match)\n", r.out + r.err


def _top(w: World, line: str, limit: int, pids: set[int]) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    rows = table_rows(r.out)
    assert rows, r.out
    counts = [int(x[3]) for x in rows]
    assert counts == sorted(counts, reverse=True) and sum(counts) <= limit, rows
    assert {int(x[0]) for x in rows} <= pids, rows


def check_top(w: World, line: str) -> None:
    _top(w, line, 100, {w.main.pid, w.other.pid})


def check_top_cgroup(w: World, line: str) -> None:
    _top(w, line, 500, {w.main.pid} if SERVER_FILTERS_STORED_QUERIES else
         {w.main.pid, w.other.pid})


def check_snapshot(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    assert r.out.startswith(f"pid {pid_of(w)} ({COMM}), parent {os.getpid()}, user root"), r.out
    assert "LISTEN" in r.out and "127.0.0.1:" in r.out, r.out


def check_status(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    first = r.out.splitlines()[0]
    assert first.startswith("periscoped: up ") and "events stored" in first, r.out
    for head in ("targets:", "sessions:", "losses:", "clients:", "audit:"):
        assert f"\n{head}" in r.out, (head, r.out)


def check_status_json(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    (s,) = json_rows(r.out)
    assert s["stored_events"] > 0 and s["uptime_s"] > 0 and "kernel" in s


def check_whoami(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0 and r.out.startswith("root (uid 0), groups: "), r.out + r.err


def _check_grant_add(w: World, line: str, principal: str, target: str, level: str,
                     seconds: int) -> None:
    before = time.time()
    r = run_once(w, line)
    assert r.rc == 0, r.err
    m = re.match(r"grant ([0-9a-f]+): (\S+) may trace (\S+) at (\w+) until ", r.out)
    assert m and m.groups()[1:] == (principal, target, level), r.out
    w.grants_made.append(m.group(1))
    g = w.active_grants()[m.group(1)]
    assert (g["principal"], g["target"], g["level"]) == (principal, target, level)
    assert before + seconds - 5 <= g["expires"] <= time.time() + seconds + 5


def check_grant_add_user(w: World, line: str) -> None:
    v = w.values
    _check_grant_add(w, line, v["user"], f"unit:{v['unit']}", "payload", 7200)


def check_grant_add_group(w: World, line: str) -> None:
    v = w.values
    _check_grant_add(w, line, f"@{v['group']}", f"comm:{v['comm']}", "meta", 1800)


def check_grant_list(w: World, line: str) -> None:
    gid = w.grant(w.values["user"])
    r = run_once(w, line)
    assert r.rc == 0, r.err
    ids = {row[0] for row in table_rows(r.out)}
    assert gid in ids and ids == set(w.active_grants()), r.out


def check_grant_revoke(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    assert r.out.strip() == f"revoked grant {w.values['grant']}; 0 sessions ended", r.out
    assert w.values["grant"] not in w.active_grants()


def check_audit_show(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    rows = table_rows(r.out)
    assert len(rows) == 20, r.out  # the examples before this one made more than 20 requests
    seqs = [int(x[0]) for x in rows]
    assert seqs == list(range(seqs[0], seqs[0] + 20))
    assert all(x[5] in ("allow", "deny") for x in rows), rows


def check_audit_verify(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0 and "chain intact" in r.out, r.out + r.err


CHECKS: dict[str, Callable[[World, str], None]] = {
    "periscope trace -p {pid}": check_trace_pid,
    "periscope trace -n {comm} -d 30s": check_trace_comm,
    "periscope trace -u {unit} --json": check_trace_unit_json,
    "periscope trace -c {cgroup} -d 1m": check_trace_cgroup,
    "periscope trace -p {pid} --level payload --reason {reason} -d 5m": check_trace_payload,
    "periscope events -p {pid} --limit 50": check_events_pid,
    "periscope events -n {comm} --since 15m --json": check_events_comm_json,
    "periscope errors --since 1h": check_errors,
    "periscope errors -u {unit} --since {time}": check_errors_unit,
    "periscope conns -p {pid}": check_conns_pid,
    "periscope conns --errors --since 1h": check_conns_errors,
    "periscope conns -n {comm} --peer :5432 --limit 5": check_conns_peer_limit,
    "periscope http -u {unit} --since 2h --limit 20": check_http_unit,
    "periscope http --status 5xx --since 1h": check_http_5xx,
    "periscope http -p {pid} --slow 200ms --json": check_http_slow_json,
    "periscope sql --errors --since 1h": check_sql_errors,
    "periscope sql -n {comm} --slow 100ms --method SELECT": check_sql_slow_select,
    "periscope redis -p {pid} --method GET --limit 20": check_redis_get,
    "periscope dns --status NXDOMAIN --since 30m": check_dns_nxdomain,
    "periscope top --since 10m": check_top,
    "periscope top -c {cgroup} --limit 500": check_top_cgroup,
    "periscope snapshot {pid}": check_snapshot,
    "periscope status": check_status,
    "periscope status --json": check_status_json,
    "periscope whoami": check_whoami,
    "periscope grant add {user} --target unit:{unit} --level payload --for 2h"
    " --reason {reason}": check_grant_add_user,
    "periscope grant add @{group} --target comm:{comm} --for 30m --reason {reason}":
        check_grant_add_group,
    "periscope grant list": check_grant_list,
    "periscope grant revoke {grant}": check_grant_revoke,
    "periscope audit show --limit 20": check_audit_show,
    "periscope audit verify": check_audit_verify,
}

ALL = [ex for exs in examples.EXAMPLES.values() for ex in exs]


def test_every_example_has_a_check() -> None:
    assert set(CHECKS) == {ex.line for ex in ALL}


@pytest.mark.parametrize("ex", [pytest.param(ex, id=ex.line) for ex in ALL])
def test_example(world: World, ex: examples.Example) -> None:
    if world.cgroup_dir is None and ("{unit}" in ex.line or "{cgroup}" in ex.line):
        pytest.skip("no cgroup v2 hierarchy on this host to put a workload in")
    values = dict(world.values)
    if "{grant}" in ex.line:
        values["grant"] = world.grant(values["user"])
    line, _says = examples.render(ex, values)
    world.values = values
    CHECKS[ex.line](world, line)
