"""VM-tier fixtures: Unix users, the e2e policy and a target workload, against the INSTALLED unit.

These tests only run inside the VM-tier guest (tests/vm/guest-job.sh sets
PERISCOPE_IN_VM=1), where `make install` has put periscoped under systemd.
Anywhere else they are skipped, so `pytest tests` stays safe on a laptop.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vmlib import IN_VM, UNIT, run, wait_active

POLICY = Path("/etc/periscope/policy.toml")

# alice: investigator (payload, reason required); victor: viewer (meta only);
# mallory: may reach the socket but holds no role; eve: not even in group periscope.
USERS = {"alice": True, "victor": True, "mallory": True, "eve": False}

E2E_POLICY = """\
# Written by tests/vm/conftest.py inside the VM-tier guest.
[roles.admin]
ops = ["*"]
max_level = "payload"
targets = ["*"]
max_duration = "8h"

[roles.investigator]
ops = ["trace", "events", "http", "conns", "top", "errors", "snapshot"]
max_level = "payload"
targets = ["*"]
max_duration = "1h"
require_reason = true

[roles.viewer]
ops = ["trace", "events", "http", "conns", "top", "errors", "snapshot"]
max_level = "meta"
targets = ["*"]
max_duration = "10m"

[users]
root = ["admin"]
alice = ["investigator"]
victor = ["viewer"]
"""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_VM:
        return
    skip = pytest.mark.skip(reason="VM tier: runs only inside the guest (PERISCOPE_IN_VM=1)")
    for item in items:
        if "vm" in item.keywords:
            item.add_marker(skip)


def journal_count(text: str) -> int:
    out = run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    return sum(text in line for line in out.splitlines())


@pytest.fixture(scope="session")
def users() -> dict[str, bool]:
    for name, in_group in USERS.items():
        if run("id", name).returncode != 0:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
        if in_group:
            subprocess.run(["usermod", "-aG", "periscope", name], check=True)
    return USERS


@pytest.fixture(scope="session")
def daemon(users: dict[str, bool]) -> Iterator[None]:
    """The installed unit, running with the e2e policy (an SRE edits policy.toml and reloads)."""
    backup = POLICY.with_suffix(".toml.e2e-backup")
    had = POLICY.exists()
    if had:
        shutil.copy2(POLICY, backup)
    POLICY.write_text(E2E_POLICY)
    wait_active()
    # `systemctl reload` = SIGHUP = re-read policy.toml; the daemon logs the outcome.
    before = journal_count("SIGHUP: policy")
    subprocess.run(["systemctl", "reload", UNIT], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while journal_count("SIGHUP: policy") <= before:
        assert time.monotonic() < deadline, "the daemon did not log the policy reload"
        time.sleep(0.5)
    assert journal_count("SIGHUP: policy rejected") == 0, "the e2e policy was rejected"
    yield
    if had:
        shutil.move(backup, POLICY)
    else:
        POLICY.unlink()


TARGET = r"""
import socket, threading, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
def serve():
    while True:
        c, _ = srv.accept()
        while c.recv(65536): c.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
threading.Thread(target=serve, daemon=True).start()
body = b"card=4111111111111111&password=hunter2&note=hello"
head = (b"POST /pay HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer s3cr3t-b3arer-t0ken-XYZ\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n")
req = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
cli = socket.create_connection(srv.getsockname())
while True:
    with open("/etc/hostname") as f: f.read()
    cli.sendall(req); cli.recv(65536)
    time.sleep(0.2)
"""


@pytest.fixture()
def target() -> Iterator[subprocess.Popen[bytes]]:
    """A workload owned by another user (nobody): HTTP over loopback carrying secrets."""
    proc = subprocess.Popen(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "/usr/bin/python3", "-c", TARGET],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    assert proc.poll() is None, "target workload died"
    proc.target_pid = proc.pid  # type: ignore[attr-defined]  # setpriv execs: same pid
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
