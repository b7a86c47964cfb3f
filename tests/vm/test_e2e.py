"""End-to-end smoke tests against the installed periscoped.service, as several Unix users.

Inside the VM-tier guest only (see conftest.py). The daemon is the one
`make install` put under systemd; the client is the installed `periscope`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from vmlib import SOCKET, client, run

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("daemon")]

SECRETS = ("4111111111111111", "hunter2", "s3cr3t-b3arer-t0ken-XYZ")
AUDIT_LOG = Path("/var/lib/periscope/audit.log")


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def trace(user: str, pid: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return client("trace", "-p", str(pid), "-d", "5s", "--json", *extra, user=user, timeout=180)


def test_client_is_on_path() -> None:
    # A member of group periscope types `periscope`, not the venv's path.
    res = run("sh", "-c", "command -v periscope", user="alice")
    assert res.stdout.strip() == "/usr/local/bin/periscope", res.stdout + res.stderr
    assert os.readlink("/usr/local/bin/periscope") == "/opt/periscope/venv/bin/periscope"
    res = client("whoami", user="alice")
    assert res.returncode == 0 and res.stdout.startswith("alice (uid "), res.stdout + res.stderr


def test_status_as_root() -> None:
    res = client("status")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()


def test_socket_is_root_periscope_0660() -> None:
    import grp
    import os
    import stat

    st = os.stat(SOCKET)
    assert stat.S_ISSOCK(st.st_mode)
    assert st.st_uid == 0
    assert grp.getgrgid(st.st_gid).gr_name == "periscope"
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_viewer_traces_meta(target: subprocess.Popen[bytes]) -> None:
    pid = target.target_pid  # type: ignore[attr-defined]
    res = trace("victor", pid)
    assert res.returncode == 0, res.stderr
    events = [e for e in json_lines(res.stdout) if e.get("pid") == pid]
    assert events, f"no events for pid {pid}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    for secret in SECRETS:
        assert secret not in res.stdout


def test_viewer_payload_request_is_narrowed_to_meta(target: subprocess.Popen[bytes]) -> None:
    # A session is the intersection of the request with the caller's rights: narrowed, not denied.
    pid = target.target_pid  # type: ignore[attr-defined]
    res = trace("victor", pid, "--level", "payload")
    assert res.returncode == 0, res.stderr
    assert "narrowed" in res.stderr, res.stderr
    events = [e for e in json_lines(res.stdout) if e.get("pid") == pid]
    assert events
    assert not [e for e in events if "payload" in e], "a meta-only viewer received payload"


def test_investigator_needs_reason(target: subprocess.Popen[bytes]) -> None:
    res = trace("alice", target.target_pid, "--level", "payload")  # type: ignore[attr-defined]
    assert res.returncode != 0
    assert "reason" in (res.stdout + res.stderr).lower()


def test_investigator_payload_is_redacted(target: subprocess.Popen[bytes]) -> None:
    pid = target.target_pid  # type: ignore[attr-defined]
    res = trace("alice", pid, "--level", "payload", "--reason", "VM-E2E-1")
    assert res.returncode == 0, res.stderr
    events = [e for e in json_lines(res.stdout) if e.get("pid") == pid]
    assert events, f"no events for pid {pid}:\n{res.stderr[-2000:]}"
    assert [e for e in events if e.get("payload")], "payload level delivered no payload"
    for secret in SECRETS:
        assert secret not in res.stdout, f"unredacted {secret!r} reached the client"
        assert secret not in res.stderr


def test_user_without_role_is_denied(target: subprocess.Popen[bytes]) -> None:
    res = trace("mallory", target.target_pid)  # type: ignore[attr-defined]
    assert res.returncode != 0
    assert not [e for e in json_lines(res.stdout) if "pid" in e]


def test_user_outside_group_cannot_connect(target: subprocess.Popen[bytes]) -> None:
    res = trace("eve", target.target_pid)  # type: ignore[attr-defined]
    assert res.returncode != 0
    assert not [e for e in json_lines(res.stdout) if "pid" in e]


def test_audit_records_and_verifies() -> None:
    # Runs last in this file: the requests above (allowed and denied) are in the log.
    text = AUDIT_LOG.read_text()
    for who in ("alice", "victor", "mallory"):
        assert who in text, f"{who} missing from the audit log"
    assert "VM-E2E-1" in text
    for secret in SECRETS:
        assert secret not in text
    res = client("audit", "verify")
    assert res.returncode == 0, res.stdout + res.stderr
