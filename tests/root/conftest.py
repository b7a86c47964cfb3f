"""Root tier fixtures: a real periscoped in a temp dir, real Unix users, real workloads."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
TEST_GROUP = "periscope-test"
# Compiled probes shared by this run's daemons (each has its own state dir): one bcc compile
# per distinct build instead of one per daemon. Each daemon still checks every file (key,
# checksum, owner, mode) and the kernel's verifier still checks every program it loads.
_SHARED_CACHE = Path(tempfile.mkdtemp(prefix="periscope-test-probe-cache-"))
_UNSHARED: set[Path] = set()  # state dirs whose cache a test tampers with

# A shell's background job (`pytest ... &`) starts with SIGINT ignored, and every process it
# starts inherits that: the trace clients these tests stop with SIGINT (Ctrl-C) would then
# run to their deadline. A handler, unlike SIG_IGN, is reset to the default at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _seed_cache(state: Path) -> None:
    cache = state / "probe-cache"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    cache.mkdir(mode=0o700, exist_ok=True)
    for f in _SHARED_CACHE.glob("*.bpfobj"):
        if not (cache / f.name).exists():
            shutil.copy2(f, cache / f.name)


def _share_cache(state: Path) -> None:
    for f in (state / "probe-cache").glob("*.bpfobj"):
        if not (_SHARED_CACHE / f.name).exists():
            tmp = _SHARED_CACHE / f".{f.name}.tmp"
            shutil.copy2(f, tmp)
            tmp.rename(_SHARED_CACHE / f.name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SHARED_CACHE, ignore_errors=True)


def _bcc_ok() -> str | None:
    if os.geteuid() != 0:
        return "root tier needs root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc (python3-bpfcc) is not importable"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = _bcc_ok()
    for item in items:
        if "tests/root" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if why:
                item.add_marker(pytest.mark.skip(reason=why))


def wait_for(pred: Any, timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")


def ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)
        return grp.getgrnam(name).gr_gid


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    socket: str
    state: Path
    log: Path
    policy: Path
    env: dict[str, str] = field(default_factory=dict)

    def connect(self, uid: int | None = None, gid: int | None = None) -> socket.socket:
        """A raw connection, opened as uid/gid (in a forked child) or as root."""
        if uid is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            s.connect(self.socket)
            return s
        a, b = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # child: drop to the user, connect, hand the fd back
            try:
                a.close()
                os.setgroups([])
                os.setgid(gid if gid is not None else uid)
                os.setuid(uid)
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(self.socket)
                socket.send_fds(b, [b"x"], [c.fileno()])
            finally:
                os._exit(0)
        b.close()
        _, fds, _, _ = socket.recv_fds(a, 1, 1)
        os.waitpid(pid, 0)
        a.close()
        s = socket.socket(fileno=fds[0])
        s.settimeout(20)
        return s

    def request(self, op: str, args: dict[str, Any] | None = None,
                sock: socket.socket | None = None) -> dict[str, Any]:
        own = sock is None
        s = sock or self.connect()
        try:
            s.sendall(orjson.dumps({"op": op, "args": args or {}}) + b"\n")
            return dict(orjson.loads(_readline(s)))
        finally:
            if own:
                s.close()

    def cli(self, *args: str, user: str | None = None, timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "collector.cli", "--socket", self.socket, *args]
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _readline(s: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def start_daemon(base: Path, config_text: str = "", policy_text: str | None = None,
                 extra_env: dict[str, str] | None = None, share_cache: bool = True) -> Daemon:
    """periscoped in base/; share_cache=False for a test of the probe cache itself (its
    daemons start cold and what they leave is never handed to other daemons)."""
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # other users must reach the socket
    state = base / "state"
    if share_cache:
        _seed_cache(state)
    else:
        _UNSHARED.add(state)
    cfg = base / "periscope.toml"
    no_metrics = "" if "[metrics]" in config_text else '[metrics]\nlisten = ""\n'
    cfg.write_text(no_metrics + config_text)
    policy = base / "policy.toml"
    if policy_text is not None:
        policy.write_text(policy_text)
    sock = str(base / "run" / "periscope.sock")
    log = base / "daemon.log"
    ensure_group(TEST_GROUP)
    env = {**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.daemon", "--config", str(cfg), "--state-dir",
         str(state), "--socket", sock, "--policy", str(policy), "--socket-group", TEST_GROUP],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO)
    d = Daemon(proc, sock, state, log, policy)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"periscoped exited {proc.returncode}:\n{d.log_text()}")
        try:
            return bool(d.request("hello").get("ok"))
        except OSError:
            return False

    wait_for(up, 20, what="periscoped to serve")
    return d


def stop_daemon(d: Daemon) -> int:
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(20)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
            raise AssertionError("periscoped did not stop on SIGTERM within 20s") from None
    if d.state not in _UNSHARED:
        _share_cache(d.state)
    return d.proc.returncode


@pytest.fixture
def daemon_factory() -> Iterator[Any]:
    made: list[tuple[Daemon, Path]] = []

    def make(config_text: str = "", policy_text: str | None = None,
             extra_env: dict[str, str] | None = None) -> Daemon:
        base = Path(tempfile.mkdtemp(prefix="periscope-test-"))
        d = start_daemon(base, config_text, policy_text, extra_env)
        made.append((d, base))
        return d

    yield make
    for d, base in made:
        rc = stop_daemon(d)
        assert rc == 0, f"periscoped exited {rc} on SIGTERM:\n{d.log_text()[-3000:]}"
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture
def daemon(daemon_factory: Any) -> Daemon:
    return daemon_factory()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@pytest.fixture
def make_user() -> Iterator[Any]:
    """Create real Unix users (removed afterwards): make_user("alice", groups=[...])."""
    made: list[str] = []

    def make(name: str, groups: tuple[str, ...] = ()) -> User:
        name = f"ps{name}"[:31]
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            subprocess.run(["userdel", name], check=False)
        for g in groups:
            ensure_group(g)
        cmd = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]
        if groups:
            cmd += ["--groups", ",".join(groups)]
        subprocess.run([*cmd, name], check=True)
        made.append(name)
        pw = pwd.getpwnam(name)
        return User(name, pw.pw_uid, pw.pw_gid)

    yield make
    for name in made:
        subprocess.run(["userdel", name], check=False, capture_output=True)


class Workload:
    """A Python child that waits for "go" on stdin, then runs `code`; prints its pid first."""

    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.readline()\n"
                                      + code, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.proc.pid

    def go(self, timeout: float = 30) -> tuple[int, str, str]:
        out, err = self.proc.communicate(b"go\n", timeout=timeout)
        return self.proc.returncode, out.decode(), err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workload() -> Iterator[Any]:
    made: list[Workload] = []

    def make(code: str, *args: str) -> Workload:
        w = Workload(code, *args)
        made.append(w)
        return w

    yield make
    for w in made:
        w.kill()


class TraceStream:
    """`periscope trace` as a subprocess, its JSON events collected."""

    def __init__(self, d: Daemon, *args: str, user: str | None = None,
                 out: Path | None = None) -> None:
        """out: write the events to this file instead (a pipe nobody reads until finish()
        fills up after ~64 KiB and makes the client a slow reader); finish() reads it."""
        cmd = [sys.executable, "-m", "collector.cli", "--socket", d.socket, "trace", "--json",
               *args]
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        self.out = out
        stdout = out.open("wb") if out is not None else subprocess.PIPE
        # bufsize=0: wait_started() reads stderr line by line; a buffered reader would
        # swallow lines that finish() (communicate) then never sees.
        self.proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE,
                                     bufsize=0, cwd=REPO,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        if out is not None:
            stdout.close()  # the client has its own copy
        self.stderr_lines: list[str] = []

    def wait_started(self, timeout: float = 60) -> str:
        """Block until the session header arrives on stderr; returns it."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode()
            if not line:
                break
            self.stderr_lines.append(line)
            if "session " in line and "level=" in line:
                return line
        raise AssertionError("trace did not start: " + "".join(self.stderr_lines)
                             + (self.proc.stderr.read().decode() if self.proc.poll() is not None
                                else ""))

    def finish(self, timeout: float = 60) -> tuple[int, list[dict[str, Any]], str]:
        out, err = self.proc.communicate(timeout=timeout)
        if self.out is not None:
            out = self.out.read_bytes()
        events = [orjson.loads(line) for line in out.splitlines() if line.strip()]
        return self.proc.returncode, events, "".join(self.stderr_lines) + err.decode()
