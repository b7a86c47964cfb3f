"""Shared bench plumbing: build the C workloads, run periscoped in a temp dir, open trace
sessions over the socket, run a workload under a condition, and summarise repeats."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
# The tree whose daemon and probes are measured (default: this checkout).
REPO = Path(os.environ.get("PERISCOPE_BENCH_REPO", BENCH.parent))
RESULTS = BENCH / "results"
BIN = RESULTS / "bin"
PY = sys.executable


def build() -> dict[str, Path]:
    """Compile bench/workload/*.c with gcc -O2 into bench/results/bin."""
    BIN.mkdir(parents=True, exist_ok=True)
    out = {}
    for src in sorted((BENCH / "workload").glob("*.c")):
        exe = BIN / src.stem
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(src), "-lpthread"],
                           check=True)
        out[src.stem] = exe
    return out


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread_f(xs: Sequence[float], digits: int = 2) -> str:
    """spread() with decimals, for small values (µs per event)."""
    if not xs:
        return "n/a"
    return f"{med(xs):.{digits}f} [{min(xs):.{digits}f}..{max(xs):.{digits}f}] n={len(xs)}"


def spread(xs: Sequence[float]) -> str:
    """median [min..max] (n), for reporting noisy repeats honestly."""
    if not xs:
        return "n/a"
    return f"{med(xs):,.0f} [{min(xs):,.0f}..{max(xs):,.0f}] n={len(xs)}"


class Daemon:
    """periscoped in a temp dir (metrics off), like tests/root/conftest.start_daemon."""

    def __init__(self, config_text: str = "", policy_text: str | None = None,
                 repo: Path = REPO, probe_cache: Path | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="periscope-bench-"))
        if probe_cache is not None:  # a warm start: the compiled probes of an earlier run
            (self.base / "state").mkdir(mode=0o700)
            shutil.copytree(probe_cache, self.base / "state" / "probe-cache")
        self.sock = str(self.base / "run" / "periscope.sock")
        cfg = self.base / "periscope.toml"
        no_metrics = "" if "[metrics]" in config_text else '[metrics]\nlisten = ""\n'
        cfg.write_text(no_metrics + config_text)
        if policy_text is not None:
            (self.base / "policy.toml").write_text(policy_text)
        self.log = self.base / "daemon.log"
        env = {**os.environ, "PYTHONPATH": str(repo)}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [PY, "-m", "collector.daemon", "--config", str(cfg), "--state-dir",
             str(self.base / "state"), "--socket", self.sock, "--policy",
             str(self.base / "policy.toml"), "--socket-group", "root"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=repo)
        self.ready_s = self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"periscoped exited:\n{self.log.read_text()[-2000:]}")
            try:
                if self.request("hello").get("ok"):
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError("periscoped did not become ready")

    def request(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(self.sock)
            s.sendall(orjson.dumps({"op": op, "args": args or {}}) + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        return dict(orjson.loads(buf))

    def status(self) -> dict[str, Any]:
        return dict(self.request("status").get("result", {}))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


class Session:
    """A live `trace` session; a thread counts streamed events as they arrive: one per
    {"event"} line, N per {"n": N, "events"} batch (a daemon from before batches ignores
    the request for them and sends lines)."""

    def __init__(self, d: Daemon, targets: list[str], level: str = "meta",
                 export: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(d.sock)
        args: dict[str, Any] = {"targets": targets, "level": level, "duration": 3600,
                                "reason": "bench", "frames": "batch"}
        if export:
            args["export"] = True
        self.sock.sendall(orjson.dumps({"op": "trace", "args": args}) + b"\n")
        f = self.sock.makefile("rb")
        head = orjson.loads(f.readline())
        if not head.get("ok"):
            raise RuntimeError(f"trace refused: {head}")
        self.head: dict[str, Any] = head["result"]
        self.lines = 0  # events received
        self.first_s: float | None = None  # monotonic time the first event arrived
        self.ended: bytes | None = None
        self._f = f
        self._t = threading.Thread(target=self._count, daemon=True)
        self._t.start()

    def _count(self) -> None:
        fd = self._f
        tail = b""
        rest = b""  # an incomplete line
        while True:
            chunk = fd.read1(1 << 20)
            if not chunk:
                return
            if self.first_s is None:
                self.first_s = time.monotonic()
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                self.lines += int(line[5:line.index(b",", 5)]) if line.startswith(b'{"n":') \
                    else 1
            if b'"end"' in chunk:
                self.ended = (tail + chunk)[-400:]
            tail = chunk[-200:]

    def close(self) -> None:
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._t.join(5)


@contextmanager
def session(d: Daemon, targets: list[str], level: str = "meta",
            export: bool = False) -> Iterator[Session]:
    s = Session(d, targets, level, export)
    try:
        yield s
    finally:
        s.close()


@contextmanager
def sleeper() -> Iterator[int]:
    """Another process to trace (so probes are attached but this workload is untargeted)."""
    p = subprocess.Popen(["sleep", "3600"])
    try:
        yield p.pid
    finally:
        p.kill()
        p.wait()


@contextmanager
def floor(kind: str) -> Iterator[None]:
    p = subprocess.Popen([PY, "-m", "bench.floorload", kind], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout is not None and p.stdin is not None
    line = p.stdout.readline()
    if not line.startswith(b"ready"):
        p.kill()
        raise RuntimeError(f"floor {kind} did not load")
    try:
        yield
    finally:
        p.stdin.close()
        p.wait(20)


@contextmanager
def bpftrace(probes: list[str]) -> Iterator[None]:
    """bpftrace counting per probe on the given tracepoints (comparable scope)."""
    prog = ",\n".join(probes) + " { @[probe] = count(); }"
    p = subprocess.Popen(["bpftrace", "-e", prog], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    assert p.stdout is not None
    while True:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError("bpftrace exited before attaching")
        if b"Attaching" in line:
            break
    time.sleep(0.3)  # "Attaching N probes..." precedes the attach itself
    try:
        yield
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # seen once in a full run: the bench goes on
            p.kill()
            p.communicate()


LAST_CPU_S = [0.0]  # user+system CPU seconds of the last workload run()


def run(cmd: list[str], before_go: Callable[[int], Any] | None = None,
        wrapper: Sequence[str] = ()) -> list[int]:
    """Start a workload, let before_go(pid) set up (e.g. open a session), send go,
    return the integers on its result line."""
    p = subprocess.Popen([*wrapper, *cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    pid = int(p.stdout.readline())
    ctx = before_go(pid) if before_go else None
    try:
        p.stdin.write(b"g")
        p.stdin.flush()
        out = p.stdout.readline()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        LAST_CPU_S[0] = ru.ru_utime + ru.ru_stime
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    if p.returncode:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}")
    return [int(x) for x in out.split()]


def tracepoints() -> list[str]:
    """The tracepoints probes/trace.bpf.c attaches (parsed from the source), as
    bpftrace probe names."""
    import re

    src = (REPO / "probes" / "trace.bpf.c").read_text()
    tps = [f"tracepoint:{c}:{n}" for c, n in re.findall(r"TRACEPOINT_PROBE\((\w+), (\w+)\)", src)]
    for name in re.findall(r"^SYS_IO\((\w+),", src, re.M):
        tps += [f"tracepoint:syscalls:sys_enter_{name}", f"tracepoint:syscalls:sys_exit_{name}"]
    return sorted(set(tps))


def proc_cpu_rss(pid: int) -> tuple[float, int]:
    """(utime+stime seconds, RSS bytes) of a process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / hz
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def rss_anon(pid: int) -> int:
    """Private anonymous RSS (heap, LLVM's allocations), without file-backed library text."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0
