"""Only bytes a call returned are captured: every return path of SSL_read/SSL_write(_ex).

The C client (tests/data/workloads/tlscalls.c) fills its buffer with "STALE!!!" before each
read and prints what every call returned; the events must match that, call by call.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.root.conftest import REPO, Daemon, TraceStream
from tests.root.test_workloads import free_port

SOURCE = REPO / "tests/data/workloads/tlscalls.c"


@pytest.fixture
def tlscalls(tmp_path: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    exe = tmp_path / "tlscalls"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(SOURCE), "-ldl"], check=True,
                   capture_output=True, timeout=60)
    return exe


def _serve(listener: socket.socket, ctx: ssl.SSLContext) -> None:
    raw, _ = listener.accept()
    with ctx.wrap_socket(raw, server_side=True) as conn:
        pending = b""
        while True:
            data = conn.recv(4096)
            if not data:
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.endswith(b"send300"):
                    conn.sendall(b"R" * 299 + b"\n")
                elif line.endswith(b"send150"):
                    conn.sendall(b"S" * 149 + b"\n")
                elif line.endswith(b"close"):
                    conn.unwrap()  # close_notify: the client's SSL_read returns 0
                    return


@pytest.fixture
def tls_peer(tmp_path: Path) -> Iterator[int]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    t = threading.Thread(target=_serve, args=(listener, ctx), daemon=True)
    t.start()
    yield port
    listener.close()
    t.join(10)


def _expected(lines: list[str]) -> list[tuple[str, int]]:
    """(syscall name, ret periscope must report) per call the client printed."""
    out = []
    for line in lines:
        name, r, *n = line.split()
        # _ex: 1 and a count on success, 0 on failure; periscope reports the count
        ret = (int(n[0]) if int(r) == 1 else 0) if name.endswith("_ex") else int(r)
        out.append((name.removesuffix("_ex"), ret))
    return out


def test_every_tls_return_path(daemon: Daemon, tlscalls: Path, tls_peer: int) -> None:
    client = subprocess.Popen([str(tlscalls), str(tls_peer)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline() == "ready\n"  # libssl is mapped now
        t = TraceStream(daemon, "-p", str(client.pid), "-d", "6s", "--level", "payload",
                        "--reason", "tls return paths")
        t.wait_started()
        out, err = client.communicate("go\n", timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    expected = _expected(out.splitlines())
    assert expected == [("ssl_write", 12), ("ssl_write", 600), ("ssl_read", -1),
                        ("ssl_read", 0), ("ssl_write", 8), ("ssl_read", 100),
                        ("ssl_read", 50), ("ssl_write", 8), ("ssl_read", 300),
                        ("ssl_write", 6), ("ssl_read", 0)], out
    _rc, events, err = t.finish()
    tls = [e for e in events if e["kind"] == "tls"]
    got = [(e["syscall"], e["ret"]) for e in tls]
    assert got == expected, err

    assert "STALE" not in json.dumps(events), "bytes the call did not return were captured"
    for e in tls:
        assert "errno" not in e, e  # SSL_read's -1 is not an errno
        if e["ret"] <= 0:
            assert "payload" not in e and "captured" not in e and "held" not in e, e
        else:
            assert e["captured"] == min(e["ret"], 256), e
            assert bool(e.get("truncated")) == (e["ret"] > 256), e
    reads = [e for e in tls if e["syscall"] == "ssl_read" and e["ret"] > 0]
    text = "".join(str(e.get("payload", "")) for e in reads)
    # The 150 B line arrives whole once its second read completes it; the 300 B read was
    # cut at the 256 B cap, so the redaction stream masks that unfinished line (fail closed).
    assert text == "S" * 149 + "\\n[REDACTED:gap]"
    writes = [str(e.get("payload", "")) for e in tls if e["syscall"] == "ssl_write"]
    assert writes[0] == "hello-write\\n" and writes[1] == "big-write\\n[REDACTED:gap]"
    # On the wire "WWW...send150\n" is one line whose middle was never captured: its end
    # stays masked with it, only the line end goes out.
    assert writes[2:] == ["\\n", "send300\\n", "close\\n"]


def test_syscall_exits_copy_only_returned_bytes(daemon: Daemon, tlscalls: Path,
                                                tls_peer: int) -> None:
    """The same run seen at the syscall layer: a read that failed (EAGAIN under the
    non-blocking SSL_read) carries no bytes, and no captured count exceeds ret."""
    client = subprocess.Popen([str(tlscalls), str(tls_peer)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline() == "ready\n"
        t = TraceStream(daemon, "-p", str(client.pid), "-d", "6s", "--level", "payload",
                        "--reason", "syscall return paths")
        t.wait_started()
        client.communicate("go\n", timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    _rc, events, _err = t.finish()
    sys_io = [e for e in events if e["kind"] == "syscall" and "direction" in e]
    assert any(e.get("errno") == "EAGAIN" for e in sys_io), "no EAGAIN read was seen"
    for e in sys_io:
        if e["ret"] <= 0:
            assert "payload" not in e and "captured" not in e, e
        elif "captured" in e:
            assert 0 < e["captured"] <= e["ret"], e
    assert "STALE" not in json.dumps(events)


