"""Regenerate the L7 golden captures: real clients and servers on loopback, through a relay.

    sudo .venv/bin/python tests/data/l7/capture.py [SCENARIO ...]

Needs (Debian): curl nginx postgresql redis-server mariadb-server mariadb-client dnsutils,
and in the venv (capture only, not a runtime dependency): psycopg[binary],
mysql-connector-python. Every scenario starts its server in a temp dir, puts a recording
relay (tests/data/l7/proxy.py) between client and server, and writes <scenario>.json:
the chunks each way (hex, ts relative to the first), and `expect`, the requests the
scenario itself sent and the answers it knows the server gives (ground truth written
here, not parser output). Review diffs by hand: timings and server versions change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dns_server import DnsServer
from proxy import TcpRelay, UdpRelay

HERE = Path(__file__).resolve().parent
SECRET = "s3cr3t-Hunter2-tok"  # every scenario sends it somewhere; no record may show it
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0"
       ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
Conns = list[list[tuple[str, float, bytes]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, check=False, capture_output=True, timeout=60, **kw)


def save(name: str, conns: Conns, expect: list[dict[str, Any]], how: str, role: str = "client",
         transport: str = "tcp") -> None:
    t0 = min((c[0][1] for c in conns if c), default=0.0)
    doc = {"scenario": name, "how": how, "transport": transport, "role": role,
           "conns": [[[d, round(ts - t0, 6), data.hex()] for d, ts, data in c] for c in conns
                     if c],
           "expect": expect}
    (HERE / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{name}: {len(doc['conns'])} conn(s), "
          f"{sum(len(c) for c in doc['conns'])} chunks, {len(expect)} expected records")


# -- HTTP: python http.server (HTTP/1.1 keep-alive) and nginx -------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._send(200, b"hello world\n")

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first chunk\n", b"x" * 300, b"last\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/boom":
            self._send(500, b'{"error":"internal"}', "application/json")
        elif path == "/missing":
            self._send(404, b"not found\n")
        elif path == "/slow":
            time.sleep(0.3)
            self._send(200, b"slow\n")
        elif path == "/big":
            self._send(200, b"B" * 20000)
        elif path == "/nocontent":
            self.send_response(204)
            self.end_headers()
        else:
            self._send(200, b"hello world\n")

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        self._send(201, b'{"ok":true}', "application/json")


class CloseHandler(BaseHTTPRequestHandler):
    """HTTP/1.0 without Content-Length: the body ends when the server closes."""

    def log_message(self, *a: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                         + b"body until close\n" * 20)


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def curl(*args: str) -> None:
    r = run(["curl", "-s", "-o", "/dev/null", "--http1.1", *args])
    assert r.returncode == 0, r.stderr


def cap_http_curl() -> None:
    with http_server(Handler) as port:
        relay = TcpRelay(("127.0.0.1", port))
        base = f"http://127.0.0.1:{relay.port}"
        curl("-H", f"Authorization: Bearer {JWT}", "-A", "periscope-golden/1",
             f"{base}/ok?token={SECRET}&page=2", f"{base}/missing", f"{base}/boom",
             f"{base}/chunked", f"{base}/big", f"{base}/nocontent", f"{base}/slow")
        curl("-H", "Content-Type: application/json", "-H", "Expect: 100-continue",
             "--data-binary", json.dumps({"user": "alice", "password": SECRET,
                                          "pad": "p" * 2000}), f"{base}/login")
        curl("-H", "Content-Type: application/json", "--data-binary",
             json.dumps({"user": "bob", "password": SECRET}), f"{base}/login")
        conns = relay.finish()
    save("http_curl", conns, [
        {"method": "GET", "path": "/ok?token=[REDACTED:secret]&page=2", "status": 200},
        {"method": "GET", "path": "/missing", "status": 404, "error": True},
        {"method": "GET", "path": "/boom", "status": 500, "error": True},
        {"method": "GET", "path": "/chunked", "status": 200},
        {"method": "GET", "path": "/big", "status": 200, "resp_bytes_min": 20000},
        {"method": "GET", "path": "/nocontent", "status": 204},
        {"method": "GET", "path": "/slow", "status": 200, "latency_ms_min": 300},
        {"method": "POST", "path": "/login", "status": 201, "req_bytes_min": 2000},
        {"method": "POST", "path": "/login", "status": 201},
    ], "curl --http1.1: 7 URLs keep-alive on one connection (python HTTP/1.1 server), "
       "then a POST with Expect: 100-continue and a plain POST (one connection each)")


NGINX_CONF = """
daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port}; root {d}/www;
    location = /nocontent {{ return 204; }}
    location = /fail {{ return 500; }}
  }}
}}
"""


@contextlib.contextmanager
def nginx() -> Iterator[int]:
    d = tempfile.mkdtemp(prefix="l7-nginx-")
    os.chmod(d, 0o755)  # the worker (not root) serves www/
    os.makedirs(f"{d}/www")
    Path(f"{d}/www/index.html").write_text("<h1>hello</h1>\n" * 10)
    Path(f"{d}/www/a.txt").write_text("a" * 1000)
    port = free_port()
    Path(f"{d}/nginx.conf").write_text(NGINX_CONF.format(d=d, port=port))
    p = subprocess.Popen(["nginx", "-p", d, "-c", f"{d}/nginx.conf"],
                         stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def cap_http_nginx_pipelined() -> None:
    with nginx() as port:
        relay = TcpRelay(("127.0.0.1", port))
        reqs = [f"GET /index.html?api_key={SECRET} HTTP/1.1\r\nHost: localhost\r\n"
                "User-Agent: pipeline-test\r\n\r\n",
                "GET /a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
                "GET /nothere HTTP/1.1\r\nHost: localhost\r\n\r\n",
                "HEAD /a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
                "GET /nocontent HTTP/1.1\r\nHost: localhost\r\n\r\n",
                # nginx closes the connection after a 500: it goes last
                "GET /fail HTTP/1.1\r\nHost: localhost\r\n\r\n"]
        with socket.create_connection(("127.0.0.1", relay.port)) as s:
            s.sendall("".join(reqs).encode())  # all six in one write: pipelined
            while s.recv(65536):
                pass
        # A request split across several writes, then a conditional GET answered 304.
        etag = ""
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"HEAD /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = b""
            while chunk := s.recv(4096):
                head += chunk
            etag = next(ln.split(":", 1)[1].strip() for ln in head.decode().split("\r\n")
                        if ln.lower().startswith("etag:"))
        with socket.create_connection(("127.0.0.1", relay.port)) as s:
            for part in (b"GE", b"T /a.t", b"xt HTTP/1.1\r\nHo", b"st: localhost\r\n",
                         f"If-None-Match: {etag}\r\nConnection: close\r\n\r\n".encode()):
                s.sendall(part)
                time.sleep(0.05)
            while s.recv(65536):
                pass
        conns = relay.finish()
    save("http_nginx_pipelined", conns, [
        {"method": "GET", "path": "/index.html?api_key=[REDACTED:secret]", "status": 200},
        {"method": "GET", "path": "/a.txt", "status": 200},
        {"method": "GET", "path": "/nothere", "status": 404, "error": True},
        {"method": "HEAD", "path": "/a.txt", "status": 200},
        {"method": "GET", "path": "/nocontent", "status": 204},
        {"method": "GET", "path": "/fail", "status": 500, "error": True},
        {"method": "GET", "path": "/a.txt", "status": 304},
    ], "nginx: six pipelined requests in one write (incl. HEAD, 204, 404, 500); then a "
       "conditional GET written in five pieces, answered 304")


def cap_http_close_delimited() -> None:
    with http_server(CloseHandler) as port:
        relay = TcpRelay(("127.0.0.1", port))
        curl("-0", f"http://127.0.0.1:{relay.port}/legacy")
        conns = relay.finish()
    save("http_close_delimited", conns,
         [{"method": "GET", "path": "/legacy", "status": 200, "resp_bytes_min": 340}],
         "curl -0 against an HTTP/1.0 server whose body ends at close (no Content-Length)")


# -- PostgreSQL -------------------------------------------------------------------------------
@contextlib.contextmanager
def postgres() -> Iterator[int]:
    d = tempfile.mkdtemp(prefix="l7-pg-")
    os.chown(d, 101, 104) if os.geteuid() == 0 else None
    su = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = free_port()
    r = run([*su, "initdb", "-D", f"{d}/data", "-A", "trust", "-U", "postgres"])
    assert r.returncode == 0, r.stderr
    r = run([*su, "pg_ctl", "-D", f"{d}/data", "-l", f"{d}/log", "-w", "-o",
             f"-p {port} -k {d} -c listen_addresses=127.0.0.1", "start"])
    assert r.returncode == 0, r.stderr + r.stdout
    try:
        yield port
    finally:
        run([*su, "pg_ctl", "-D", f"{d}/data", "-m", "immediate", "stop"])
        shutil.rmtree(d, ignore_errors=True)


def cap_pg_psql() -> None:
    with postgres() as port:
        relay = TcpRelay(("127.0.0.1", port))
        sql = ("CREATE TABLE users (id int, name text, email text);\n"
               "INSERT INTO users VALUES (1, 'alice', 'alice@example.com'), (2, 'bob', 'b@x.io');\n"
               "SELECT name FROM users WHERE id = 2;\n"
               "SELECT * FROM missing_table;\n"
               f"ALTER USER postgres PASSWORD '{SECRET}';\n"
               "SELECT generate_series(1, 500);\n"
               "UPDATE users SET name = 'carol' WHERE id = 1;\n")
        r = run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(relay.port), "-U", "postgres",
                 "-d", "postgres", "-c", "SELECT 1"])
        assert r.returncode == 0, r.stderr
        r = run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(relay.port), "-U", "postgres",
                 "-d", "postgres"], input=sql.encode())
        conns = relay.finish()
    save("pgsql_psql", conns, [
        {"query": "SELECT ?", "status": "SELECT 1"},
        {"query": "CREATE TABLE users (id int, name text, email text);",
         "status": "CREATE TABLE"},
        {"query": "INSERT INTO users VALUES (?, ?, ?), (?, ?, ?);", "status": "INSERT 0 2"},
        {"query": "SELECT name FROM users WHERE id = ?;", "status": "SELECT 1"},
        {"query": "SELECT * FROM missing_table;", "status": "42P01", "error": True},
        {"query": "ALTER USER postgres PASSWORD ?;", "status": "ALTER ROLE"},
        {"query": "SELECT generate_series(?, ?);", "status": "SELECT 500"},
        {"query": "UPDATE users SET name = ? WHERE id = ?;", "status": "UPDATE 1"},
    ], "psql (SSLRequest refused, startup, simple query protocol): -c, then a script on "
       "stdin; one connection each")


def cap_pg_psycopg() -> None:
    import psycopg

    with postgres() as port:
        relay = TcpRelay(("127.0.0.1", port))
        dsn = f"host=127.0.0.1 port={relay.port} user=postgres dbname=postgres sslmode=disable"
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE TABLE t (id int, secret text)")
            c.execute("INSERT INTO t VALUES (%s, %s)", (1, SECRET))
            c.execute("SELECT id FROM t WHERE id = %s", (1,)).fetchall()
            c.execute("SELECT id FROM t WHERE id = %s", (7,), prepare=True).fetchall()
            c.execute("SELECT id FROM t WHERE id = %s", (1,), prepare=True).fetchall()
            with contextlib.suppress(psycopg.Error):
                c.execute("SELECT nope FROM t WHERE id = %s", (1,))
            c.execute("SELECT count(*) FROM t").fetchall()
        conns = relay.finish()
    save("pgsql_psycopg", conns, [
        {"query": "CREATE TABLE t (id int, secret text)", "status": "CREATE TABLE"},
        {"query": "INSERT INTO t VALUES ($1, $2)", "status": "INSERT 0 1"},
        {"query": "SELECT id FROM t WHERE id = $1", "status": "SELECT 1"},
        {"query": "SELECT id FROM t WHERE id = $1", "status": "SELECT 0"},
        {"query": "SELECT id FROM t WHERE id = $1", "status": "SELECT 1"},
        {"query": "SELECT nope FROM t WHERE id = $1", "status": "42703", "error": True},
        {"query": "SELECT count(*) FROM t", "status": "SELECT 1"},
    ], "psycopg 3 (extended protocol: Parse/Bind/Describe/Execute/Sync, unnamed and, with "
       "prepare=True, named statements reused)")


# -- Redis -----------------------------------------------------------------------------------
@contextlib.contextmanager
def redis() -> Iterator[int]:
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        p.terminate()
        p.wait()


def cap_redis_cli() -> None:
    with redis() as port:
        relay = TcpRelay(("127.0.0.1", port))
        cli = ["redis-cli", "-p", str(relay.port)]
        script = (f"AUTH {SECRET}\nSET user:1 alice\nGET user:1\nGET nokey\nINCR counter\n"
                  "LPUSH l a b c\nLRANGE l 0 -1\nHSET h f v\nHGETALL h\nGET l\nPING\n")
        r = run(cli, input=script.encode())
        assert r.returncode == 0, r.stderr
        batch = "".join(f"SET key:{i} v{i}\r\n" for i in range(20)) + "GET key:7\r\n"
        resp = b"".join(
            b"*%d\r\n" % len(w) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in w)
            for w in (ln.encode().split() for ln in batch.strip().split("\r\n")))
        r = run([*cli, "--pipe"], input=resp)
        assert r.returncode == 0, r.stderr
        r = run([*cli, "-3"], input=b"HSET h2 a 1\nHGETALL h2\nSMEMBERS nos\nGET user:1\n")
        assert r.returncode == 0, r.stderr
        with socket.create_connection(("127.0.0.1", relay.port)) as s:  # inline commands
            s.sendall(b"PING\r\nSET inline:1 hello\r\nGET inline:1\r\nBOGUS\r\nQUIT\r\n")
            while s.recv(65536):
                pass
        conns = relay.finish()
    # redis-cli asks COMMAND DOCS first (for hints), --pipe ends with ECHO <20 random bytes>
    # ("ECHO *": the test matches a trailing * as a prefix)
    first = [("COMMAND DOCS", "array"), ("AUTH [REDACTED:password]", "ERR"),
             ("SET user:1 alice", "OK"),
             ("GET user:1", "bulk"), ("GET nokey", "nil"), ("INCR counter", "integer"),
             ("LPUSH l a b c", "integer"), ("LRANGE l 0 -1", "array"),
             ("HSET h f v", "integer"), ("HGETALL h", "array"), ("GET l", "WRONGTYPE"),
             ("PING", "PONG")]
    pipe = [(f"SET key:{i} v{i}", "OK") for i in range(20)] + [("GET key:7", "bulk"),
                                                                 ("ECHO *", "bulk")]
    resp3 = [("HELLO 3", "map"), ("COMMAND DOCS", "map"), ("HSET h2 a 1", "integer"),
             ("HGETALL h2", "map"),
             ("SMEMBERS nos", "set"), ("GET user:1", "bulk")]
    inline = [("PING", "PONG"), ("SET inline:1 hello", "OK"), ("GET inline:1", "bulk"),
              ("BOGUS", "ERR"), ("QUIT", "OK")]
    expect = [{"command": c, "status": s, **({"error": True} if s in ("ERR", "WRONGTYPE")
                                               else {})}
              for c, s in first + pipe + resp3 + inline]
    save("redis_cli", conns, expect,
         "redis-cli (RESP2; AUTH without a configured password -> ERR), redis-cli --pipe "
         "with 21 pipelined commands, redis-cli -3 (HELLO 3, RESP3 map/set), and inline "
         "commands over a raw socket; one connection each")


# -- MySQL / MariaDB ---------------------------------------------------------------------------
@contextlib.contextmanager
def mariadb() -> Iterator[int]:
    d = tempfile.mkdtemp(prefix="l7-my-")
    shutil.chown(d, "mysql", "mysql")
    port = free_port()
    r = run(["mariadb-install-db", "--user=mysql", f"--datadir={d}/data",
             "--auth-root-authentication-method=normal", "--skip-test-db"])
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen(["mariadbd", "--user=mysql", f"--datadir={d}/data",
                          f"--socket={d}/sock", f"--port={port}", "--bind-address=127.0.0.1",
                          "--skip-log-bin", f"--pid-file={d}/pid", "--skip-ssl",
                          "--skip-name-resolve"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 60)
        r = run(["mysql", f"--socket={d}/sock", "-uroot", "-e",
                 "CREATE DATABASE app; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'apppw';"
                 " GRANT ALL ON *.* TO 'app'@'127.0.0.1'"])
        assert r.returncode == 0, r.stderr
        yield port
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def cap_mysql() -> None:
    import mysql.connector

    with mariadb() as port:
        relay = TcpRelay(("127.0.0.1", port))
        sql = ("CREATE TABLE users (id INT, name VARCHAR(20));\n"
               "INSERT INTO users VALUES (1, 'alice'), (2, 'bob');\n"
               "SELECT name FROM users WHERE id = 2;\n"
               "SELECT * FROM missing_table;\n"
               f"ALTER USER 'app'@'127.0.0.1' IDENTIFIED BY '{SECRET}';\n"
               "SELECT seq FROM seq_1_to_300;\n")
        r = run(["mysql", "-h", "127.0.0.1", "-P", str(relay.port), "-uapp", "-papppw",
                 "--ssl=0", "--force", "app"], input=sql.encode())
        assert b"1146" in r.stderr, r.stderr
        conns1 = relay.finish()
        relay = TcpRelay(("127.0.0.1", port))
        c = mysql.connector.connect(host="127.0.0.1", port=relay.port, user="app",
                                    password=SECRET, database="app", ssl_disabled=True,
                                    use_pure=True)
        cur = c.cursor(prepared=True)
        cur.execute("SELECT name FROM users WHERE id = %s", (1,))
        cur.fetchall()
        cur.execute("SELECT name FROM users WHERE id = %s", (2,))
        cur.fetchall()
        cur.execute("UPDATE users SET name = %s WHERE id = %s", ("carol", 1))
        cur.close()
        c.close()
        conns = conns1 + relay.finish()
    save("mysql_cli", conns, [
        {"query": "CREATE TABLE users (id INT, name VARCHAR(?))", "status": "OK"},
        {"query": "INSERT INTO users VALUES (?, ?), (?, ?)", "status": "OK"},
        {"query": "SELECT name FROM users WHERE id = ?", "status": "ROWS 1"},
        {"query": "SELECT * FROM missing_table", "status": "1146", "error": True},
        {"query": "ALTER USER ?@? IDENTIFIED BY ?", "status": "OK"},
        {"query": "SELECT seq FROM seq_1_to_300", "status": "ROWS 300"},
        {"query": "SET NAMES ? COLLATE ?", "status": "OK"},
        {"query": "SET @@session.autocommit = OFF", "status": "OK"},
        {"query": "SELECT name FROM users WHERE id = ?", "status": "ROWS 1"},
        {"query": "SELECT name FROM users WHERE id = ?", "status": "ROWS 1"},
        {"query": "UPDATE users SET name = ? WHERE id = ?", "status": "OK"},
    ], "the mariadb client (handshake, COM_QUERY script on stdin), then "
       "mysql-connector-python with prepared=True (COM_STMT_PREPARE/EXECUTE)")


# -- DNS ---------------------------------------------------------------------------------------
def cap_dns() -> None:
    srv = DnsServer()
    udp = UdpRelay(("127.0.0.1", srv.port))
    tcp = TcpRelay(("127.0.0.1", srv.port))
    for args in (["example.test", "A"], ["example.test", "AAAA"], ["nxname.test", "A"],
                 ["example.test", "MX"]):
        r = run(["dig", "+tries=1", "+time=2", "-p", str(udp.port), "@127.0.0.1", *args])
        assert r.returncode == 0, r.stdout
    r = run(["dig", "+tcp", "-p", str(tcp.port), "@127.0.0.1", "example.test", "A"])
    assert r.returncode == 0, r.stdout
    conns_udp, conns_tcp = udp.finish(), tcp.finish()
    srv.close()
    save("dns_udp", conns_udp, [
        {"qname": "example.test", "qtype": "A", "rcode": "NOERROR",
         "answers": ["10.1.2.3", "10.1.2.4"]},
        {"qname": "example.test", "qtype": "AAAA", "rcode": "NOERROR", "answers": ["fd00::1"]},
        {"qname": "nxname.test", "qtype": "A", "rcode": "NXDOMAIN", "error": True},
        {"qname": "example.test", "qtype": "MX", "rcode": "NOERROR", "answers": []},
    ], "dig over UDP against tests/data/l7/dns_server.py", transport="udp")
    save("dns_tcp", conns_tcp, [
        {"qname": "example.test", "qtype": "A", "rcode": "NOERROR",
         "answers": ["10.1.2.3", "10.1.2.4"]},
    ], "dig +tcp against tests/data/l7/dns_server.py")


SCENARIOS: dict[str, Callable[[], None]] = {
    "http": cap_http_curl, "nginx": cap_http_nginx_pipelined,
    "http_close": cap_http_close_delimited, "pgsql": cap_pg_psql, "psycopg": cap_pg_psycopg,
    "redis": cap_redis_cli, "mysql": cap_mysql, "dns": cap_dns,
}


def main() -> None:
    wanted = sys.argv[1:] or list(SCENARIOS)
    for name in wanted:
        SCENARIOS[name]()


if __name__ == "__main__":
    main()
