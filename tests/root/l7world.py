"""Shared pieces of the L7 root tests: a module daemon with one background payload session
whose live stream goes to a file, stored queries through the real client, and the secrets
that must appear nowhere."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.root.conftest import REPO, Daemon, start_daemon, stop_daemon, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stream:
    """`periscope trace --json` in the background, its events in a file."""

    proc: subprocess.Popen[bytes]
    path: Path
    err: Path

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):  # the line being written
                out.append(orjson.loads(line))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class L7World:
    daemon: Daemon
    base: Path
    secrets: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # every client output we saw

    def trace(self, *args: str) -> Stream:
        """A payload session on these targets, streaming to a file until stopped."""
        n = len(list(self.base.glob("stream-*.jsonl")))
        path, err = self.base / f"stream-{n}.jsonl", self.base / f"stream-{n}.err"
        cmd = [sys.executable, "-m", "collector.cli", "--socket", self.daemon.socket, "trace",
               "--json", "--level", "payload", "--reason", "l7 root test", "-d", "20m", *args]
        proc = subprocess.Popen(cmd, stdout=path.open("wb"), stderr=err.open("wb"), cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        s = Stream(proc, path, err)
        wait_for(lambda: "level=payload" in err.read_text() or proc.poll() is not None, 120,
                 what="the trace session to start")
        assert proc.poll() is None, err.read_text()
        return s

    def query(self, command: str, *args: str) -> list[dict[str, Any]]:
        """A stored query through the client (--json), its rows."""
        r = self.daemon.cli(command, "--json", *args)
        assert r.returncode == 0, r.stderr
        self.outputs.append(r.stdout + r.stderr)
        return [orjson.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def wait_rows(self, command: str, *args: str, n: int,
                  keep: Callable[[dict[str, Any]], bool] = lambda _r: True,
                  timeout: float = 20) -> list[dict[str, Any]]:
        """The rows a query returns once at least n pass `keep`, and a moment later again
        (a record that arrives twice must show)."""
        last: list[dict[str, Any]] = []

        def enough() -> bool:
            last[:] = self.query(command, *args)
            return len([r for r in last if keep(r)]) >= n

        try:
            wait_for(enough, timeout, what=f"{n} rows of {command} {' '.join(args)}")
        except AssertionError as err:
            st = self.daemon.request("status").get("result", {})
            raise AssertionError(f"{err}; the query returned: {last[-30:]}; kernel: "
                                 f"{st.get('kernel')}; pipeline: {st.get('pipeline')}") from None
        time.sleep(0.5)
        return [r for r in self.query(command, *args) if keep(r)]

    def assert_no_secrets(self, streams: list[Stream]) -> None:
        """No secret in the store's files, the daemon log, client output or live streams."""
        state = self.daemon.state
        blobs = {p.name: p.read_bytes() for p in state.iterdir() if p.name.startswith("events.db")}
        blobs["daemon log"] = self.daemon.log.read_bytes()
        blobs["client output"] = "\n".join(self.outputs).encode()
        for s in streams:
            blobs[s.path.name] = s.path.read_bytes()
        assert len(blobs) >= 4, sorted(blobs)
        for secret in self.secrets:
            for name, blob in blobs.items():
                assert secret.encode() not in blob, f"{secret!r} in {name}"


@contextlib.contextmanager
def l7_world(prefix: str) -> Iterator[L7World]:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    d = start_daemon(base)
    try:
        yield L7World(d, base)
    finally:
        rc = stop_daemon(d)
        log = d.log_text()[-3000:]
        subprocess.run(["rm", "-rf", str(base)], check=False)
        assert rc == 0, log


def children(pid: int) -> list[int]:
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]
