"""docs/runbook.md, run: every command it shows, in its order, by the person it names,
against a real daemon (the embedded default policy plus a reviewer and an on-call role), a
real unit-like cgroup with an HTTP workload, and a test identity provider for `login`."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tests.root.conftest import (
    REPO,
    TEST_GROUP,
    Daemon,
    User,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.root.test_access import audit_records
from tests.root.test_cli_examples import _make_cgroup, _spawn
from tests.unit.access.fakeidp import AUDIENCE, FakeIdp, device_flow_server
from tests.unit.test_runbook import runbook_commands

EXTRA_ROLES = """
[roles.reviewer]
ops = ["trace", "request.approve", "request.deny"]
max_level = "payload"
targets = ["*"]
max_duration = "1h"

[roles.oncall]
ops = ["trace"]
max_level = "meta"
targets = ["*"]
max_duration = "1h"
break_glass = true
"""


def run(d: Daemon, user: User | None, line: str, env: dict[str, str]) -> tuple[int, str, str]:
    """One runbook line as `user` (None: root). A trace runs until it shows events, then
    gets Ctrl-C, as a person would stop it."""
    argv = [sys.executable, "-m", "collector.cli", "--socket", d.socket,
            *shlex.split(line)[1:]]
    if user is not None:
        argv = ["runuser", "-u", user.name, "--", *argv]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=REPO, env=env, start_new_session=True)
    if not line.startswith("periscope trace"):
        out, err = p.communicate(timeout=120)
        return p.returncode, out, err
    lines: list[str] = []
    assert p.stdout is not None
    stdout = p.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(lines) >= 5 or p.poll() is not None, 120, what=line)
    finally:
        if p.poll() is None:  # Ctrl-C reaches the whole foreground group, runuser's child too
            os.killpg(p.pid, signal.SIGINT)
        p.wait(30)
    reader.join(10)
    assert p.stderr is not None
    return p.returncode, "".join(lines), p.stderr.read()


@pytest.fixture
def world(make_user: Any) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        users = {"requester": make_user("rbreq", groups=(TEST_GROUP,)),
                 "reviewer": make_user("rbrev", groups=(TEST_GROUP,)),
                 "on-call": make_user("rboncall", groups=(TEST_GROUP,))}
        unit = f"psrb-{os.getpid()}.service"
        cg = _make_cgroup(unit, stack)
        if cg is None:
            pytest.skip("no cgroup v2 hierarchy to put the runbook's unit in")
        main, _port = _spawn("psrunbook", 0, 0.1, stack)
        (cg[0] / "cgroup.procs").write_text(str(main.pid))
        base = Path(tempfile.mkdtemp(prefix="periscope-runbook-"))
        stack.callback(subprocess.run, ["rm", "-rf", str(base)], check=False)
        # The embedded default policy, as shipped; its group is the test's socket group.
        policy = resources.files("collector").joinpath("defaults/policy.toml").read_text()
        policy = policy.replace('root = ["admin"]', 'root = ["admin"]\n'
                                f'{users["reviewer"].name} = ["reviewer"]\n'
                                f'{users["on-call"].name} = ["oncall"]')
        policy = policy.replace('periscope = ["investigator"]',
                                f'{TEST_GROUP} = ["investigator"]') + EXTRA_ROLES
        idp = FakeIdp()
        issuer, _ = stack.enter_context(device_flow_server(idp, users["requester"].name))
        idp.write_jwks(base / "jwks.json")
        base.chmod(0o755)
        d = start_daemon(base, f'[idp]\nissuer = "{issuer}"\naudience = "{AUDIENCE}"\n'
                         f'jwks = "{base / "jwks.json"}"\n', policy_text=policy)
        stack.callback(stop_daemon, d)
        cache = base / "cache"
        cache.mkdir()
        os.chown(cache, users["requester"].uid, users["requester"].gid)
        yield {"daemon": d, "users": users, "unit": unit, "cache": str(cache)}


def test_every_runbook_command_runs_as_written(world: dict[str, Any]) -> None:
    d: Daemon = world["daemon"]
    users: dict[str, User] = world["users"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": world["cache"]}
    request_id = ""
    ran = []
    for actor, line in runbook_commands():
        line = line.replace("checkout.service", world["unit"])
        if "REQUEST_ID" in line:
            rid = request_id
            if " deny " in line:  # the runbook's "no" is for another request
                s = d.connect(users["requester"].uid, grp.getgrnam(TEST_GROUP).gr_gid)
                r = d.request("request.create", {"target": f"unit:{world['unit']}",
                                                 "reason": "INC-1235"}, sock=s)
                s.close()
                rid = r["result"]["id"]
            line = line.replace("REQUEST_ID", rid)
        if "GRANT_ID" in line:
            grants = d.request("grant.list")["result"]
            line = line.replace("GRANT_ID", grants[0]["id"])
        who = None if actor == "admin" else users[actor]
        rc, out, err = run(d, who, line, env)
        assert rc == 0, (actor, line, out[-2000:], err[-2000:])
        assert "Traceback" not in err
        if line.startswith("periscope request create"):
            request_id = out.split()[1].rstrip(":")
        if line.startswith("periscope trace"):
            assert out.strip(), (line, err)
        ran.append((actor, line.split(" --")[0]))
        print(f"{actor:>9}: {line}")
    # `periscope login` kept the token: the requester's next command presents it.
    rc, out, err = run(d, users["requester"], "periscope whoami --json", env)
    assert rc == 0 and json.loads(out)["idp_login"]["sub"] == \
        f"00u-{users['requester'].name}", (out, err)
    recs = audit_records(d)
    ops = [r["op"] for r in recs]
    for step in ("request.created", "request.approved", "request.denied", "request.used",
                 "request.cancelled", "request.break_glass", "grant.revoke", "auth"):
        assert step in ops, step
    assert next(r for r in recs if r["op"] == "request.approved")["user"] == \
        users["reviewer"].name
    assert d.request("grant.list")["result"] == []  # the emergency stop left none
    assert json.loads(d.cli("audit", "verify", "--json").stdout)["ok"]
    assert len(ran) == len(runbook_commands())
