"""Every example in `periscope --help` runs against a real daemon and shows what it says.

The examples come from collector/cli/examples.py; their placeholders are filled with
things this module creates: two workloads (one in a cgroup named like a systemd unit, with
its own comm), a user, a group and grants. Each example's check knows the ground truth.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import json
import os
import pwd
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
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from collector.cli import examples
from tests.root.conftest import REPO, TEST_GROUP, Daemon, start_daemon, stop_daemon, wait_for
from tests.unit.access.fakeidp import AUDIENCE, FakeIdp, device_flow_server

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
import http.client, http.server, socket, sys, threading, time
open("/proc/self/comm", "w").write(sys.argv[1])  # before any thread: they inherit it
port = int(sys.argv[2])
def busy():  # a few % of a CPU in short bursts: something for the profile examples to sample
    while True:
        sum(i * i for i in range(200000))
        time.sleep(0.2)
if port == 0:
    threading.Thread(target=busy, daemon=True).start()
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
    s = socket.socket()  # blocking: connect itself fails (with a timeout: EINPROGRESS)
    try:  # nothing listens on port 1: ECONNREFUSED, for the errors --errno example
        s.connect(("127.0.0.1", 1))
    except OSError:
        pass
    s.close()
    with open("/etc/hostname") as f:
        f.read()
    time.sleep(float(sys.argv[4]))
"""


ONCALL = """
[roles.oncall]
ops = ["trace"]
max_level = "meta"
targets = ["*"]
break_glass = true
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
    user_uid: int = 0
    issuer: str = ""          # the test identity provider (device flow on 127.0.0.1)
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

    def file_request(self, as_root: bool = False) -> str:
        """A pending request for payload on the main workload, filed by the test user (or
        by root, for what only a requester may do)."""
        sock = None if as_root else self.daemon.connect(self.user_uid, grp.getgrnam(
            TEST_GROUP).gr_gid)
        r = self.daemon.request("request.create", {"target": f"pid:{self.main.pid}",
                                                   "level": "payload", "duration": 600,
                                                   "reason": "INC-1234"}, sock=sock)
        if sock is not None:
            sock.close()
        assert r["ok"], r
        return str(r["result"]["id"])

    def request_state(self, rid: str) -> dict[str, Any]:
        r = self.daemon.request("request.show", {"id": rid})
        assert r["ok"], r
        return dict(r["result"])


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
        user = f"pscli{os.getpid() % 100000}"
        # The embedded default policy, plus: the test user is an investigator (meta, may
        # request payload), root may also break glass, and admin (root) may export (with
        # the JSON-lines exporter below: what `trace --export` needs).
        policy = resources.files("collector").joinpath("defaults/policy.toml").read_text()
        policy = policy.replace('root = ["admin"]', f'root = ["admin", "oncall"]\n{user} = '
                                '["investigator"]') + ONCALL
        policy = policy.replace("[roles.admin]\n", '[roles.admin]\nexport = "payload"\n')
        idp = FakeIdp()
        issuer, _calls = stack.enter_context(device_flow_server(idp, "root"))
        idp.write_jwks(base / "jwks.json")
        d = start_daemon(base, f'[idp]\nissuer = "{issuer}"\naudience = "{AUDIENCE}"\n'
                         f'jwks = "{base / "jwks.json"}"\n'
                         f'[export.jsonlog]\npath = "{base}/exported.jsonl"\n',
                         policy_text=policy)

        def stop() -> None:
            rc = stop_daemon(d)
            assert rc == 0, d.log_text()[-3000:]

        stack.callback(stop)
        subprocess.run(["userdel", user], check=False, capture_output=True)
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", "--groups", TEST_GROUP, user], check=True)
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
                  "time": ago.strftime("%Y-%m-%dT%H:%M"), "file": str(base / "snap.json"),
                  "svg": str(base / "cpu.svg")}
        w = World(d, main, other, values, cg[0] if cg else None, cg is not None,
                  pwd.getpwnam(user).pw_uid, issuer)
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


def check_trace_export(w: World, line: str) -> None:
    exported = w.daemon.state.parent / "exported.jsonl"
    before = exported.read_bytes().count(b"\n") if exported.exists() else 0
    _trace_check(w, line, event_rows, lambda r: r.pid == pid_of(w))

    def lines() -> list[dict[str, Any]]:
        got = exported.read_bytes().splitlines()[before:] if exported.exists() else []
        return [json.loads(x) for x in got]

    got = wait_for(lambda: len(lines()) >= 5 and lines(), 30, what="exported JSON lines")
    assert {e["pid"] for e in got} == {pid_of(w)}  # the session's target only
    assert not any("payload" in e for e in got)  # a meta session exports meta
    assert SECRET.encode() not in exported.read_bytes()


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


def _as_json(w: World, line: str, header: str) -> list[dict[str, Any]]:
    """Run the example as printed (a table with `header`), then again with --json: rows."""
    r = run_once(w, line)
    assert r.rc == 0, r.err
    assert header in r.out.splitlines()[0], r.out[:500]
    r = run_once(w, line + " --json")
    assert r.rc == 0, r.err
    return json_rows(r.out)


def check_events_syscall_errno(w: World, line: str) -> None:
    _, rows = _query(w, line)
    assert rows and all(r.pid == pid_of(w) and r.syscall == "openat" and "ENOENT" in r.line
                        for r in rows), rows[:5]
    assert any("/nonexistent/periscope-cli-example" in r.line for r in rows)


def check_events_exec_until(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    rows = json_rows(run_once(w, line + " --json").out)
    # the workloads exec nothing after they start: what is there is older than a minute
    assert all(e["kind"] == "exec" and e["ts"] < time.time() - 55 for e in rows), rows[:3]


def check_errors(w: World, line: str) -> None:
    rows = _as_json(w, line, "ERRNO")
    assert rows and all(x["errno"].startswith("E") and x["count"] >= 1 for x in rows), rows
    counts = [x["count"] for x in rows]
    assert counts == sorted(counts, reverse=True), counts
    assert any(x["errno"] == "ENOENT" and x.get("detail") == "/nonexistent/periscope-cli-example"
               for x in rows), rows


def check_errors_unit(w: World, line: str) -> None:
    rows = _as_json(w, line, "ERRNO")
    assert rows and all(x["errno"].startswith("E") for x in rows), rows
    assert all(x["pid"] == pid_of(w) for x in rows), rows


def check_errors_errno(w: World, line: str) -> None:
    rows = _as_json(w, line, "ERRNO")
    assert rows and all(x["errno"] == "ECONNREFUSED" and x["pid"] == pid_of(w)
                        and x["syscall"] == "connect" for x in rows), rows
    assert any(x.get("detail") == "127.0.0.1:1" for x in rows), rows


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
    # The workloads' only failing connections are the blocking connects to port 1 that
    # each loop makes (for the errors --errno example): all refused, from both workloads;
    # their HTTP connections succeed, so none of those is listed.
    rows = table_rows(r.out)
    assert rows and r.out.startswith("TIME "), r.out
    assert all(int(x[1]) in (w.main.pid, w.other.pid) and "127.0.0.1:1" in x
               and "failed" in x and "refused" in x for x in rows), rows[:5]
    assert {int(x[1]) for x in rows} == {w.main.pid, w.other.pid}, rows[:5]


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


def _top(w: World, line: str, limit: int, pids: set[int]) -> list[dict[str, Any]]:
    rows = _as_json(w, line, "P99")
    assert 1 <= len(rows) <= limit, rows
    counts = [x["count"] for x in rows]
    assert counts == sorted(counts, reverse=True), counts
    assert {x["pid"] for x in rows} <= pids, rows
    assert all(x["p50_us"] <= x["p99_us"] for x in rows), rows
    return rows


def check_top(w: World, line: str) -> None:
    _top(w, line, 100, {w.main.pid, w.other.pid})


def check_top_cgroup(w: World, line: str) -> None:
    _top(w, line, 5, {w.main.pid})


def check_top_comm_syscall(w: World, line: str) -> None:
    rows = _top(w, line, 100, {w.main.pid})
    assert all(x["syscall"] == "read" and x["comm"] == COMM for x in rows), rows


def check_snapshot(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    assert r.out.startswith(f"pid {pid_of(w)} {COMM}: snapshot taken "), r.out
    assert f"parents {os.getpid()} " in r.out, r.out
    assert re.search(r"inet stream +127\.0\.0\.1:\d+ LISTEN", r.out), r.out
    assert "environ " in r.out  # names only: values are never in the summary


def check_snapshot_file(w: World, line: str) -> None:
    path = Path(w.values["file"])
    r = run_once(w, line)
    assert r.rc == 0, r.err
    assert r.out.startswith(f"pid {pid_of(w)} {COMM}: snapshot taken ") and path.name in r.err
    assert path.stat().st_mode & 0o777 == 0o600
    snap = json.loads(path.read_text())
    assert (snap["schema"], snap["pid"], snap["identity"]["comm"]) == (1, pid_of(w), COMM)
    # (SECRET is a bare argv word of the workload: no redaction rule can know it is one;
    # test_debug_ops.py checks environment secrets, argv flags and paths.)


def _profiled(w: World, line: str) -> tuple[Run, int]:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    m = re.search(r"profile ended \(done\): ([\d,]+) samples in [\d.]+ s at (\d+) Hz", r.err)
    assert m and int(m.group(1).replace(",", "")) > 0, r.err
    assert SECRET not in r.out + r.err
    return r, int(m.group(1).replace(",", ""))


def check_profile_pid(w: World, line: str) -> None:
    r, samples = _profiled(w, line)
    rows = [ln.split() for ln in r.out.splitlines()]
    assert rows[0] == ["SELF", "SELF%", "TOTAL%", "FRAME"], r.out
    assert sum(int(x[0].replace(",", "")) for x in rows[1:] if x[0][0].isdigit()) <= samples
    assert float(rows[1][1].rstrip("%")) > 0, r.out


def check_profile_unit_svg(w: World, line: str) -> None:
    if not w.daemon_sees_cgroup:
        pytest.skip("no cgroup v2 hierarchy on this host")
    _profiled(w, line)
    svg = Path(w.values["svg"])
    assert svg.stat().st_mode & 0o777 == 0o600
    text = svg.read_text()
    assert text.startswith("<?xml") and f">{COMM} (" in text and OTHER_COMM not in text


def check_profile_folded(w: World, line: str) -> None:
    r, samples = _profiled(w, line)
    assert "at 49 Hz" in r.err
    lines = r.out.splitlines()
    assert lines and all(ln.startswith(f"{COMM};") for ln in lines), lines[:5]
    assert sum(int(ln.rsplit(" ", 1)[1]) for ln in lines) == samples


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


def check_grant_revoke_all(w: World, line: str) -> None:
    made = {w.grant(w.values["user"]), w.grant(f"@{w.values['group']}")}
    r = run_once(w, line)
    assert r.rc == 0, r.err
    m = re.match(r"revoked (\d+) grants \(([0-9a-f, ]+)\); \d+ sessions? ended", r.out)
    assert m and made <= set(m.group(2).split(", ")), r.out
    assert w.active_grants() == {}


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


def check_trace_request(w: World, line: str) -> None:
    """Run as the requester: waits, then starts once root approves, with payload."""
    rid = w.values["request"]
    user = pwd.getpwuid(w.user_uid).pw_name
    p = subprocess.Popen(["runuser", "-u", user, "--", *_argv(w, line)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    out: list[str] = []
    assert p.stdout is not None
    stdout = p.stdout
    reader = threading.Thread(target=lambda: out.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        time.sleep(1)
        assert p.poll() is None, "it waits for the approval: " + (p.stderr.read()
                                                                  if p.stderr else "")
        assert w.daemon.request("request.approve", {"id": rid})["ok"]
        wait_for(lambda: len([r for r in event_rows("".join(out)) if '"' in r.line]) >= 3
                 or p.poll() is not None, 90, what=f"payload rows of {line!r}")
    finally:
        if p.poll() is None:  # Ctrl-C reaches the whole foreground group, runuser's child too
            os.killpg(p.pid, signal.SIGINT)
        p.wait(30)
    reader.join(10)
    assert p.stderr is not None
    err = p.stderr.read()
    rows = event_rows("".join(out))
    assert rows and all(r.pid == pid_of(w) for r in rows), rows[:5]
    assert "waiting for request" in err and "level=payload" in err, err
    assert w.request_state(rid)["used"] == 1


def check_audit_show_kinds(w: World, line: str) -> None:
    r = run_once(w, line)
    assert r.rc == 0, r.err
    what = [x[4] for x in table_rows(r.out)]
    assert what and all(x.split(".")[0] in ("request", "grant") or x == "break_glass"
                        for x in what), what
    assert "request.approve" in what and "grant.add" in what


def _one(w: World, r: Run) -> dict[str, Any]:
    assert r.rc == 0, r.err
    m = re.match(r"request ([0-9a-f]{8}): ", r.out)
    assert m, r.out
    return w.request_state(m.group(1))


def check_request_create(w: World, line: str) -> None:
    got = _one(w, run_once(w, line))
    assert (got["requester"], got["target"], got["level"], got["duration"], got["state"]) == (
        "root", f"unit:{w.values['unit']}", "payload", 3600, "pending")


def check_request_list(w: World, line: str) -> None:
    rid = w.file_request()
    r = run_once(w, line)
    assert r.rc == 0, r.err
    rows = table_rows(r.out)
    assert rid in {x[0] for x in rows} and all(x[5] == "pending" for x in rows), r.out


def check_request_show(w: World, line: str) -> None:
    r = run_once(w, line)
    got = _one(w, r)
    assert got["id"] == w.values["request"] and "state:   pending (0/1)" in r.out, r.out


def check_request_approve(w: World, line: str) -> None:
    got = _one(w, run_once(w, line))
    assert got["state"] == "approved" and got["reviews"][0]["comment"] == "scope is right"
    g = w.active_grants()[got["grant"]]
    assert (g["principal"], g["target"], g["level"]) == (got["requester"], got["target"],
                                                         "payload")


def check_request_deny(w: World, line: str) -> None:
    got = _one(w, run_once(w, line))
    assert got["state"] == "denied" and got["reviews"][0]["comment"] == "meta is enough"


def check_request_cancel(w: World, line: str) -> None:
    got = _one(w, run_once(w, line))
    assert got["state"] == "cancelled"


def check_break_glass(w: World, line: str) -> None:
    got = _one(w, run_once(w, line))
    assert got["state"] == "approved" and got["break_glass"] and got["duration"] == 600
    g = w.active_grants()[got["grant"]]
    assert g["level"] == "payload" and g["expires"] - g["created"] == 600
    w.grants_made.append(g["id"])


def check_login(w: World, line: str) -> None:
    cache = Path(tempfile.mkdtemp(prefix="periscope-login-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(cache)}
    try:
        r = subprocess.run(_argv(w, line), capture_output=True, text=True, timeout=60, cwd=REPO,
                           env=env)
        assert r.returncode == 0, r.stderr
        assert f"open {w.issuer}/activate and enter the code" in r.stderr
        tok = cache / "periscope" / "id-token"
        assert (tok.stat().st_mode & 0o777) == 0o600 and "logged in as root" in r.stderr
        # Later commands present it: the daemon verified it for this connection.
        r = subprocess.run(_argv(w, "periscope whoami --json"), capture_output=True, text=True,
                           timeout=60, cwd=REPO, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["idp_login"]["sub"] == "00u-root", r.stdout
    finally:
        subprocess.run(["rm", "-rf", str(cache)], check=False)


CHECKS: dict[str, Callable[[World, str], None]] = {
    "periscope trace -p {pid}": check_trace_pid,
    "periscope trace -n {comm} -d 30s": check_trace_comm,
    "periscope trace -u {unit} --json": check_trace_unit_json,
    "periscope trace -c {cgroup} -d 1m": check_trace_cgroup,
    "periscope trace -p {pid} --level payload --reason {reason} -d 5m": check_trace_payload,
    "periscope trace -p {pid} --export -d 10m": check_trace_export,
    "periscope events -p {pid} --limit 50": check_events_pid,
    "periscope events -n {comm} --since 15m --json": check_events_comm_json,
    "periscope events -p {pid} --syscall openat --errno ENOENT": check_events_syscall_errno,
    "periscope events --kind exec --since {time} --until 1m": check_events_exec_until,
    "periscope errors --since 1h": check_errors,
    "periscope errors -u {unit} --since {time}": check_errors_unit,
    "periscope errors -p {pid} --errno ECONNREFUSED": check_errors_errno,
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
    "periscope top -c {cgroup} --limit 5": check_top_cgroup,
    "periscope top -n {comm} --syscall read --since 1h": check_top_comm_syscall,
    "periscope snapshot {pid}": check_snapshot,
    "periscope snapshot {pid} -o {file}": check_snapshot_file,
    "periscope profile -p {pid} -d 5s": check_profile_pid,
    "periscope profile -u {unit} -d 5s --svg {svg}": check_profile_unit_svg,
    "periscope profile -n {comm} -d 3s -F 49 --folded": check_profile_folded,
    "periscope status": check_status,
    "periscope status --json": check_status_json,
    "periscope whoami": check_whoami,
    "periscope grant add {user} --target unit:{unit} --level payload --for 2h"
    " --reason {reason}": check_grant_add_user,
    "periscope grant add @{group} --target comm:{comm} --for 30m --reason {reason}":
        check_grant_add_group,
    "periscope grant list": check_grant_list,
    "periscope grant revoke {grant}": check_grant_revoke,
    "periscope grant revoke --all": check_grant_revoke_all,
    "periscope audit show --limit 20": check_audit_show,
    "periscope audit verify": check_audit_verify,
    "periscope trace --request {request} --wait": check_trace_request,
    "periscope audit show --since 7d --kind request,grant,break_glass": check_audit_show_kinds,
    "periscope request create -u {unit} --level payload --for 1h --reason {reason}":
        check_request_create,
    "periscope request list --state pending": check_request_list,
    "periscope request show {request}": check_request_show,
    "periscope request approve {request} --comment 'scope is right'": check_request_approve,
    "periscope request deny {request} --reason 'meta is enough'": check_request_deny,
    "periscope request cancel {request}": check_request_cancel,
    "periscope request break-glass -u {unit} --for 10m --reason {reason}": check_break_glass,
    "periscope login": check_login,
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
    if "{request}" in ex.line:  # only a requester cancels; others review the user's
        values["request"] = world.file_request(as_root="cancel" in ex.line)
    line, _says = examples.render(ex, values)
    world.values = values
    CHECKS[ex.line](world, line)
