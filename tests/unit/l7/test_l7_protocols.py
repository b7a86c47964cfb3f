"""Table tests per protocol for what the goldens do not show: framing corners, errors, detection."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from collector.l7 import DETECT_BUDGET, L7Conn, Record
from collector.l7.sqlnorm import normalize
from redact import Redactor

R = Redactor.default()


def run(steps: list[tuple[str, bytes]], role: str | None = "client") -> tuple[L7Conn,
                                                                               list[Record]]:
    conn = L7Conn(R.redact_text, role=role)
    out: list[Record] = []
    for i, (d, data) in enumerate(steps):
        out += conn.feed(d, data, float(i))
    out += conn.close(99.0)
    return conn, out


def fields(recs: list[Record], *names: str) -> list[tuple[Any, ...]]:
    return [tuple(getattr(r, n) for n in names) for r in recs]


# -- HTTP ---------------------------------------------------------------------------------------
def test_http_chunked_request_and_100_continue() -> None:
    _, out = run([("out", b"PUT /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                          b"Expect: 100-continue\r\n\r\n"),
                  ("in", b"HTTP/1.1 100 Continue\r\n\r\n"),
                  ("out", b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nX-Trailer: 1\r\n\r\n"),
                  ("in", b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")])
    assert fields(out, "method", "path", "status", "partial", "req_bytes") == [
        ("PUT", "/f", 201, False, 69 + 42)]


def test_http_head_and_upgrade() -> None:
    conn, out = run([("out", b"HEAD /x HTTP/1.1\r\n\r\n"),
                     ("in", b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"),
                     ("out", b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
                     ("in", b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x05hello"),
                     ("out", b"\x81\x85garbage")])
    assert fields(out, "method", "status", "partial") == [("HEAD", 200, False),
                                                           ("GET", 101, False)]
    assert conn.stats["malformed"] == 0


def test_http_response_split_everywhere_and_error_flag() -> None:
    resp = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy!"
    for cut in range(1, len(resp)):
        _, out = run([("out", b"GET / HTTP/1.1\r\n\r\n"), ("in", resp[:cut]), ("in", resp[cut:])])
        assert fields(out, "status", "error", "resp_bytes") == [(503, True, len(resp))]


def test_http_loss_of_unknown_size_resyncs_on_the_next_request() -> None:
    """Records lost under load (lost()): the request in flight comes out partial, the tail
    of its response is not taken for a reply, and the next request pairs again."""
    conn = L7Conn(R.redact_text, role="client")
    out = conn.feed("out", b"GET /a HTTP/1.1\r\n\r\n", 1.0)
    out += conn.lost()
    assert fields(out, "path", "partial") == [("/a", True)]
    assert conn.stats["gaps_lost_sync"] == 2
    out = conn.feed("in", b"tail of the lost reply\r\n\r\n", 2.0)
    out += conn.feed("out", b"GET /b HTTP/1.1\r\n\r\n", 3.0)
    out += conn.feed("in", b"HTTP/1.1 204 No Content\r\n\r\n", 4.0)
    out += conn.close(9.0)
    assert fields(out, "path", "status", "partial") == [("/b", 204, False)]
    assert conn.stats["resyncs"] == 2 and conn.stats["unpaired_responses"] == 0


def test_loss_before_detection_forgets_the_prefix_and_dns_stays_in_sync() -> None:
    conn = L7Conn(R.redact_text, role="client")
    assert conn.feed("out", b"GE", 1.0) == [] and conn.lost() == []
    conn.feed("out", b"T /a HTTP/1.1\r\n\r\n", 2.0)  # not glued to the prefix: no request
    assert conn.proto is None
    dns = L7Conn(R.redact_text, role="client")
    q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01"
    assert dns.datagram("out", q, 1.0) == [] and dns.lost() == []
    r = struct.pack(">HHHHHH", 7, 0x8180, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01"
    assert fields(dns.datagram("in", r, 2.0), "partial") == [(False,)]


# -- PostgreSQL -------------------------------------------------------------------------------
def pg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack(">I", 4 + len(body)) + body


def test_pgsql_named_statement_reused_and_pipelined_executes() -> None:
    q = b"SELECT * FROM t WHERE id = $1\x00"
    prep = pg(b"P", b"s1\x00" + q + b"\x00\x00") + pg(b"S", b"")
    ex = pg(b"B", b"\x00s1\x00\x00\x00\x00\x00\x00\x00") + pg(b"E", b"\x00\x00\x00\x00\x00")
    _, out = run([("out", prep), ("in", pg(b"1", b"") + pg(b"Z", b"I")),
                  ("out", ex + ex + pg(b"S", b"")),
                  ("in", pg(b"2", b"") + pg(b"C", b"SELECT 3\x00") + pg(b"2", b"")
                   + pg(b"C", b"SELECT 0\x00") + pg(b"Z", b"I")),
                  ("out", pg(b"C", b"Ss1\x00") + pg(b"S", b"")),
                  ("out", ex + pg(b"S", b"")),
                  ("in", pg(b"3", b"") + pg(b"Z", b"I")
                   + pg(b"E", b"SERROR\x00C26000\x00Mno\x00\x00")
                   + pg(b"Z", b"I"))])
    assert fields(out, "query", "status", "error") == [
        ("SELECT * FROM t WHERE id = $1", "SELECT 3", False),
        ("SELECT * FROM t WHERE id = $1", "SELECT 0", False),
        (None, "26000", True)]  # the statement was closed: its text is gone


def test_pgsql_parse_error_and_ssl_and_auth_failure() -> None:
    _, out = run([("out", pg(b"P", b"\x00SELEC oops\x00\x00\x00") + pg(b"S", b"")),
                  ("in", pg(b"E", b"SERROR\x00C42601\x00Msyntax\x00\x00") + pg(b"Z", b"I"))])
    assert fields(out, "query", "status", "error") == [("SELEC oops", "42601", True)]
    conn, out = run([("out", struct.pack(">II", 8, 80877103)), ("in", b"S"),
                     ("out", b"\x16\x03\x01 tls bytes")])
    assert conn.proto == "pgsql" and out == [] and conn.stats["tls"] == 1
    startup = struct.pack(">II", 23, 196608) + b"user\x00bob\x00\x00\x00\x00"
    _, out = run([("out", startup[:23]),
                  ("in", pg(b"E", b"SFATAL\x00C28P01\x00Mpassword authentication failed\x00\x00"))])
    assert fields(out, "status", "error", "partial") == [("28P01", True, True)]


# -- MySQL ----------------------------------------------------------------------------------------
def my(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


EOF_PKT = b"\xfe\x00\x00\x02\x00"


def test_mysql_eof_terminated_result_set_and_errors() -> None:
    coldef = b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00"
    rows = [my(1, b"\x01"), my(2, coldef), my(3, EOF_PKT), my(4, b"\x011"), my(5, b"\x012"),
            my(6, EOF_PKT)]
    _, out = run([("out", my(0, b"\x03SELECT a FROM t WHERE b = 'x'")), ("in", b"".join(rows)),
                  ("out", my(0, b"\x03DROP TABLE nope")),
                  ("in", my(1, b"\xff\x33\x04#42S02Unknown table")),
                  ("out", my(0, b"\x16SELECT bad syntax ?")),
                  ("in", my(1, b"\xff\x28\x04#42000You have an error")),
                  ("out", my(0, b"\x0e")), ("in", my(1, b"\x00\x00\x00\x02\x00\x00\x00"))])
    assert fields(out, "query", "status", "error") == [
        ("SELECT a FROM t WHERE b = ?", "ROWS 2", False),
        ("DROP TABLE nope", "1075", True),
        (None, "1064", True)]  # a failed PREPARE is a record; a PING is not


# -- Redis ----------------------------------------------------------------------------------------
def test_redis_multi_exec_and_nested_replies() -> None:
    _, out = run([("out", b"MULTI\r\nINCR a\r\nLRANGE l 0 -1\r\nEXEC\r\n"),
                  ("in", b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n")])
    assert fields(out, "command", "status") == [("MULTI", "OK"), ("INCR a", "QUEUED"),
                                                 ("LRANGE l 0 -1", "QUEUED"), ("EXEC", "array")]


def test_redis_push_messages_are_not_replies() -> None:
    _, out = run([("out", b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
                  ("in", b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n$1\r\nv\r\n")])
    assert fields(out, "command", "status", "partial") == [("GET k", "bulk", False)]


# -- DNS ------------------------------------------------------------------------------------------
def dns(qid: int, name: str, qtype: int = 1, resp: bool = False, rcode: int = 0,
        answers: list[bytes] | None = None) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    flags = (0x8180 | rcode) if resp else 0x0100
    out = struct.pack(">HHHHHH", qid, flags, 1, len(answers or []), 0, 0)
    out += q + struct.pack(">HH", qtype, 1)
    for rd in answers or []:
        out += struct.pack(">HHHIH", 0xC00C, qtype, 1, 60, len(rd)) + rd
    return out


def test_dns_pairs_by_id_out_of_order_and_cut_datagrams() -> None:
    conn = L7Conn(R.redact_text, role="client")
    out = conn.datagram("out", dns(1, "a.example"), 1.0)
    out += conn.datagram("out", dns(2, "b.example", 28), 1.1)
    out += conn.datagram("in", dns(2, "b.example", 28, True, 3), 1.3)
    big = dns(1, "a.example", 1, True, 0, [bytes([10, 0, 0, i]) for i in range(20)])
    out += conn.datagram("in", big[:100], 1.5, len(big))
    out += conn.datagram("out", dns(3, "c.example"), 2.0) + conn.close(3.0)
    assert fields(out, "qname", "qtype", "rcode", "error", "partial") == [
        ("b.example", "AAAA", "NXDOMAIN", True, False),
        ("a.example", "A", "NOERROR", False, True),
        ("c.example", "A", None, False, True)]
    assert out[1].answers == tuple(f"10.0.0.{i}" for i in range(4))  # 4 fit in 100 B
    assert out[0].latency_ms == 200.0


# -- detection --------------------------------------------------------------------------------
def test_detection_gives_up_on_tls_at_once_and_on_noise_after_the_budget() -> None:
    conn = L7Conn(R.redact_text)
    assert conn.feed("out", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 1.0) == []
    assert conn.gave_up and conn.proto is None
    conn = L7Conn(R.redact_text)
    noise = bytes(range(7, 107))
    for i in range(DETECT_BUDGET // len(noise) + 1):
        conn.feed("in" if i % 2 else "out", noise, float(i))
    assert conn.gave_up
    assert conn.feed("out", b"GET / HTTP/1.1\r\n\r\n", 99.0) == []


def test_detection_after_noise_and_from_the_server_side() -> None:
    conn, out = run([("in", b"\x00\x01garbage from before tracing"),
                     ("in", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                     ("out", b"GET /next HTTP/1.1\r\n\r\n"),
                     ("in", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")], role=None)
    assert conn.proto == "http"
    assert fields(out, "path", "status", "partial") == [(None, 200, True), ("/next", 200, False)]
    assert out[0].latency_ms is None  # a response whose request was never seen


@pytest.mark.parametrize(("sql", "dialect", "want"), [
    ("SELECT * FROM t WHERE a = 'x''y' AND b > 10.5e3 AND c = $1", "pgsql",
     "SELECT * FROM t WHERE a = ? AND b > ? AND c = $1"),
    ("INSERT INTO t1 VALUES (1, E'a\\'b', 'c:\\')", "pgsql", "INSERT INTO t1 VALUES (?, ?, ?)"),
    ("SELECT $$body$$, $f$x$f$, \"Col1\" FROM \"T\"", "pgsql", 'SELECT ?, ?, "Col1" FROM "T"'),
    ("SELECT 'unterminated secret", "pgsql", "SELECT ?"),
    ("select  1\n  from x -- note 5", "pgsql", "select ? from x -- note 5"),
    ("INSERT INTO u VALUES (1, 'al\\'ice'), (2, \"bob\")", "mysql",
     "INSERT INTO u VALUES (?, ?), (?, ?)"),
    ("SELECT `a1` FROM t WHERE x IN (0x1F, -2)", "mysql", "SELECT `a1` FROM t WHERE x IN (?, -?)"),
])
def test_sql_normalize(sql: str, dialect: str, want: str) -> None:
    assert normalize(sql, dialect) == want
