"""Snapshots of real processes: the facts the test set up (files, sockets, threads, TLS
library, environment), no secret in the output, a process killed mid-snapshot, and the TLS
`traceable` flag against the real TLS probe. No daemon needed."""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from collector.snapshot import collect, render_summary, write_snapshot
from redact import Redactor
from tests.root.conftest import Workload, wait_for

SERVER = r"""
import json, os, socket, ssl, sys, threading
n, d = int(sys.argv[1]), sys.argv[2]
log = open(os.path.join(d, "app.log"), "w")
log.write("x" * 1234)
log.flush()
data = open(os.path.join(d, "data.bin"), "rb", buffering=0)
data.read(100)
hidden = open(os.path.join(d, "token=abcdef123456", "cache.db"), "a")
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(8)
cli = socket.create_connection(srv.getsockname())
acc, _ = srv.accept()
udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp.bind(("::1", 0))
stop = threading.Event()
for _ in range(n):
    threading.Thread(target=stop.wait, daemon=True).start()
print(json.dumps({"log": log.fileno(), "data": data.fileno(), "hidden": hidden.fileno(),
                  "srv": srv.fileno(), "cli": cli.fileno(), "acc": acc.fileno(),
                  "udp": udp.fileno(), "port": srv.getsockname()[1],
                  "cport": cli.getsockname()[1], "uport": udp.getsockname()[1]}), flush=True)
sys.stdin.readline()
"""
THREADS = 7
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb290dGVzdCJ9.cm9vdHRlc3RzaWduYXR1cmU"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
       "DB_PASSWORD": "hunter2-root-secret",           # secret by name
       "UPSTREAM_HEADER": f"Bearer {JWT}",              # a token in a plain-named variable
       "PAYMENT_NOTE": "card 4111 1111 1111 1111"}      # a card number (Luhn-valid)
SECRETS = ("hunter2-root-secret", "eyJzdWIiOiJyb290dGVzdCJ9", "cm9vdHRlc3RzaWduYXR1cmU",
           "4111 1111 1111 1111", "hunter2-argv", "abcdef123456")


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor.default()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any], Path]]:
    d = tmp_path / "srv"
    (d / "token=abcdef123456").mkdir(parents=True)
    (d / "data.bin").write_bytes(b"d" * 4096)
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    proc = subprocess.Popen([sys.executable, str(script), str(THREADS), str(d), "--password",
                             "hunter2-argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=ENV, cwd=d)
    assert proc.stdout is not None
    facts = json.loads(proc.stdout.readline())
    yield proc, facts, d
    proc.kill()
    proc.wait(10)


def test_snapshot_has_the_known_facts(server: tuple[Any, dict[str, Any], Path],
                                      redactor: Redactor) -> None:
    proc, facts, d = server
    snap = collect(proc.pid, redactor)
    ps = psutil.Process(proc.pid)  # an independent reading of the same process
    assert (snap["partial"], snap["failed"]) == (False, {})

    ident = snap["identity"]
    assert ident["exe"] == ps.exe() and ident["cwd"] == str(d)
    assert (ident["ppid"], ident["user"], ident["argc"]) == (os.getpid(), "root", 6)
    assert ident["cmdline"].endswith("--password [REDACTED:secret]")
    assert abs(ident["start_time"] - ps.create_time()) < 0.02
    assert snap["parents"][0] == {"pid": os.getpid(), "comm": psutil.Process().name(),
                                  "user": "root"}

    th = snap["threads"]
    assert th["count"] == len(th["list"]) == THREADS + 1 == ps.num_threads()
    assert {t["tid"] for t in th["list"]} == {t.id for t in ps.threads()}

    fds = {e["fd"]: e for e in snap["fds"]["list"]}
    assert snap["fds"]["count"] == ps.num_fds()
    assert (fds[facts["log"]]["path"], fds[facts["log"]]["pos"]) == (str(d / "app.log"), 1234)
    assert (fds[facts["data"]]["mode"], fds[facts["data"]]["pos"]) == ("r", 100)
    assert fds[facts["hidden"]]["path"] == str(d) + "/token=[REDACTED:secret]"
    assert "O_APPEND" in fds[facts["hidden"]]["flags"]
    files = {f.fd: (f.path, f.position) for f in ps.open_files()}
    # psutil leaves out deleted files (pytest's capture file on fd 2 may be one)
    ours = {fd: (e["path"], e["pos"]) for fd, e in fds.items()
            if e["type"] == "file" and not e.get("deleted")}
    del files[facts["hidden"]], ours[facts["hidden"]]
    assert ours == files

    inet = {(s["fd"], s["family"], s["type"], tuple(s["laddr"]),
             tuple(s["raddr"]) if s["raddr"] else None, s["state"])
            for s in snap["sockets"] if s["family"] in ("AF_INET", "AF_INET6")}
    theirs = {(c.fd, c.family.name, c.type.name, tuple(c.laddr),
               tuple(c.raddr) if c.raddr else None, c.status)
              for c in ps.net_connections(kind="inet")}
    assert inet == theirs
    lo, port, cport = "127.0.0.1", facts["port"], facts["cport"]
    assert (facts["srv"], "AF_INET", "SOCK_STREAM", (lo, port), None, "LISTEN") in inet
    assert (facts["cli"], "AF_INET", "SOCK_STREAM", (lo, cport), (lo, port),
            "ESTABLISHED") in inet
    assert (facts["acc"], "AF_INET", "SOCK_STREAM", (lo, port), (lo, cport),
            "ESTABLISHED") in inet
    assert (facts["udp"], "AF_INET6", "SOCK_DGRAM", ("::1", facts["uport"]), None,
            "NONE") in inet
    assert fds[facts["cli"]]["peer"] == f"{lo}:{port}"

    libs = {Path(lib["path"]).name: lib for lib in snap["libraries"]}
    assert {Path(m.path).name for m in ps.memory_maps() if ".so" in m.path} <= set(libs)
    assert libs["libssl.so.3"]["tls"] == "openssl"

    assert snap["limits"]["max_open_files"] == dict(
        zip(("soft", "hard"), resource.prlimit(proc.pid, resource.RLIMIT_NOFILE),
            strict=True), units="files")
    assert snap["memory"]["rss"] > 0 and 0 < snap["memory"]["pss"] <= snap["memory"]["rss"]
    assert snap["io"]["rchar"] > 0 and snap["cpu"]["voluntary_ctxt_switches"] > 0
    assert snap["namespaces"]["ids"]["net"] == os.stat(f"/proc/{proc.pid}/ns/net").st_ino

    env = {v["name"]: v["value"] for v in snap["environ"]["vars"]}
    assert set(env) == set(ENV) and env["LANG"] == "C.UTF-8"
    assert env["DB_PASSWORD"] == "[REDACTED:secret]"
    assert env["UPSTREAM_HEADER"] == "Bearer [REDACTED:jwt]"
    assert env["PAYMENT_NOTE"] == "card [REDACTED:credit_card]"

    text = orjson.dumps(snap).decode() + render_summary(snap)
    for secret in SECRETS:
        assert secret not in text
    summary = render_summary(snap)
    assert f"127.0.0.1:{cport} -> 127.0.0.1:{port} ESTABLISHED" in summary
    assert "libssl.so.3 (openssl, " in summary


def test_killed_mid_snapshot_gives_a_partial_file(workload: Any, redactor: Redactor,
                                                  tmp_path: Path) -> None:
    w: Workload = workload("import time; time.sleep(60)")

    def kill_after(section: str) -> None:
        if section == "threads":  # killed and reaped: /proc/PID is gone
            w.proc.kill()
            w.proc.wait(10)

    snap = collect(w.pid, redactor, _between=kill_after)
    assert snap["partial"] and snap["exited"]
    assert snap["identity"]["exe"] == os.path.realpath(sys.executable)
    assert snap["threads"]["count"] == 1 and snap["cpu"]["user_s"] >= 0
    assert snap["failed"]["fds"] == "process exited"
    assert all(snap["failed"][s] == "not read: process exited" for s in
               ("sockets", "memory", "maps", "libraries", "limits", "io", "environ"))
    out = tmp_path / "snap.json"
    write_snapshot(out, snap)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text()) == snap


def test_a_zombie_mid_snapshot_is_marked(workload: Any, redactor: Redactor) -> None:
    """Killed but not yet reaped: the zombie's fds read as an empty list, which must not
    pass for a process without fds."""
    w: Workload = workload("import time; time.sleep(60)")

    def kill_after(section: str) -> None:
        if section == "threads":
            w.proc.kill()
            wait_for(lambda: psutil.Process(w.pid).status() == psutil.STATUS_ZOMBIE, 10,
                     what="the zombie")

    snap = collect(w.pid, redactor, _between=kill_after)
    assert snap["partial"] and snap["exited"] and "fds" in snap["failed"]
    assert snap["failed"]["environ"] == "not read: process exited"


def _stub_libssl(tmp_path: Path) -> Path:
    lib = tmp_path / "stub" / "libssl.so.3"  # named so the TLS probe takes it as a libssl
    lib.parent.mkdir()
    src = tmp_path / "stub.c"
    src.write_text("int SSL_read(void) { return 0; }\nint SSL_write(void) { return 0; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_tls_traceable_is_what_the_tls_probe_attaches(tmp_path: Path,
                                                      redactor: Redactor) -> None:
    from probes.trace import ProbeOptions, TraceProbe

    stub = _stub_libssl(tmp_path)
    wait = "print('up', flush=True); sys.stdin.readline()"
    procs = [subprocess.Popen([sys.executable, "-c", f"import ssl, sys; {wait}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE),
             subprocess.Popen([sys.executable, "-c", f"import ctypes, sys; "
                               f"ctypes.CDLL({str(stub)!r}); {wait}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == b"up\n"
        snaps = {p.pid: collect(p.pid, redactor) for p in procs}
        probe = TraceProbe(ProbeOptions(), lambda _batch: None)
        probe.load()
        try:
            probe.attach_tls([p.pid for p in procs])
            attached, failed = set(probe.tls.attached), set(probe.tls.failed)
        finally:
            probe.close()
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
    flagged = {(pid, lib["path"]): lib["traceable"] for pid, snap in snaps.items()
               for lib in snap["libraries"] if lib.get("tls") == "openssl"}
    real_pid, stub_pid = procs[0].pid, procs[1].pid
    assert [t for (pid, _), t in flagged.items() if pid == real_pid] == [True]
    assert {p: t for (pid, p), t in flagged.items() if pid == stub_pid} == {str(stub): False}
    for (pid, path), traceable in flagged.items():
        where = f"/proc/{pid}/root{path}"
        assert (where in attached) is traceable and (where in failed) is not traceable
    stub_lib = next(lib for lib in snaps[stub_pid]["libraries"] if lib.get("tls"))
    assert stub_lib["why"] == "does not export SSL_read_ex, SSL_write_ex"


def test_cost_of_a_big_process(workload: Any, redactor: Redactor) -> None:
    """1,000 fds and 200 threads: every one is listed. The time is printed (-s), not
    asserted: this machine's CPUs are shared."""
    w: Workload = workload(
        "import os, socket, threading\n"
        "fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(900)]\n"
        "socks = [socket.socket() for _ in range(100)]\n"
        "ev = threading.Event()\n"
        "for _ in range(200): threading.Thread(target=ev.wait, daemon=True).start()\n"
        "print('up', flush=True)\n"
        "import time; time.sleep(120)\n")
    w.proc.stdin.write(b"go\n")  # type: ignore[union-attr]
    w.proc.stdin.flush()  # type: ignore[union-attr]
    assert w.proc.stdout is not None and w.proc.stdout.readline() == b"up\n"
    runs = [collect(w.pid, redactor) for _ in range(3)]
    snap = runs[-1]
    assert not snap["partial"]
    assert snap["fds"]["count"] == len(snap["fds"]["list"]) >= 1000
    assert snap["fds"]["by_type"]["chr"] >= 900 and snap["fds"]["by_type"]["socket"] >= 100
    assert snap["threads"]["count"] == 201 and len(snap["sockets"]) >= 100
    print(f"\nsnapshot of 1000+ fds / 201 threads: "
          f"{[r['duration_ms'] for r in runs]} ms, {len(orjson.dumps(snap))} bytes of JSON")
