"""Every string a record carries went through redaction; real secrets never come out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from collector.l7 import L7Conn, Record
from collector.l7.record import REDACT_NAME
from redact import Redactor
from tests.unit.l7.l7data import GOLDENS, load, replay

R = Redactor.default()
L7_DIR = Path(__file__).resolve().parents[3] / "collector" / "l7"


class Recorder:
    """Wraps every value it is given, so an unwrapped string in a record was never seen."""

    def __init__(self) -> None:
        self.protocols: set[str] = set()

    def __call__(self, text: str, protocol: str) -> str:
        self.protocols.add(protocol)
        return f"<<{text}>>"


def strings(rec: Record) -> list[str]:
    j = rec.to_json()
    j.pop("proto")  # our own constant
    out: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    for v in j.values():  # top-level keys are our field names
        walk(v)
    return out


def assert_all_wrapped(records: list[Record]) -> None:
    for rec in records:
        for s in strings(rec):
            assert s.startswith("<<") and s.endswith(">>"), (s, rec)


@pytest.mark.parametrize("name", GOLDENS)
def test_every_string_went_through_redaction(name: str) -> None:
    rec = Recorder()
    records = replay(load(name), rec)
    assert records and sum(len(strings(r)) for r in records) > 0
    assert_all_wrapped(records)
    assert rec.protocols == {REDACT_NAME[records[0].proto]}


def test_record_is_built_in_one_place() -> None:
    for path in L7_DIR.glob("*.py"):
        src = path.read_text()
        if path.name != "record.py":
            assert not re.search(r"\bRecord\(", src), path.name
        # pure: nothing from the rest of collector/, no I/O or threads
        for m in re.finditer(r"^\s*(?:from|import) ([\w.]+)", src, re.M):
            mod = m[1]
            assert not mod.startswith("collector.") or mod.startswith("collector.l7"), mod
            assert mod.split(".")[0] not in {"os", "socket", "threading", "subprocess", "bcc",
                                             "probes", "asyncio"}, (path.name, mod)


SECRET = "Zq9-hunter2-SECRET-77"


def pgq(sql: bytes) -> bytes:
    return b"Q" + (5 + len(sql)).to_bytes(4, "big") + sql + b"\x00"


CASES = [
    ("http", b"GET /login?password=" + SECRET.encode() + b"&x=1 HTTP/1.1\r\nHost: h\r\n"
     b"User-Agent: tool token=" + SECRET.encode() + b"\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("http", b"POST /api HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
     b"Content-Length: 40\r\n\r\n" + b'{"password": "' + SECRET.encode() + b'"}   ',
     b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("redis", b"*2\r\n$4\r\nAUTH\r\n$21\r\n" + SECRET.encode() + b"\r\n", b"+OK\r\n"),
    ("redis", b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$21\r\n"
     + SECRET.encode() + b"\r\n", b"%1\r\n+server\r\n+redis\r\n"),
    ("redis", b"CONFIG SET requirepass " + SECRET.encode() + b"\r\n", b"+OK\r\n"),
    ("redis", b"AUTH " + SECRET.encode() + b"\r\n", b"-ERR invalid password\r\n"),
    ("pgsql", pgq(b"ALTER USER bob PASSWORD '" + SECRET.encode() + b"'"),
     b"C\x00\x00\x00\x0fALTER ROLE\x00Z\x00\x00\x00\x05I"),
    ("pgsql", pgq(b"SELECT 1 -- api_key=" + SECRET.encode() + b" xxxx"),
     b"C\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00\x00\x05I"),
]


@pytest.mark.parametrize(("proto", "req", "resp"), CASES)
def test_secrets_never_leave_with_the_real_redactor(proto: str, req: bytes,
                                                    resp: bytes) -> None:
    for cut in (None, 7, len(req) // 2):
        conn = L7Conn(R.redact_text, role="client")
        chunks = [req] if cut is None else [req[:cut], req[cut:]]
        out: list[Record] = []
        for c in chunks:
            out += conn.feed("out", c, 1.0)
        out += conn.feed("in", resp, 1.1) + conn.close(2.0)
        assert conn.proto == proto
        assert len(out) == 1 and not out[0].partial, out
        text = json.dumps([r.to_json() for r in out])
        assert SECRET not in text and "hunter2" not in text, text


def test_mysql_alter_user_is_masked() -> None:
    doc = load("mysql_cli")
    text = json.dumps([r.to_json() for r in replay(doc, R.redact_text)])
    assert "s3cr3t" not in text and "ALTER USER ?@? IDENTIFIED BY ?" in text
