"""The compiled-probe cache on a real kernel: a restart loads the probes without bcc, so
does the first start after `periscoped --warm-cache` (what make install runs), a corrupt
cache is dropped and rebuilt, a program the verifier refuses is never loaded (the daemon
compiles instead), and every compile says why in the log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from probes import objcache
from tests.root.conftest import REPO, Daemon, TraceStream, start_daemon, stop_daemon, wait_for

WRITER = "import os\nfor _ in range(100):\n    os.write(1, b'x')\n"


@pytest.fixture
def base() -> Iterator[Path]:
    b = Path(tempfile.mkdtemp(prefix="periscope-test-"))
    yield b
    subprocess.run(["rm", "-rf", str(b)], check=False)


def _cache_file(d: Daemon) -> Path:
    files = list((d.state / "probe-cache").glob("trace-*.bpfobj"))
    assert len(files) == 1, files
    return files[0]


def _preloaded(d: Daemon) -> str:
    return str(wait_for(lambda: "ahead in" in d.log_text() and d.log_text(), 120,
                        what="the preload"))


def _traced_events(d: Daemon, workload: Any) -> list[dict[str, Any]]:
    w = workload(WRITER)
    t = TraceStream(d, "-p", str(w.pid), "-d", "3s")
    t.wait_started()
    w.go()
    rc, events, err = t.finish()
    assert rc == 0, err
    return [e for e in events if e.get("syscall") == "write" and e.get("pid") == w.pid]


def test_a_restart_loads_the_probes_from_the_cache(base: Path, workload: Any) -> None:
    d = start_daemon(base, share_cache=False)
    try:
        log = _preloaded(d)
        assert "compiling the trace probe with bcc (cold cache: nothing compiled" in log
        assert "compiled and loaded ahead" in log
        path = _cache_file(d)
        assert path.stat().st_mode & 0o777 == 0o600
        assert (d.state / "probe-cache").stat().st_mode & 0o777 == 0o700
    finally:
        assert stop_daemon(d) == 0
    d = start_daemon(base, share_cache=False)
    try:
        log = _preloaded(d)
        assert "loaded from the cache ahead" in log and "compiling" not in log
        assert len(_traced_events(d, workload)) == 100  # the cached programs trace for real
    finally:
        assert stop_daemon(d) == 0


def test_the_warm_up_makes_the_first_start_warm(base: Path, workload: Any) -> None:
    """`periscoped --warm-cache` on a state dir and config (not the defaults: the config is
    part of the key), then a daemon on them: its preload and first session load the
    warm-up's file, and no compile ever runs (the loader would have logged why and
    replaced the file). A stale build left by an older kernel is named in the log."""
    config_text = "[capture]\nmax_payload_bytes = 512\nl7 = false\n"
    cfg = base / "periscope.toml"
    cfg.write_text('[metrics]\nlisten = ""\n' + config_text)  # what start_daemon writes
    cache = base / "state" / "probe-cache"
    cache.mkdir(mode=0o700, parents=True)
    stale = cache / f"trace-{'0' * 32}{objcache.SUFFIX}"
    stale.write_bytes(json.dumps({"format": 1, "key": "0" * 64,
                                  "build": {"kernel": "5.10.0-old"}}).encode() + b"\n{}")
    stale.chmod(0o600)
    warm = subprocess.run(
        [sys.executable, "-m", "collector.daemon", "--warm-cache", "--config", str(cfg),
         "--state-dir", str(base / "state")], capture_output=True, text=True, timeout=300,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert warm.returncode == 0, warm.stderr
    assert f"(key changed: kernel 5.10.0-old -> {os.uname().release}" in warm.stderr
    assert "probe cache warm in" in warm.stderr and not stale.exists()
    files = list(cache.glob("trace-*.bpfobj"))
    assert len(files) == 1
    before = files[0].stat()
    again = subprocess.run(warm.args, capture_output=True, text=True, timeout=300, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert again.returncode == 0 and "already warm" in again.stderr, again.stderr
    d = start_daemon(base, config_text, share_cache=False)
    try:
        log = _preloaded(d)
        assert "loaded from the cache ahead" in log and "compiling" not in log, log[-2000:]
        assert len(_traced_events(d, workload)) == 100
    finally:
        assert stop_daemon(d) == 0
    assert "compiling" not in d.log_text()
    after = _cache_file(d).stat()  # the same file: nothing rewrote it
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_corrupt_cache_is_dropped_and_rebuilt(base: Path, workload: Any) -> None:
    d = start_daemon(base, share_cache=False)
    try:
        _preloaded(d)
        path = _cache_file(d)
    finally:
        assert stop_daemon(d) == 0
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x20
    path.write_bytes(bytes(raw))
    d = start_daemon(base, share_cache=False)
    try:
        log = _preloaded(d)
        assert "probe cache unusable" in log and "checksum" in log
        assert "compiling the trace probe with bcc (the cached build was unusable)" in log
        assert "compiled and loaded ahead" in log
        assert len(_traced_events(d, workload)) == 100
        key = path.read_bytes().split(b"\n", 1)[0]
        assert objcache.read(path, json.loads(key)["key"]) is not None
    finally:
        assert stop_daemon(d) == 0


def test_the_verifier_still_checks_a_cached_program(base: Path, workload: Any) -> None:
    """A well-formed cache file (right key, checksum, relocations) whose program is unsafe:
    the kernel refuses it at load, the daemon compiles from source instead."""
    d = start_daemon(base, share_cache=False)
    try:
        _preloaded(d)
        path = _cache_file(d)
    finally:
        assert stop_daemon(d) == 0
    digest = json.loads(path.read_bytes().split(b"\n", 1)[0])["key"]
    obj = objcache.read(path, digest)
    assert obj is not None
    # r0 = *(u64 *)(r1 + 4096): a read far outside the tracepoint's context, then exit
    bad = objcache.INSN.pack(0x79, 0x10, 4096, 0) + objcache.INSN.pack(0x95, 0, 0, 0)
    progs = (replace(obj.progs[0], insns=bad, relocs=()), *obj.progs[1:])
    objcache.write(path, replace(obj, progs=progs), digest)
    d = start_daemon(base, share_cache=False)
    try:
        log = _preloaded(d)
        assert "probe cache unusable" in log and "loading program" in log, log[-2000:]
        assert "compiled and loaded ahead" in log
        assert len(_traced_events(d, workload)) == 100
    finally:
        assert stop_daemon(d) == 0
    shutil.rmtree(base / "state" / "probe-cache", ignore_errors=True)
