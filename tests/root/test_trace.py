"""Real probes on the real kernel against real workloads, checked through the real client."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.root.conftest import Daemon, TraceStream, stop_daemon, wait_for

WORKLOAD = r"""
import os, socket, sys
path, port = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
n1 = os.write(fd, b"a" * 1000)
n2 = os.write(fd, b"b" * 24)
os.close(fd)
fd = os.open(path, os.O_RDONLY)
got = os.read(fd, 4096)
os.close(fd)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect(("127.0.0.1", port))
s.sendall(b"ping 17 bytes ok\n")
reply = s.recv(100)
s.close()
os._exit(0)
"""


class EchoServer:
    """A loopback TCP server the test starts; replies "pong" to each connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.recv(100)
                c.sendall(b"pong\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Any:
    srv = EchoServer()
    yield srv
    srv.close()


def syscalls(events: list[dict[str, Any]], pid: int) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "syscall" and e["pid"] == pid]


def trace_workload(d: Daemon, workload: Any, code: str, *args: str,
                   extra: tuple[str, ...] = ()) -> tuple[Any, list[dict[str, Any]]]:
    w = workload(code, *args)
    t = TraceStream(d, "-p", str(w.pid), "-d", "8s", *extra)
    t.wait_started()
    rc, _out, err = w.go()
    assert rc == 0, err
    _rc, events, _ = t.finish()
    return w, events


def test_exact_paths_fds_bytes_and_peer(daemon: Daemon, workload: Any, echo: EchoServer,
                                        tmp_path: Path) -> None:
    path = str(tmp_path / "out.bin")
    w, events = trace_workload(daemon, workload, WORKLOAD, path, str(echo.port))
    mine = syscalls(events, w.pid)
    opens = [e for e in mine if e["syscall"] == "openat" and e.get("path") == path]
    assert len(opens) == 2, mine
    wfd = opens[0]["ret"]
    assert wfd >= 3
    assert "O_WRONLY" in opens[0]["flags"] and "O_CREAT" in opens[0]["flags"]
    writes = [e for e in mine if e["syscall"] == "write" and e["fd"] == wfd]
    assert [(e["size"], e["ret"]) for e in writes] == [(1000, 1000), (24, 24)]
    after = mine[mine.index(opens[1]) + 1:]
    reads = [e for e in after if e["syscall"] == "read" and e["fd"] == opens[1]["ret"]]
    assert reads[0]["size"] == 4096 and reads[0]["ret"] == 1024
    connects = [e for e in mine if e["syscall"] == "connect"]
    assert len(connects) == 1
    assert connects[0]["peer"] == f"127.0.0.1:{echo.port}"
    assert connects[0]["family"] == "AF_INET" and connects[0]["ret"] == 0
    sfd = connects[0]["fd"]
    sends = [e for e in mine if e["syscall"] == "sendto" and e["fd"] == sfd]
    assert [e["ret"] for e in sends] == [17]
    recvs = [e for e in mine if e["syscall"] == "recvfrom" and e["fd"] == sfd]
    assert recvs[0]["ret"] == 5 and recvs[0]["size"] == 100
    closes = [e["fd"] for e in mine if e["syscall"] == "close"]
    assert wfd in closes and sfd in closes
    exits = [e for e in events if e["kind"] == "exit" and e["pid"] == w.pid]
    assert exits and exits[0]["code"] == 0
    assert all(e["latency_us"] >= 0 for e in mine)
    assert all("payload" not in e for e in mine), "meta level must carry no payload"


STRACE_SET = ("openat", "read", "write", "close", "connect", "sendto", "recvfrom")


def strace_sequence(path: str, port: int, tmp: Path) -> list[tuple[str, int | None, int]]:
    out = tmp / "strace.txt"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=" + ",".join(STRACE_SET), "-o", str(out),
                    sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + WORKLOAD,
                    path, str(port)], input=b"go\n", check=True, timeout=60)
    seq: list[tuple[str, int | None, int]] = []
    started = False
    for line in out.read_text().splitlines():
        m = re.match(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)", line)
        if not m:
            continue
        name, args, ret = m.group(1), m.group(2), int(m.group(3))
        if not started:  # start after the stdin "go" handshake, as periscope does
            started = name == "read" and args.startswith("0,")
            continue
        fd = None if name == "openat" else int(args.split(",")[0])
        seq.append((name, fd, ret))
    return seq


def test_matches_strace(daemon: Daemon, workload: Any, echo: EchoServer, tmp_path: Path) -> None:
    """The (syscall, fd, ret) sequence for covered syscalls equals strace's."""
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    path = str(tmp_path / "diff.bin")
    expected = strace_sequence(path, echo.port, tmp_path)
    w, events = trace_workload(daemon, workload, WORKLOAD, path, str(echo.port))
    # strace prints -1 for failures where the kernel (and periscope) returns -errno.
    got = [(e["syscall"], None if e["syscall"] == "openat" else e.get("fd"), max(e["ret"], -1))
           for e in syscalls(events, w.pid) if e["syscall"] in STRACE_SET]
    # periscope never sees the stdin read that was in flight when tracing began
    if got and got[0][:2] == ("read", 0):
        got = got[1:]
    assert got == [(n, f, max(r, -1)) for n, f, r in expected]
    assert len(got) >= 12


FORKER = r"""
import os, sys
pid = os.fork()
if pid == 0:
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"child!!")
    os._exit(3)
os.waitpid(pid, 0)
os._exit(0)
"""


def test_children_followed_untargeted_silent(daemon: Daemon, workload: Any,
                                             tmp_path: Path) -> None:
    bystander = workload("import os, time\nfor _ in range(200):\n"
                         "    os.write(2, b'')\n    os.open('/dev/null', os.O_RDONLY)\n"
                         "    time.sleep(0.005)\n")
    w = workload(FORKER, str(tmp_path / "child.txt"))
    t = TraceStream(daemon, "-p", str(w.pid), "-d", "6s")
    t.wait_started()
    bystander.proc.stdin.write(b"go\n")
    bystander.proc.stdin.flush()
    assert w.go()[0] == 0
    _rc, events, _ = t.finish()
    forks = [e for e in events if e["kind"] == "fork" and e["pid"] == w.pid]
    assert len(forks) == 1
    child = forks[0]["child"]
    child_writes = [e for e in syscalls(events, child) if e["syscall"] == "write"]
    assert [e["ret"] for e in child_writes] == [7]
    exits = {e["pid"]: e["code"] for e in events if e["kind"] == "exit"}
    assert exits == {child: 3, w.pid: 0}
    assert {e["pid"] for e in events} <= {w.pid, child}, "an untargeted process leaked in"


SHORT_LIVED = "import subprocess\nfor _ in range(10):\n    subprocess.run(['/bin/true'])\n"


def test_short_lived_children_are_named(daemon: Daemon, workload: Any) -> None:
    """Ten children that exec /bin/true and exit at once, each reaped before the daemon can
    read its /proc: every event of theirs still carries a comm (the kernel's, from the
    record header), and their exits are named "true"."""
    w = workload(SHORT_LIVED)
    t = TraceStream(daemon, "-p", str(w.pid), "-d", "5s")
    t.wait_started()
    assert w.go()[0] == 0
    _rc, events, _ = t.finish()
    children = {e["child"] for e in events if e["kind"] == "fork" and e["pid"] == w.pid}
    assert len(children) == 10
    theirs = [e for e in events if e["pid"] in children]
    assert theirs and all(e.get("comm") for e in theirs), [e for e in theirs if not e.get("comm")]
    exits = {e["pid"]: e["comm"] for e in theirs if e["kind"] == "exit"}
    assert exits == dict.fromkeys(children, "true")


HTTP_CLIENT = r"""
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /orders?id=7 HTTP/1.1\r\nHost: shop.local\r\n"
          b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
          b"c2VjcmV0c2lnbmF0dXJlMTIzNDU2\r\n"
          b"Cookie: session=s3cr3tC00kieValue1234\r\n\r\n")
s.recv(100)
s.close()
"""


def test_payload_is_redacted_and_meta_has_none(daemon: Daemon, workload: Any,
                                               echo: EchoServer) -> None:
    _w, events = trace_workload(daemon, workload, HTTP_CLIENT, str(echo.port),
                                extra=("--level", "payload", "--reason", "test"))
    blob = json.dumps(events)
    assert "GET /orders?id=7 HTTP/1.1" in blob, "payload prefix should be visible"
    assert "Host: shop.local" in blob
    assert "s3cr3tC00kieValue1234" not in blob
    assert "c2VjcmV0c2lnbmF0dXJlMTIzNDU2" not in blob
    assert "[REDACTED:" in blob
    stored = daemon.request("events", {"limit": 500})["result"]
    assert "s3cr3tC00kieValue1234" not in json.dumps(stored)
    assert "c2VjcmV0c2lnbmF0dXJlMTIzNDU2" not in daemon.state.joinpath("events.db").read_bytes()\
        .decode("latin-1")


VECTORED = r"""
import os, socket
pairs = [socket.socketpair() for _ in range(4)]
os.writev(pairs[0][0].fileno(), [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5\r\n\r\n", b"body\n"])
os.writev(pairs[1][0].fileno(), [b"x" * 200, b"y" * 100])
os.writev(pairs[2][0].fileno(), [b"", b"z" * 9 + b"\n"])
pairs[3][0].sendmsg([b"msg-one ", b"msg-two\n"])
got = os.readv(pairs[0][1].fileno(), [bytearray(5), bytearray(100)])
assert got == 43, got
os._exit(0)
"""


def test_vectored_io_copies_the_iovecs_up_to_the_cap(daemon: Daemon, workload: Any) -> None:
    """writev/readv/sendmsg: the payload is the call's first bytes across iovecs (nginx
    writes a response head and its body as two), up to the 256 B cap."""
    w, events = trace_workload(daemon, workload, VECTORED,
                               extra=("--level", "payload", "--reason", "test"))
    io = [e for e in syscalls(events, w.pid)
          if e["syscall"] in ("writev", "readv", "sendmsg")]
    got = [(e["syscall"], e["ret"], e.get("captured"), bool(e.get("truncated")),
            e.get("payload")) for e in io]
    assert got == [
        ("writev", 43, 43, False, "HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nbody\\n"),
        ("writev", 300, 256, True, "[REDACTED:gap]"),  # no line end: the gap masks it
        ("writev", 10, 10, False, "zzzzzzzzz\\n"),
        ("sendmsg", 16, 16, False, "msg-one msg-two\\n"),
        ("readv", 43, 43, False, "HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nbody\\n"),
    ], got


def our_prog_ids(pid: int) -> set[int]:
    """BPF program ids held by a process (fdinfo of its prog fds)."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            m = re.search(r"^prog_id:\s*(\d+)", fdinfo.read_text(), re.M)
        except OSError:
            continue  # fd closed while we looked
        if m:
            ids.add(int(m.group(1)))
    return ids


def attached_prog_ids(pid: int) -> set[int]:
    """Programs a process has attached (its perf events with a BPF program, per bpftool)."""
    out = subprocess.run(["bpftool", "-j", "perf", "list"], capture_output=True, text=True,
                         check=True).stdout
    return {p["prog_id"] for p in json.loads(out or "[]") if p.get("pid") == pid}


def loaded_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"] for p in json.loads(out)}


def test_lazy_attach_and_detach_on_sigterm(daemon_factory: Any, workload: Any) -> None:
    if not shutil.which("bpftool"):
        pytest.skip("bpftool not installed")
    d = daemon_factory()
    # Idle: the probes are compiled and loaded ahead (capture.preload), never attached.
    wait_for(lambda: len(our_prog_ids(d.proc.pid)) >= 40, 120, what="the preload")
    assert attached_prog_ids(d.proc.pid) == set(), "idle daemon must attach nothing"
    w = workload("import time\ntime.sleep(120)\n")
    t = TraceStream(d, "-p", str(w.pid), "-d", "120s")
    t.wait_started()
    live = our_prog_ids(d.proc.pid)
    assert len(live) >= 40, live
    attached = attached_prog_ids(d.proc.pid)
    assert len(attached) >= 40 and attached <= live, attached  # the tracepoints, now
    assert d.request("status")["result"]["probes_attached"] is True
    assert live <= loaded_prog_ids(), "bpftool must list what the daemon holds"
    # Read-only, as loaded: no program calls a helper that writes user memory or signals.
    for pid in live:
        xlated = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(pid)],
                                capture_output=True, text=True, check=True).stdout
        assert "call" in xlated
        for helper in ("probe_write_user", "override_return", "send_signal"):
            assert helper not in xlated, f"prog {pid} calls {helper}"
    status = d.request("status")["result"]
    assert status["probes_attached"] is True
    assert {"emitted", "drop_ringbuf"} <= set(status["kernel"])
    assert stop_daemon(d) == 0
    t.finish()
    left = loaded_prog_ids()
    assert not (live & left), f"programs left attached after SIGTERM: {live & left}"
    assert "stopped; probes detached" in d.log_text()


def test_detach_after_last_session(daemon: Daemon, workload: Any) -> None:
    w = workload("import time\ntime.sleep(30)\n")
    t = TraceStream(daemon, "-p", str(w.pid), "-d", "2s")
    t.wait_started()
    rc, _events, err = t.finish()
    assert rc == 0, err
    assert "ended (deadline)" in err
    wait_for(lambda: not daemon.request("status")["result"]["probes_attached"], 10,
             what="probes to detach after the last session")
    assert attached_prog_ids(daemon.proc.pid) == set()  # loaded for the next session only


def test_trace_errors_are_clear(daemon: Daemon) -> None:
    r = daemon.cli("trace", "-p", "999999", "-d", "2s")
    assert r.returncode == 2 and "NOT_FOUND" in r.stderr, r.stderr
    r = daemon.cli("trace", "-p", "abc")
    assert r.returncode == 2 and "pid must be a positive integer" in r.stderr
    r = daemon.cli("trace", "-d", "5x", "-p", "1")
    assert "bad duration" in r.stderr
    r = daemon.cli("trace")
    assert r.returncode == 2 and "needs a target" in r.stderr


def test_check_reports_ready() -> None:
    r = subprocess.run([sys.executable, "-m", "collector.daemon", "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: READY" in r.stdout
    for name in ("bpf syscall", "tracefs", "ring buffer", "syscall tracepoints", "uprobes",
                 "kernel headers", "capabilities", "BTF"):
        assert name in r.stdout


def test_layout_matches_bcc_view() -> None:
    """The Python mirror of common.h agrees with the struct bcc compiled (sizes, offsets)."""
    from bcc import BPF

    from probes.layout import C_LAYOUT, SYS_HDR_SIZE
    from probes.trace import PROBE_DIR

    src = b'#include "common.h"\nBPF_ARRAY(sys, struct sys_event, 1);\n' \
          b'BPF_ARRAY(fork, struct fork_event, 1);\nBPF_ARRAY(ex, struct exit_event, 1);\n'
    b = BPF(text=src, cflags=[f"-I{PROBE_DIR}", "-DMAX_DATA=256"])
    try:
        for table, cname in ((b"sys", "sys_event"), (b"fork", "fork_event"),
                             (b"ex", "exit_event")):
            leaf = b[table].Leaf
            for fname, (off, _size) in C_LAYOUT[cname].items():
                assert getattr(leaf, fname).offset == off, (cname, fname)
        assert b[b"sys"].Leaf.hdr.offset == 0
        assert b[b"sys"].Leaf.data.offset == SYS_HDR_SIZE
    finally:
        b.cleanup()


def test_idle_daemon_costs_nothing_and_starts_fast(daemon: Daemon) -> None:
    st = daemon.request("status")["result"]
    assert st["probes_attached"] is False
    assert st["server"]["ready_ms"] < 5000
    time.sleep(0.2)


def test_daemon_holds_fds_not_bcc(daemon: Daemon, workload: Any) -> None:
    """The compile runs in a helper: with probes attached, periscoped maps no libbcc/LLVM."""
    w = workload("import time\ntime.sleep(30)\n")
    t = TraceStream(daemon, "-p", str(w.pid), "-d", "30s")
    t.wait_started()
    assert daemon.request("status")["result"]["probes_attached"] is True
    maps = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
    bad = [ln for ln in maps.splitlines() if "llvm" in ln.lower() or "libbcc" in ln]
    assert not bad, bad[:5]
    children = Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children").read_text()
    assert not children.split(), f"the loader helper outlived the load: {children}"
    t.proc.terminate()
    t.finish()


def test_loader_compile_error_is_a_clear_probe_error(tmp_path: Path) -> None:
    from probes.trace import PROBE_DIR, ProbeError, ProbeOptions, run_loader

    tree = tmp_path / "probes"
    shutil.copytree(PROBE_DIR, tree, ignore=shutil.ignore_patterns("__pycache__"))
    src = tree / "trace.bpf.c"
    src.write_text(src.read_text() + "\nint broken(void) { return undeclared_thing; }\n")
    with pytest.raises(ProbeError) as exc:
        run_loader(ProbeOptions(), root=tmp_path)
    msg = str(exc.value)
    assert "loading trace.bpf.c failed" in msg
    assert "undeclared_thing" in msg, msg


def test_probe_maps_and_counters_without_bcc() -> None:
    """TraceProbe in-process: targets round-trip through bpf(2), records and stats flow."""
    import os

    from probes.trace import ProbeOptions, TargetSpec, TraceProbe

    got: list[bytes] = []
    probe = TraceProbe(ProbeOptions(), got.extend)
    probe.load()
    try:
        me = os.getpid()
        probe.add_pid(me, TargetSpec(cookie=9, payload_cap=64))
        probe.add_comm("no-such-comm", TargetSpec(cookie=10))
        probe.add_cgroup(12345, TargetSpec(cookie=11))
        assert probe.pids() == {me: 9}
        fd = os.open("/dev/null", os.O_WRONLY)
        for _ in range(100):
            os.write(fd, b"periscope-test-payload")
        os.close(fd)
        assert probe.refresh_pid(me, TargetSpec(cookie=9, payload_cap=64))
        probe.remove_pid(me)
        probe.remove_pid(me)  # already gone: no error
        assert not probe.refresh_pid(me, TargetSpec(cookie=9))  # not re-added
        probe.remove_comm("no-such-comm")
        probe.remove_cgroup(12345)
        assert probe.pids() == {}
        wait_for(lambda: sum(b"periscope-test-payload" in r for r in got) >= 100, 5,
                 what="100 write records")
        assert probe.stats()["emitted"] >= 100
    finally:
        probe.close()
    assert not probe.loaded and probe.stats() == {}


SIBLINGS = r"""
import os, sys
sys.stdin.readline()
while True:  # two children whose tgids share a word of the kernel's target bitmap
    r, w = os.pipe()
    b = os.fork()
    if b == 0:  # waits for its sibling's exit, then writes
        os.close(w)
        os.read(r, 1)
        fd = os.open("/dev/null", os.O_WRONLY)
        for _ in range(20):
            os.write(fd, b"sibling-after-exit")
        os._exit(0)
    os.close(r)
    a = os.fork()
    if a == 0:
        os._exit(0)
    os.waitpid(a, 0)  # a has exited: its bit is cleared
    os.write(w, b"g")
    os.close(w)
    os.waitpid(b, 0)
    if a >> 6 == b >> 6:
        break
print(a, b, flush=True)
"""


def test_a_child_exit_clears_its_own_bit_only() -> None:
    """A target's children inherit it in the kernel: a bit in target_bits, then the hash.
    One child's exit clears its own bit: its sibling in the same 64-tgid word, writing only
    after that exit, is traced whole."""
    from probes.layout import HDR
    from probes.trace import ProbeOptions, TargetSpec, TraceProbe

    got: list[bytes] = []
    probe = TraceProbe(ProbeOptions(), got.extend)
    probe.load()
    try:
        p = subprocess.Popen([sys.executable, "-c", SIBLINGS], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdin is not None and p.stdout is not None
        probe.add_pid(p.pid, TargetSpec(cookie=5, payload_cap=64))
        p.stdin.write("go\n")
        p.stdin.flush()
        a, b = map(int, p.stdout.readline().split())
        assert p.wait(10) == 0

        def writes_of(tgid: int) -> int:
            return sum(HDR.unpack_from(r)[5] == tgid and b"sibling-after-exit" in r
                       for r in list(got))

        wait_for(lambda: writes_of(b) >= 20, 5, what="the sibling's 20 writes")
        assert writes_of(b) == 20
        assert a not in probe.pids() and b not in probe.pids()  # both exited: removed
    finally:
        probe.close()
