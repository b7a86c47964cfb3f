"""Golden captures from real clients and servers: exactly the records each scenario knows."""

from __future__ import annotations

import json

import pytest

from collector.l7 import L7Conn
from redact import Redactor
from tests.unit.l7.l7data import GOLDENS, SECRETS, load, matches, replay, shape

R = Redactor.default()


@pytest.mark.parametrize("name", GOLDENS)
def test_golden_records(name: str) -> None:
    doc = load(name)
    records = replay(doc, R.redact_text)
    want = doc["expect"]
    assert len(records) == len(want), [r.to_json() for r in records]
    for rec, exp in zip(records, want, strict=False):
        assert not matches(rec, exp), (rec.to_json(), exp, matches(rec, exp))
        assert not rec.partial
        assert rec.latency_ms is not None and rec.latency_ms >= 0
        assert rec.req_bytes > 0 and rec.resp_bytes > 0


@pytest.mark.parametrize("name", GOLDENS)
def test_role_inferred_and_server_side_agree(name: str) -> None:
    doc = load(name)
    as_client = shape(replay(doc, R.redact_text))
    assert shape(replay(doc, R.redact_text, role=None)) == as_client
    # the same bytes seen from the server: directions swap, records do not change
    assert shape(replay(doc, R.redact_text, role="server", flip=True)) == as_client
    assert shape(replay(doc, R.redact_text, role=None, flip=True)) == as_client


@pytest.mark.parametrize("name", GOLDENS)
def test_no_secret_in_any_record(name: str) -> None:
    doc = load(name)
    raw = b"".join(b for c in doc["conns"] for _, _, b in c)
    sent = [s for s in SECRETS if s.encode() in raw]
    text = json.dumps([r.to_json() for r in replay(doc, R.redact_text)])
    for s in sent:
        assert s not in text


def test_latency_is_first_request_byte_to_last_response_byte() -> None:
    doc = load("http_curl")
    slow = [r for r in replay(doc, R.redact_text) if r.path == "/slow"]
    assert len(slow) == 1 and slow[0].latency_ms is not None and slow[0].latency_ms >= 300
    conn = L7Conn(R.redact_text, role="client")
    assert conn.feed("out", b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 10.0) == []
    assert conn.feed("in", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", 10.2) == []
    (rec,) = conn.feed("in", b"cd", 10.5)
    assert rec.ts == 10.0 and rec.latency_ms == 500.0
