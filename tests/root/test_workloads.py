"""Real servers started by the tests (nginx, redis, postgres), real clients, redacted payloads."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.root.conftest import Daemon, TraceStream, wait_for


def pg_bin() -> Path | None:
    """The server binaries of the installed PostgreSQL, whatever its major version:
    `pg_config --bindir` where it names the server's, else the newest /usr/lib/postgresql/N."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    versions = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else -1)
    return versions[-1].parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def payloads(events: list[dict[str, Any]]) -> str:
    return "\n".join(str(e.get("payload", "")) for e in events)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[int]:
    if not shutil.which("nginx"):
        pytest.skip("nginx not installed")
    port = free_port()
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("hello from nginx\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}/body;
  proxy_temp_path {tmp_path}/proxy;
  fastcgi_temp_path {tmp_path}/fcgi;
  uwsgi_temp_path {tmp_path}/uwsgi;
  scgi_temp_path {tmp_path}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp_path)],
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open(port), 10, what="nginx")
    yield port
    proc.terminate()
    proc.wait(10)


def test_nginx_by_name_redacts_curl_credentials(daemon: Daemon, nginx: int) -> None:
    """-n nginx follows master and already-running workers; curl's secrets never leave."""
    t = TraceStream(daemon, "-n", "nginx", "-d", "4s", "--level", "payload", "--reason", "t")
    t.wait_started()
    for _ in range(3):
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-u", "alice:Tr0ub4dor&3xyz",
                        "-H", "Cookie: session=f00dfacecafe1234beef",
                        "-H", "X-Api-Key: k3y-0123456789abcdef0123",
                        f"http://127.0.0.1:{nginx}/index.html?token=qwertyuiopasdfgh1234"],
                       check=True, timeout=10)
    _rc, events, err = t.finish()
    text = payloads(events)
    assert "GET /index.html?token=" in text, err
    assert "HTTP/1.1 " in text and "Content-Type: text/html" in text  # ordinary headers kept
    for secret in ("qwertyuiopasdfgh1234", "f00dfacecafe1234beef", "k3y-0123456789abcdef0123",
                   "YWxpY2U6VHIwdWI0ZG9yJjN4eXo="):  # base64 of alice:Tr0ub4dor&3xyz
        assert secret not in json.dumps(events)
    accepts = [e for e in events if e.get("syscall") in ("accept", "accept4") and e["ret"] >= 0]
    assert accepts and all(e["peer"].startswith("127.0.0.1:") for e in accepts)
    assert {e["comm"] for e in events if "comm" in e} == {"nginx"}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[tuple[int, int]]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL)
    wait_for(lambda: port_open(port), 10, what="redis")
    yield port, proc.pid
    proc.terminate()
    proc.wait(10)


def test_redis_auth_and_requirepass_redacted(daemon: Daemon, redis: tuple[int, int]) -> None:
    port, pid = redis
    t = TraceStream(daemon, "-p", str(pid), "-d", "4s", "--level", "payload", "--reason", "t")
    t.wait_started()
    cli = ["redis-cli", "-p", str(port)]
    subprocess.run([*cli, "SET", "greeting", "hello-world"], check=True, capture_output=True)
    subprocess.run([*cli, "CONFIG", "SET", "requirepass", "Sup3rS3cretRedisPw"], check=True,
                   capture_output=True)
    subprocess.run([*cli, "--no-auth-warning", "-a", "Sup3rS3cretRedisPw", "GET", "greeting"],
                   check=True, capture_output=True)
    _rc, events, _ = t.finish()
    blob = json.dumps(events)
    assert "Sup3rS3cretRedisPw" not in blob
    text = payloads(events)
    assert "greeting" in text and "hello-world" in text
    assert "requirepass" in text and "[REDACTED:" in text


@pytest.fixture
def postgres() -> Iterator[tuple[int, int]]:
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server installed (pg_config / /usr/lib/postgresql)")
    base = Path(tempfile.mkdtemp(prefix="periscope-pg-"))  # pytest's tmp is 0700: postgres
    base.chmod(0o755)                                       # could not reach it
    data = base / "pg"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "postgres"], check=True, capture_output=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen([*run_as, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                             "-k", str(data), "-c", "listen_addresses=127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open(port), 30, what="postgres")
    pid = int((data / "postmaster.pid").read_text().split()[0])
    yield port, pid
    proc.terminate()
    proc.wait(30)
    shutil.rmtree(base, ignore_errors=True)


def test_postgres_password_literal_redacted(daemon: Daemon, postgres: tuple[int, int]) -> None:
    """Backends are forked after the trace starts: fork inheritance follows them."""
    port, postmaster = postgres
    t = TraceStream(daemon, "-p", str(postmaster), "-d", "6s", "--level", "payload",
                    "--reason", "t")
    t.wait_started()
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    sql = ("CREATE ROLE app LOGIN PASSWORD 'Pg-s3cret-Passw0rd';"
           " SELECT 'visible-literal' AS col, 41 + 1 AS answer;")
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", sql],
                   check=True, capture_output=True, env=env, timeout=30)
    time.sleep(0.5)
    _rc, events, _ = t.finish()
    assert "Pg-s3cret-Passw0rd" not in json.dumps(events)
    forks = [e for e in events if e["kind"] == "fork" and e["pid"] == postmaster]
    assert forks, "the backend fork was not seen"
    text = payloads(events)
    assert "CREATE ROLE app LOGIN PASSWORD" in text
    assert "[REDACTED:" in text


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    proc = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                             str(cert), "-key", str(key), "-quiet"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open(port), 15, what="openssl s_server")
    yield port, proc
    proc.kill()
    proc.wait(10)


def test_tls_plaintext_via_uprobes_is_redacted(daemon: Daemon,
                                               tls_server: tuple[int, Any]) -> None:
    """openssl s_server decrypts with SSL_read: periscope sees plaintext, redacts the secret."""
    port, server = tls_server
    t = TraceStream(daemon, "-p", str(server.pid), "-d", "5s", "--level", "payload",
                    "--reason", "t")
    t.wait_started()
    request = (b"GET /tls-check HTTP/1.1\r\nHost: secure.local\r\n"
               b"Authorization: Bearer tls0nlyS3cretToken0123456789\r\n\r\n")
    subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
                    "-no_ign_eof"],
                   input=request, capture_output=True, timeout=20)
    _rc, events, err = t.finish()
    tls = [e for e in events if e["kind"] == "tls"]
    assert tls, f"no TLS plaintext events: {err}"
    assert all(e["syscall"] in ("ssl_read", "ssl_write") and e["conn"].startswith("ssl:")
               for e in tls)
    text = payloads(events)
    assert "GET /tls-check HTTP/1.1" in text
    assert "tls0nlyS3cretToken0123456789" not in json.dumps(events)
    raw = [e for e in events if e["kind"] == "syscall" and e.get("direction") == "in"
           and "GET /tls-check" in str(e.get("payload", ""))]
    assert not raw, "the socket read should carry ciphertext, not the request"
