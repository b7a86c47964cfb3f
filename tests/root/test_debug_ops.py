"""snapshot and profile through the real daemon and the real CLI, as real Unix users: a
viewer (meta role on two comms) gets the known facts and the known hot function; a user
without a role and a target outside the role are denied; every call is audited and the
chain verifies; no secret of the target's environment reaches any output or the daemon
log; a target killed mid-profile ends the profile with what was sampled."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.root.conftest import REPO, TEST_GROUP, Daemon, User, wait_for

PATH_SECRET = "pathtok3n5ecret"
SERVER = r"""
import ctypes, json, os, socket, sys, threading, time
ctypes.CDLL(None).prctl(15, b"pssnapsrv", 0, 0, 0)  # before any thread: they inherit it
d = sys.argv[1]
log = open(os.path.join(d, "app.log"), "w")
log.write("x" * 1234)
log.flush()
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(8)
def fail():
    while True:  # a known failed syscall, again and again: for the store section
        try:
            open("/nonexistent/psdbg/token=@SECRET@")
        except OSError:
            pass
        time.sleep(0.05)
threading.Thread(target=fail, daemon=True).start()
stop = threading.Event()
for _ in range(3):
    threading.Thread(target=stop.wait, daemon=True).start()
print(json.dumps({"log": log.fileno(), "srv": srv.fileno(), "port": srv.getsockname()[1]}),
      flush=True)
sys.stdin.readline()
""".replace("@SECRET@", PATH_SECRET)
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkYmdvcHMifQ.ZGJnb3BzLXNpZ25hdHVyZQ"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
       "DB_PASSWORD": "hunter2-dbgops-secret",           # secret by its name
       "UPSTREAM_HEADER": f"Bearer {JWT}",                # a token in a plain-named variable
       "PAYMENT_NOTE": "card 4111 1111 1111 1111"}        # a card number (Luhn-valid)
SECRETS = ("hunter2-dbgops-secret", "eyJzdWIiOiJkYmdvcHMifQ", "ZGJnb3BzLXNpZ25hdHVyZQ",
           "4111 1111 1111 1111", "hunter2-argv", PATH_SECRET)

POLICY = """
[roles.admin]
ops = ["*"]
max_level = "payload"
targets = ["*"]

[roles.viewer]
ops = ["snapshot", "profile", "trace", "errors"]
max_level = "meta"
targets = ["comm:pssnapsrv", "comm:hotc"]
max_duration = "10m"

[users]
root = ["admin"]
{viewer} = ["viewer"]
"""


@dataclass
class World:
    d: Daemon
    viewer: User
    norole: User
    server: subprocess.Popen[bytes]
    facts: dict[str, Any]
    hot: subprocess.Popen[bytes]
    other: subprocess.Popen[bytes]   # a process no role of the viewer covers
    hotc: str                        # the hot C program's path
    out: Path                        # a directory the viewer owns

    def cli(self, *args: str, user: User | None = None, timeout: float = 240
            ) -> subprocess.CompletedProcess[str]:
        return self.d.cli(*args, user=user.name if user else None, timeout=timeout)


@pytest.fixture
def world(daemon_factory: Any, make_user: Any, tmp_path: Path) -> Iterator[World]:
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    viewer = make_user("dbgview", groups=(TEST_GROUP,))
    norole = make_user("dbgnorole", groups=(TEST_GROUP,))
    d = daemon_factory(policy_text=POLICY.format(viewer=viewer.name))
    tmp = Path(tempfile.mkdtemp(prefix="periscope-dbgops-"))
    tmp.chmod(0o755)
    hotc = tmp / "hotc"
    subprocess.run(["gcc", "-O1", "-fno-omit-frame-pointer", "-o", str(hotc),
                    str(REPO / "tests" / "data" / "profile" / "hot.c")], check=True)
    out = tmp / "out"
    out.mkdir()
    os.chown(out, viewer.uid, viewer.gid)
    work = tmp_path / "srv"
    work.mkdir()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    server = subprocess.Popen([sys.executable, str(script), str(work), "--password",
                               "hunter2-argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=ENV, cwd=work)
    hot = subprocess.Popen([str(hotc)])
    other = subprocess.Popen(["sleep", "600"])
    try:
        assert server.stdout is not None
        facts = json.loads(server.stdout.readline())
        yield World(d, viewer, norole, server, facts, hot, other, str(hotc), out)
    finally:
        for p in (server, hot, other):
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def no_secrets(*texts: str) -> None:
    leaked = [(s, t[max(0, t.find(s) - 80):t.find(s) + 40]) for t in texts for s in SECRETS
              if s in t]
    assert not leaked, leaked


def audit(w: World) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (w.d.state / "audit.log").read_text().splitlines()]


def top_rows(out: str) -> list[tuple[int, float, str]]:
    """(self samples, self %, frame) rows of the top frames table."""
    rows = []
    for line in out.splitlines()[1:]:
        m = re.match(r"\s*([\d,]+)\s+([\d.]+)%\s+[\d.]+%\s+(.+)$", line)
        if m:
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3)))
    return rows


def test_viewer_snapshots_and_profiles_what_its_role_covers(world: World) -> None:
    w, pid = world, world.server.pid
    # Root records the server's failed opens in the store (a trace at payload level): the
    # viewer's snapshot shows them, at its own level.
    t = w.cli("trace", "-p", str(pid), "--level", "payload", "-d", "3s", "--json")
    assert t.returncode == 0, t.stderr
    snap_file = w.out / "snap.json"
    r = w.cli("snapshot", str(pid), "-o", str(snap_file), user=w.viewer)
    assert r.returncode == 0, r.stderr
    j = w.cli("snapshot", str(pid), "--json", user=w.viewer)
    assert j.returncode == 0, j.stderr
    snap = json.loads(snap_file.read_text())
    st = snap_file.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, w.viewer.uid)
    assert json.loads(j.stdout)["pid"] == pid
    # the known facts
    assert snap["identity"]["comm"] == "pssnapsrv" and not snap["partial"], snap["failed"]
    assert snap["identity"]["cmdline"].endswith("--password [REDACTED:secret]")
    assert snap["threads"]["count"] == 5  # main, fail() and three waiting threads
    fds = {e["fd"]: e for e in snap["fds"]["list"]}
    assert (fds[w.facts["log"]]["path"].endswith("/srv/app.log"), fds[w.facts["log"]]["pos"]) \
        == (True, 1234)
    listening = [s for s in snap["sockets"] if s["state"] == "LISTEN"]
    assert [(s["fd"], s["laddr"]) for s in listening] == [
        (w.facts["srv"], ["127.0.0.1", w.facts["port"]])]
    env = {v["name"]: v["value"] for v in snap["environ"]["vars"]}
    assert env["DB_PASSWORD"] == "[REDACTED:secret]" and env["LANG"] == "C.UTF-8"
    errors = snap["store"]["recent_errors"]
    assert errors and all(e["pid"] == pid and e["errno"] == "ENOENT" for e in errors), errors
    assert {e["path"] for e in errors} == {"/nonexistent/psdbg/token=[REDACTED:secret]"}
    assert not [e for e in errors if "payload" in e or "captured" in e]  # meta level
    assert r.stdout.startswith(f"pid {pid} pssnapsrv: snapshot taken "), r.stdout
    assert "recent errors" in r.stdout and "DB_PASSWORD" in r.stdout

    svg = w.out / "hot.svg"
    p = w.cli("profile", "-p", str(w.hot.pid), "-d", "3s", "--svg", str(svg), user=w.viewer)
    assert p.returncode == 0, p.stderr
    rows = top_rows(p.stdout)
    assert rows[0][2] == "hot_function" and rows[0][1] > 50, p.stdout
    assert "profile ended (done): " in p.stderr
    assert (stat.S_IMODE(svg.stat().st_mode), svg.stat().st_uid) == (0o600, w.viewer.uid)
    assert ">hot_function (" in svg.read_text()
    # compiled once per build: the next profile loads it from the daemon's probe cache
    assert len(list((w.d.state / "probe-cache").glob("profile-*.bpfobj"))) == 1

    no_secrets(r.stdout, r.stderr, j.stdout, snap_file.read_text(), p.stdout, p.stderr,
               svg.read_text(), w.d.log_text())
    recs = audit(w)
    mine = [(r["op"], r["decision"]) for r in recs if r["uid"] == w.viewer.uid]
    assert mine == [("snapshot", "allow"), ("snapshot", "allow"), ("profile", "allow"),
                    ("profile.end", "allow")]
    end = [r for r in recs if r["op"] == "profile.end"][-1]
    assert end["reason"] == "done" and end["events"] == sum(n for n, _, _ in rows) > 0
    assert 2.9 <= end["args"]["sampled_s"] < 6 and end["bytes"] > 0


def test_no_role_and_uncovered_targets_are_denied_and_audited(world: World) -> None:
    w = world
    cases = [(w.norole, w.server.pid, "has no periscope role"),
             (w.norole, w.hot.pid, "has no periscope role"),
             (w.viewer, w.other.pid, "no permitted target")]
    for user, pid, why in cases:
        for args in (("snapshot", str(pid)), ("profile", "-p", str(pid), "-d", "2s")):
            r = w.cli(*args, user=user)
            assert r.returncode == 2 and "DENIED" in r.stderr and why in r.stderr, r.stderr
            assert "Traceback" not in r.stderr and r.stdout == ""
    denied = [(r["user"], r["op"]) for r in audit(w) if r.get("decision") == "deny"]
    assert denied == [(u.name, op) for u, _, _ in cases for op in ("snapshot", "profile")]
    assert not [r for r in audit(w) if r["op"] == "profile.end"]  # nothing ran
    v = w.cli("audit", "verify")
    assert v.returncode == 0 and "chain intact" in v.stdout, v.stdout + v.stderr


def test_a_target_killed_mid_profile_ends_it_with_what_was_sampled(world: World) -> None:
    w = world
    victim = subprocess.Popen([w.hotc])
    try:
        cmd = ["runuser", "-u", w.viewer.name, "--", sys.executable, "-m", "collector.cli",
               "--socket", w.d.socket, "profile", "-p", str(victim.pid), "-d", "2m"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             bufsize=1, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert p.stderr is not None
        seen: list[str] = []
        wait_for(lambda: seen.append(p.stderr.readline()) or "sampling for" in seen[-1]
                 or p.poll() is not None, 240, what="the profile to start sampling")
        time.sleep(3)
        victim.kill()
        victim.wait()
        killed = time.monotonic()
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        victim.kill()
        victim.wait()
    err = "".join(seen) + err
    assert p.returncode == 0, err
    assert "profile ended (target_exited): " in err and took < 15, (took, err)
    rows = top_rows(out)
    # Named although the process was gone when its samples were symbolized.
    assert rows[0][2] == "hot_function" and rows[0][1] > 50, out
    samples = int(re.search(r"ended \(target_exited\): ([\d,]+) samples", err)
                  .group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < samples < 99 * 20, err  # about 3 s (at most 99 a second), never 2 minutes
    end = [r for r in audit(w) if r["op"] == "profile.end"][-1]
    assert (end["reason"], end["events"], end["user"]) == ("target_exited", samples,
                                                           w.viewer.name)
    v = w.cli("audit", "verify")
    assert v.returncode == 0 and "chain intact" in v.stdout, v.stdout + v.stderr
