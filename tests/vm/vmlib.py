"""Helpers for the VM-tier e2e tests: run commands as Unix users, call the installed client."""

from __future__ import annotations

import os
import subprocess
import time

IN_VM = os.environ.get("PERISCOPE_IN_VM") == "1"
# The plain command, as an engineer types it: found on PATH through the link `make install`
# puts in /usr/local/bin (test_client_is_on_path checks where it resolves).
CLIENT = "periscope"
SOCKET = "/run/periscope/periscope.sock"
UNIT = "periscoped.service"

Result = subprocess.CompletedProcess[str]


def run(*argv: str, user: str | None = None, timeout: float = 120) -> Result:
    """Run a command, as `user` when given (runuser: a real login-less identity switch)."""
    cmd = list(argv) if user is None else ["runuser", "-u", user, "--", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def client(*args: str, user: str | None = None, timeout: float = 120) -> Result:
    return run(CLIENT, *args, user=user, timeout=timeout)


def wait_active(timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run("systemctl", "is-active", UNIT).stdout.strip()
        if state == "active" and os.path.exists(SOCKET):
            return
        if state == "failed":
            break
        time.sleep(1)
    journal = run("journalctl", "-u", UNIT, "--no-pager", "-n", "40").stdout
    raise AssertionError(f"{UNIT} is not active:\n{journal}")
