"""HTTP on real servers, traced at payload level: nginx (keep-alive, pipelined, a request
split across writes, a 500), a Python app server (a 300 ms handler, JSON bodies) and its TLS
twin hit by curl -k, a client that starts after its session (TLS probes on exec), a
connection that was open before its session, and `conns --limit`. Each test knows what it
sent: N requests give exactly N records, with their method, path and status; no secret it
sent appears in the store, the daemon log, the client's output or the live stream."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.root.conftest import wait_for
from tests.root.l7world import L7World, Stream, children, free_port, l7_world

TOKEN = "Zq8vLmN3pQ7rT2wXtoken"       # query string
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlLXNlY3JldA"  # header
PASSWORD = "hunter2-Zq8vLmN3pQ7r"     # JSON body, plain
TLS_PASSWORD = "tls-Zq8vLmN3pQ7rT2wX"  # JSON body, over TLS

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port};
        location /ok {{ return 200 "ok\\n"; }}
        location /static/ {{ root {base}/www; sendfile on; }}
        location /fail {{ return 500 "boom\\n"; }}
    }}
}}
"""

APP = r"""
import http.server, socketserver, ssl, sys, threading, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _send(self, code, body=b"ok\n"):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(0.3)
        self._send(500 if self.path.startswith("/fail") else 200)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(201, b'{"ok": true}')
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
plain, tls = S(("127.0.0.1", 0), H), S(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
for s in (plain, tls):
    threading.Thread(target=s.serve_forever, daemon=True).start()
print(plain.server_address[1], tls.server_address[1], flush=True)
sys.stdin.read()
"""


@dataclass
class Web:
    w: L7World
    nginx: list[int]  # master and worker
    nginx_port: int
    app: subprocess.Popen[str]
    app_port: int
    tls_port: int
    stream: Stream
    base: Path
    streams: list[Stream]


def _start(argv: list[str], stack: contextlib.ExitStack, **kw: Any) -> subprocess.Popen[str]:
    p = subprocess.Popen(argv, text=True, **kw)

    def end() -> None:
        p.kill()
        p.wait()
    stack.callback(end)
    return p


@pytest.fixture(scope="module")
def web() -> Iterator[Web]:
    for tool in ("nginx", "curl", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    with contextlib.ExitStack() as stack, l7_world("periscope-l7http-") as w:
        base = w.base
        port = free_port()
        (base / "nginx.conf").write_text(NGINX_CONF.format(base=base, port=port))
        (base / "www" / "static").mkdir(parents=True)
        (base / "www" / "static" / "app.css").write_bytes(b"body { color: #333; }\n" * 1000)
        base.chmod(0o755)  # the worker runs as nobody
        master = _start(["nginx", "-c", str(base / "nginx.conf"), "-p", str(base)], stack,
                        stderr=subprocess.DEVNULL)
        workers = wait_for(lambda: children(master.pid), 10, what="an nginx worker")
        key, cert = base / "key.pem", base / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                       check=True, capture_output=True, timeout=60)
        app = _start([sys.executable, "-c", APP, str(cert), str(key)], stack,
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert app.stdout is not None
        app_port, tls_port = (int(x) for x in app.stdout.readline().split())
        stream = w.trace("-p", str(master.pid), *[a for p in workers for a in ("-p", str(p))],
                         "-p", str(app.pid))
        streams = [stream]
        stack.callback(lambda: [s.stop() for s in streams])
        w.secrets += [TOKEN, BEARER, PASSWORD, TLS_PASSWORD]
        yield Web(w, [master.pid, *workers], port, app, app_port, tls_port, stream, base,
                  streams)


def curl(*args: str) -> str:
    r = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def raw_http(port: int, *chunks: bytes, pause: float = 0.0, responses: int = 1) -> bytes:
    """Send chunks on one connection (pausing between them), read `responses` replies."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for c in chunks:
            s.sendall(c)
            time.sleep(pause)
        got = b""
        while got.count(b"HTTP/1.1 ") < responses or not got.endswith(b"\n"):
            more = s.recv(65536)
            if not more:
                break
            got += more
        return got


def one_response(c: socket.socket) -> bytes:
    """The app's whole reply (its head and its "ok\\n" body may come in two writes)."""
    got = b""
    while not got.endswith(b"ok\n"):
        more = c.recv(4096)
        assert more, got
        got += more
    return got


def _path(r: dict[str, Any]) -> str:
    return str(r.get("path", ""))


def test_keepalive_requests_each_make_one_record(web: Web) -> None:
    urls = [f"http://127.0.0.1:{web.nginx_port}/ok/ka{i}?token={TOKEN}" for i in range(3)]
    out = curl("-H", f"Authorization: Bearer {BEARER}", *urls)
    assert out == "ok\n" * 3
    rows = web.w.wait_rows("http", "-p", str(web.nginx[1]), n=3,
                           keep=lambda r: _path(r).startswith("/ok/ka"))
    assert [(r["method"], _path(r), r["status"], r["role"], r["comm"]) for r in rows] == [
        ("GET", f"/ok/ka{i}?token=[REDACTED:secret]", 200, "server", "nginx") for i in range(3)]
    assert len({r["conn"] for r in rows}) == 1, "keep-alive: one connection"
    live = [e for e in web.stream.events() if e["kind"] == "l7"
            and _path(e).startswith("/ok/ka")]
    assert [e["conn"] for e in live] == [r["conn"] for r in rows]
    assert all(e.get("peer", "").startswith("127.0.0.1:") for e in live)


def test_files_sent_with_sendfile_keep_the_connection_in_sync(web: Web) -> None:
    css = web.base / "www" / "static" / "app.css"
    urls = [f"http://127.0.0.1:{web.nginx_port}/static/app.css?v={i}" for i in range(3)]
    out = curl(*urls, f"http://127.0.0.1:{web.nginx_port}/ok/after-static")
    assert len(out) == 3 * css.stat().st_size + 3
    rows = web.w.wait_rows("http", "-p", str(web.nginx[1]), n=4,
                           keep=lambda r: "static" in _path(r))
    assert [(_path(r), r["status"], r["partial"]) for r in rows] == [
        *[(f"/static/app.css?v={i}", 200, False) for i in range(3)],
        ("/ok/after-static", 200, False)]
    assert all(r["resp_bytes"] > css.stat().st_size for r in rows[:3])
    sent = [e for e in web.stream.events() if e.get("syscall") == "sendfile"
            and e["pid"] == web.nginx[1]]
    assert len(sent) >= 3 and all("payload" not in e for e in sent)


def test_pipelined_requests_pair_in_order_and_a_500_is_found_by_status(web: Web) -> None:
    heads = [f"GET /{p} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
             for p in ("ok/pipe0", "fail/pipe1", "ok/pipe2", "ok/pipe3")]
    got = raw_http(web.nginx_port, b"".join(heads), responses=4)
    assert got.count(b"HTTP/1.1 200") == 3 and got.count(b"HTTP/1.1 500") == 1
    rows = web.w.wait_rows("http", "-p", str(web.nginx[1]), n=4,
                           keep=lambda r: "/pipe" in _path(r))
    assert [(_path(r), r["status"], r["error"]) for r in rows] == [
        ("/ok/pipe0", 200, False), ("/fail/pipe1", 500, True), ("/ok/pipe2", 200, False),
        ("/ok/pipe3", 200, False)]
    failed = web.w.query("http", "-p", str(web.nginx[1]), "--status", "5xx")
    assert [_path(r) for r in failed] == ["/fail/pipe1"]


def test_a_request_split_across_writes_parses(web: Web) -> None:
    parts = [b"GET /ok/spl", b"it?part=1 HTTP/1.1\r\nHo", b"st: a\r\nX-Trace: 1\r\n\r\n"]
    assert b"200 OK" in raw_http(web.nginx_port, *parts, pause=0.15)
    rows = web.w.wait_rows("http", "-p", str(web.nginx[1]), n=1,
                           keep=lambda r: "/ok/split" in _path(r))
    assert [(r["method"], _path(r), r["status"], r["partial"]) for r in rows] == [
        ("GET", "/ok/split?part=1", 200, False)]
    reads = [e for e in web.stream.events() if e.get("syscall") in ("read", "recvfrom")
             and e.get("conn") is None and e["pid"] == web.nginx[1]
             and "spl" in str(e.get("payload", ""))]
    assert reads, "the head did not arrive in pieces: the test proves nothing"


def test_slow_handlers_show_their_latency_and_slow_finds_exactly_them(web: Web) -> None:
    base = f"http://127.0.0.1:{web.app_port}"
    for path in ("/slow/a", "/fast/b", "/slow/c", "/fail/d"):
        curl("-o", "/dev/null", f"{base}{path}?token={TOKEN}")
    keep = ("/slow/a", "/fast/b", "/slow/c", "/fail/d")
    rows = web.w.wait_rows("http", "-p", str(web.app.pid), n=4,
                           keep=lambda r: _path(r).split("?")[0] in keep)
    assert [(_path(r).split("?")[0], r["status"]) for r in rows] == [
        ("/slow/a", 200), ("/fast/b", 200), ("/slow/c", 200), ("/fail/d", 500)]
    assert [r["latency_ms"] >= 300 for r in rows] == [True, False, True, False]
    slow = web.w.query("http", "-p", str(web.app.pid), "--slow", "200ms")
    assert [_path(r).split("?")[0] for r in slow if _path(r).split("?")[0] in keep] == [
        "/slow/a", "/slow/c"]
    assert all(r["latency_ms"] >= 200 for r in slow)


def test_json_body_is_never_shown(web: Web) -> None:
    body = f'{{"user": "bob", "password": "{PASSWORD}"}}'
    assert curl("-X", "POST", "-H", "Content-Type: application/json", "-d", body,
                f"http://127.0.0.1:{web.app_port}/login") == '{"ok": true}'
    (row,) = web.w.wait_rows("http", "-p", str(web.app.pid), "--method", "POST", n=1,
                             keep=lambda r: _path(r) == "/login")
    assert (row["status"], row["req_bytes"] > len(body)) == (201, True)
    payloads = " ".join(str(e.get("payload", "")) for e in web.stream.events())
    assert "[REDACTED:secret]" in payloads  # the syscall bytes were seen, and redacted


def test_tls_plaintext_parses_on_its_connection_and_ciphertext_is_summarized(web: Web) -> None:
    body = f'{{"password": "{TLS_PASSWORD}"}}'
    out = curl("-k", "-H", f"Authorization: Bearer {BEARER}", "-d", body,
               f"https://127.0.0.1:{web.tls_port}/tls/login")
    assert out == '{"ok": true}'
    (row,) = web.w.wait_rows("http", "-p", str(web.app.pid), n=1,
                             keep=lambda r: _path(r) == "/tls/login")
    assert (row["method"], row["status"], row["tls"], row["role"]) == ("POST", 201, True,
                                                                       "server")
    conn_id, fd = row["conn"], row["fd"]
    events = web.stream.events()
    (closed,) = [e for e in events if e["kind"] == "conn" and e["conn"] == conn_id
                 and e["state"] == "closed"]
    assert closed["tls"] is True and closed["proto"] == "http" and closed["bytes_in"] > 0
    tls = [e for e in events if e["kind"] == "tls" and e.get("fd") == fd
           and e["pid"] == web.app.pid]
    assert tls, "no TLS event carried the connection's fd"
    wire = [e for e in events if e["kind"] == "syscall" and e.get("fd") == fd
            and e["pid"] == web.app.pid and e.get("ciphertext")]
    assert wire, "no syscall on the TLS connection was marked as ciphertext"
    assert not any("payload" in e or "captured" in e for e in wire)


def test_a_client_started_after_its_session_gets_tls_probes(web: Web) -> None:
    exe = web.base / "psl7curl"  # its own comm: no other curl on the host is traced
    shutil.copy(shutil.which("curl") or "curl", exe)
    s = web.w.trace("-n", exe.name)
    web.streams.append(s)
    r = subprocess.run([str(exe), "-sSk", "--max-time", "10",
                        f"https://127.0.0.1:{web.tls_port}/tls/exec?token={TOKEN}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    (row,) = web.w.wait_rows("http", "-n", exe.name, n=1,
                             keep=lambda r: _path(r).startswith("/tls/exec"))
    assert (row["role"], row["status"], row["tls"], row["comm"]) == ("client", 200, True,
                                                                     exe.name)
    assert row["path"] == "/tls/exec?token=[REDACTED:secret]"


def test_a_connection_open_before_the_session_is_preexisting(web: Web) -> None:
    other = subprocess.Popen([sys.executable, "-c", APP, str(web.base / "cert.pem"),
                              str(web.base / "key.pem")], text=True, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None
        port = int(other.stdout.readline().split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            req = b"GET /ok/before HTTP/1.1\r\nHost: a\r\n\r\n"
            c.sendall(req)
            assert b"200 OK" in one_response(c)
            s = web.w.trace("-p", str(other.pid))
            web.streams.append(s)
            # The server's thread sat in recv() when the session started: that call's bytes
            # are not seen (its entry was not traced). The next request's are.
            for tag in (b"after1", b"after2"):
                c.sendall(req.replace(b"before", tag))
                assert b"200 OK" in one_response(c)
            mine = f"127.0.0.1:{c.getsockname()[1]}"
            rows = web.w.wait_rows("conns", "-p", str(other.pid), n=1,
                                   keep=lambda r: r.get("peer") == mine)
        (conn,) = rows
        assert (conn["preexisting"], conn["tcp_state"], conn["role"], conn["local"]) == (
            True, "ESTABLISHED", "server", f"127.0.0.1:{port}")
        (req_row,) = web.w.wait_rows("http", "-p", str(other.pid), n=1,
                                     keep=lambda r: _path(r) == "/ok/after2")
        assert req_row["conn"] == conn["conn"] and req_row["status"] == 200
    finally:
        other.kill()
        other.wait()


CLIENT = r"""
import socket, struct, sys
sys.stdin.readline()
closed, resetting = int(sys.argv[1]), int(sys.argv[2])
try:  # blocking: connect() itself fails (a non-blocking one reports it via SO_ERROR)
    socket.create_connection(("127.0.0.1", closed))
except ConnectionRefusedError:
    print("refused", flush=True)
s = socket.create_connection(("127.0.0.1", resetting), timeout=5)
s.sendall(b"x")  # the server reads it, then resets the connection
try:
    s.recv(10)
except ConnectionResetError:
    print("reset", flush=True)
"""


def test_refused_and_reset_connections_are_errors(web: Web) -> None:
    closed = free_port()  # nothing listens there
    rst = socket.create_server(("127.0.0.1", 0))
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(closed),
                               str(rst.getsockname()[1])], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        s = web.w.trace("-p", str(client.pid))
        web.streams.append(s)
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        conn, _ = rst.accept()
        assert conn.recv(1) == b"x"
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: the client's recv gets a reset
        out, _ = client.communicate(timeout=20)
        assert out.split() == ["refused", "reset"]
        rows = web.w.wait_rows("conns", "-p", str(client.pid), "--errors", n=2)
        assert sorted((r["state"], r["peer"].rsplit(":", 1)[1], r["errors"]) for r in rows) \
            == sorted([("failed", str(closed), {"refused": 1}),
                       ("closed", str(rst.getsockname()[1]), {"reset": 1})])
    finally:
        rst.close()
        if client.poll() is None:
            client.kill()
            client.wait()


def test_conns_limit_returns_the_latest(web: Web) -> None:
    ports = []
    for i in range(8):
        with socket.create_connection(("127.0.0.1", web.nginx_port), timeout=10) as c:
            ports.append(c.getsockname()[1])
            c.sendall(f"GET /ok/lim{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                      .encode())
            while c.recv(4096):
                pass
    peers = {f"127.0.0.1:{p}" for p in ports}
    web.w.wait_rows("conns", "-p", str(web.nginx[1]), "--limit", "50", n=8,
                    keep=lambda r: r.get("peer") in peers and r["state"] == "closed")
    latest = web.w.query("conns", "-p", str(web.nginx[1]), "--limit", "5")
    assert [r["peer"] for r in latest] == [f"127.0.0.1:{p}" for p in ports[-5:]]
    r = web.w.daemon.cli("conns", "-p", str(web.nginx[1]), "--limit", "5")
    assert "--before" in r.stderr and r.returncode == 0  # a full page says so


def test_zz_no_secret_anywhere(web: Web) -> None:
    """Last in the module: everything the tests above sent, looked for everywhere."""
    for s in web.streams:
        s.stop()
    web.w.outputs += [s.err.read_text() for s in web.streams]
    web.w.assert_no_secrets(web.streams)
