"""Data stores on real servers, traced at payload level on the server side: redis-server
with redis-cli and a pipelined batch, PostgreSQL with psql (simple protocol) and psycopg
(extended), MariaDB with the mysql client, DNS through dnsmasq with dig (UDP and TCP).
Each test knows what it sent: N commands or queries give exactly N records, with their
text, status and error code; Redis AUTH and ALTER USER ... PASSWORD appear nowhere."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.root.conftest import wait_for
from tests.root.l7world import L7World, Stream, free_port, l7_world

REDIS_PASS = "rds-Zq8vLmN3pQ7rT2wX"
PG_NEW_PASS = "pgpw-Zq8vLmN3pQ7rT2wX"
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/nonexistent"))


@dataclass
class Data:
    w: L7World
    stream: Stream
    redis: tuple[int, int]     # (pid, port)
    pg: tuple[int, int]
    mysql: tuple[int, int]
    dns: tuple[int, int]


def _wait_port(port: int, what: str) -> None:
    def up() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        return False
    wait_for(up, 60, what=what)


def _proc(argv: list[str], stack: contextlib.ExitStack, user: str | None = None,
          **kw: Any) -> subprocess.Popen[bytes]:
    cmd = ["runuser", "-u", user, "--", *argv] if user else argv
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)

    def end() -> None:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    stack.callback(end)
    return p


def _server_pid(p: subprocess.Popen[bytes], name: str) -> int:
    """The server itself when runuser started it (its only child)."""
    if p.args[0] != "runuser":  # type: ignore[index]
        return p.pid
    kids = wait_for(lambda: subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                                           text=True).stdout.split(), 10, what=name)
    return int(kids[0])


def _owned_dir(base: Path, name: str, user: str) -> Path:
    d = base / name
    d.mkdir()
    pw = pwd.getpwnam(user)
    os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


@pytest.fixture(scope="module")
def data() -> Iterator[Data]:
    for tool in ("redis-server", "redis-cli", "psql", "mariadbd", "mariadb", "dnsmasq", "dig"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries are not installed")
    with contextlib.ExitStack() as stack, l7_world("periscope-l7data-") as w:
        base = w.base
        base.chmod(0o755)
        rport, pport, mport, dport = (free_port() for _ in range(4))
        redis = _proc(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save",
                       "", "--appendonly", "no", "--requirepass", REDIS_PASS], stack)
        pgdir = _owned_dir(base, "pg", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D",
                        str(pgdir / "data"), "--auth=trust", "-U", "postgres"], check=True,
                       capture_output=True, timeout=120)
        pg = _proc([str(PG_BIN / "postgres"), "-D", str(pgdir / "data"), "-p", str(pport),
                    "-k", str(pgdir), "-h", "127.0.0.1", "-c", "ssl=off"], stack,
                   user="postgres")
        mydir = _owned_dir(base, "mysql", "mysql")
        subprocess.run(["mariadb-install-db", "--user=mysql", f"--datadir={mydir}/data",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        my = _proc(["mariadbd", "--user=mysql", f"--datadir={mydir}/data", f"--port={mport}",
                    "--bind-address=127.0.0.1", f"--socket={mydir}/sock",
                    f"--pid-file={mydir}/pid", "--skip-log-error"], stack)
        dns = _proc(["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", f"--port={dport}",
                     "--listen-address=127.0.0.1", "--bind-interfaces", "--local=/test/",
                     "--address=/web.test/10.1.2.3", "--pid-file=", "-C", "/dev/null"], stack)
        for port, what in ((rport, "redis"), (pport, "postgres"), (mport, "mariadb"),
                           (dport, "dnsmasq")):
            _wait_port(port, what)
        pids = {"redis": redis.pid, "pg": _server_pid(pg, "postgres"), "mysql": my.pid,
                "dns": dns.pid}
        stream = w.trace(*[a for p in pids.values() for a in ("-p", str(p))])
        stack.callback(stream.stop)
        w.secrets += [REDIS_PASS, PG_NEW_PASS]
        yield Data(w, stream, (pids["redis"], rport), (pids["pg"], pport),
                   (pids["mysql"], mport), (pids["dns"], dport))


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


# -- Redis ---------------------------------------------------------------------------------
def test_redis_commands_auth_and_a_pipelined_batch(data: Data) -> None:
    pid, port = data.redis
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning", "-a",
           REDIS_PASS]
    assert run(*cli, "SET", "l7:k", "v1").stdout.strip() == "OK"
    assert run(*cli, "GET", "l7:k").stdout.strip() == "v1"
    assert "ERR" in run(*cli, "INCR", "l7:k").stdout  # not an integer
    batch = b"".join(
        f"*3\r\n$3\r\nSET\r\n${len(f'l7:p{i}')}\r\nl7:p{i}\r\n$1\r\n{i}\r\n".encode()
        for i in range(10))
    # the three connections above are all processed (their caps raised) before we count
    data.w.wait_rows("redis", "-p", str(pid), n=6, keep=lambda r: "l7:k" in r.get("command", "")
                     or r.get("command", "").upper().startswith("AUTH"))
    raised = data.w.daemon.request("status")["result"]["l7"].get("fd_caps_raised", 0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"AUTH {REDIS_PASS}\r\n".encode())
        assert s.recv(100) == b"+OK\r\n"
        # Redis was detected on this connection: the daemon raises its cap from 256 B to
        # 1 KiB, so the 310 B batch below is captured whole (at 256 B it is cut mid-command)
        wait_for(lambda: data.w.daemon.request("status")["result"]["l7"].get(
            "fd_caps_raised", 0) > raised, 10, what="the connection's larger capture cap")
        s.sendall(batch)  # ten commands in one write, before any reply
        got = b""
        while got.count(b"+OK\r\n") < 10:
            got += s.recv(4096)
    d = data.w
    rows = d.wait_rows("redis", "-p", str(pid), n=17,
                       keep=lambda r: "l7:" in r.get("command", "") or
                       r.get("command", "").upper().startswith("AUTH"))
    cmds = [(r["command"].split()[0].upper(), r["status"]) for r in rows]
    assert cmds == [("AUTH", "OK"), ("SET", "OK"), ("AUTH", "OK"), ("GET", "bulk"),
                    ("AUTH", "OK"), ("INCR", "ERR"), ("AUTH", "OK")] + [("SET", "OK")] * 10
    piped = [r for r in rows if r["command"].startswith("SET l7:p")]
    assert [r["command"].split()[1] for r in piped] == [f"l7:p{i}" for i in range(10)]
    assert len({r["conn"] for r in piped}) == 1
    assert all(r["command"] == "AUTH [REDACTED:password]" or "AUTH" not in r["command"].upper()
               for r in rows)
    errors = d.query("redis", "-p", str(pid), "--errors")
    assert [r["command"].split()[0].upper() for r in errors] == ["INCR"]
    assert [r["status"] for r in d.query("redis", "-p", str(pid), "--method", "get")] == [
        "bulk"]


# -- PostgreSQL ----------------------------------------------------------------------------
def test_psql_simple_queries_an_error_and_a_password_change(data: Data) -> None:
    _pid, port = data.pg
    psql = ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d",
            "postgres", "-v", "ON_ERROR_STOP=0"]
    r = run(*psql, "-c", "SELECT 42 AS l7_answer", "-c", "SELECT * FROM l7_missing_table",
            "-c", f"ALTER USER postgres PASSWORD '{PG_NEW_PASS}'",
            env={"PGSSLMODE": "disable"})
    assert "42" in r.stdout and "l7_missing_table" in r.stderr, r
    # each connection is served by a backend the server forks: rows are postgres's
    rows = data.w.wait_rows("sql", "-n", "postgres", n=3,
                            keep=lambda r: "l7_" in r.get("query", "")
                            or r.get("query", "").upper().startswith("ALTER"))
    assert [(r["proto"], r["query"], r["status"], r["error"]) for r in rows] == [
        ("pgsql", "SELECT ? AS l7_answer", "SELECT 1", False),
        ("pgsql", "SELECT * FROM l7_missing_table", "42P01", True),
        ("pgsql", "ALTER USER postgres PASSWORD ?", "ALTER ROLE", False)]
    failed = data.w.query("sql", "-n", "postgres", "--status", "42P01")
    assert [r["query"] for r in failed] == ["SELECT * FROM l7_missing_table"]


def test_psycopg_extended_protocol(data: Data) -> None:
    psycopg = pytest.importorskip("psycopg")
    _pid, port = data.pg
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         sslmode="disable") as conn:
        for i in range(3):
            got = conn.execute("SELECT %s::int + 1 AS l7_ext", (i,)).fetchone()
            assert got == (i + 1,)
    rows = data.w.wait_rows("sql", "-n", "postgres", n=3,
                            keep=lambda r: "l7_ext" in r.get("query", ""))
    assert [(r["query"], r["status"]) for r in rows] == [
        ("SELECT $1::int + ? AS l7_ext", "SELECT 1")] * 3
    assert len({r["conn"] for r in rows}) == 1


# -- MariaDB -------------------------------------------------------------------------------
def test_mysql_client_queries_and_an_error_code(data: Data) -> None:
    pid, port = data.mysql
    r = run("mariadb", "-h", "127.0.0.1", "-P", str(port), "-u", "root", "--skip-ssl", "-e",
            "SELECT 7 AS l7_seven; SELECT * FROM mysql.l7_missing")
    assert "l7_seven" in r.stdout and "1146" in r.stderr, r
    rows = data.w.wait_rows("sql", "-p", str(pid), n=2,
                            keep=lambda r: "l7_" in r.get("query", ""))
    assert [(r["proto"], r["query"], r["status"], r["error"]) for r in rows] == [
        ("mysql", "SELECT ? AS l7_seven", "ROWS 1", False),
        ("mysql", "SELECT * FROM mysql.l7_missing", "1146", True)]
    assert [r["query"] for r in data.w.query("sql", "-p", str(pid), "--errors")
            if "l7_" in r["query"]] == ["SELECT * FROM mysql.l7_missing"]


# -- DNS -----------------------------------------------------------------------------------
def test_dns_over_udp_and_tcp_through_dnsmasq(data: Data) -> None:
    pid, port = data.dns
    dig = ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", "+short"]
    assert run(*dig, "web.test", "A").stdout.strip() == "10.1.2.3"
    assert run(*dig, "l7-nope.test", "A").stdout.strip() == ""
    assert run(*dig, "+tcp", "web.test", "A").stdout.strip() == "10.1.2.3"
    rows = data.w.wait_rows("dns", "-p", str(pid), n=3)
    assert [(r["qname"], r["qtype"], r["rcode"], r.get("answers")) for r in rows] == [
        ("web.test", "A", "NOERROR", ["10.1.2.3"]), ("l7-nope.test", "A", "NXDOMAIN", []),
        ("web.test", "A", "NOERROR", ["10.1.2.3"])]
    assert all(r["latency_ms"] < 1000 for r in rows)
    nx = data.w.query("dns", "-p", str(pid), "--status", "NXDOMAIN")
    assert [r["qname"] for r in nx] == ["l7-nope.test"]
    udp = [e for e in data.stream.events() if e["kind"] == "conn"
           and e.get("transport") == "udp" and e["pid"] == pid]
    assert udp and udp[0]["preexisting"] is True  # its socket was bound before the session


def test_zz_no_secret_anywhere(data: Data) -> None:
    data.stream.stop()
    time.sleep(0.2)
    data.w.outputs.append(data.stream.err.read_text())
    data.w.assert_no_secrets([data.stream])
