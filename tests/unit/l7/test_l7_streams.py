"""Chunking and gaps: any split gives the same records; known-length gaps keep sync."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.l7 import L7Conn
from redact import Redactor
from tests.unit.l7.l7data import GOLDENS, Chunk, load, matches, replay, shape

R = Redactor.default()
TCP = [g for g in GOLDENS if load(g)["transport"] == "tcp"]


def resplit(cuts: list[int]) -> Any:
    """Re-chunk each direction's bytes at the given cut fractions, keeping the order of
    direction changes (a response never arrives before its request)."""
    def steps(chunks: list[Chunk]) -> Iterator[tuple[str, str, Any, float]]:
        runs: list[list[Any]] = []
        for d, ts, b in chunks:
            if runs and runs[-1][0] == d:
                runs[-1][2] += b
            else:
                runs.append([d, ts, b])
        k = 0
        for d, ts, data in runs:
            points = sorted({c % (len(data) + 1) for c in cuts[k:k + 4]} | {0, len(data)})
            k += 4
            for a, b in itertools.pairwise(points):
                if b > a:
                    yield "feed", d, data[a:b], ts
    return steps


@pytest.mark.parametrize("name", TCP)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), min_size=0, max_size=400))
def test_any_split_gives_the_same_records(name: str, cuts: list[int]) -> None:
    doc = load(name)
    assert shape(replay(doc, R.redact_text, chunks=resplit(cuts))) == \
        shape(replay(doc, R.redact_text))


@pytest.mark.parametrize("name", TCP)
def test_every_byte_its_own_feed(name: str) -> None:
    doc = load(name)

    def bytewise(chunks: list[Chunk]) -> Iterator[tuple[str, str, Any, float]]:
        for d, ts, b in chunks:
            for i in range(len(b)):
                yield "feed", d, b[i:i + 1], ts
    if sum(len(b) for c in doc["conns"] for _, _, b in c) > 50_000:
        pytest.skip("large capture: covered by the random splits")
    assert shape(replay(doc, R.redact_text, chunks=bytewise)) == \
        shape(replay(doc, R.redact_text))


def capped(cap: int) -> Any:
    """What the pipeline delivers with a capture cap: a prefix, then a gap for the rest."""
    def steps(chunks: list[Chunk]) -> Iterator[tuple[str, str, Any, float]]:
        for d, ts, b in chunks:
            yield "feed", d, b[:cap], ts
            if len(b) > cap:
                yield "gap", d, len(b) - cap, ts
    return steps


# Requests that lie entirely in bytes a cap did not capture cannot give a record (their
# responses become partial records without request fields): nginx's six pipelined
# requests come in one 305-byte write, redis-cli --pipe sends 22 commands in 727 bytes.
UNSEEN = {("http_nginx_pipelined", 256): 1, ("redis_cli", 256): 14}
REQUEST_FIELDS = ("method", "path", "query", "command", "qname", "qtype")


@pytest.mark.parametrize("cap", [256, 4096])
@pytest.mark.parametrize("name", GOLDENS)
def test_capture_cap_keeps_every_request(name: str, cap: int) -> None:
    """With a capture cap every request whose start was captured still gives its record,
    in order; a record is partial only where a gap hit framing, and then its request
    fields are still right; complete records match the uncapped expectation."""
    doc = load(name)
    records = replay(doc, R.redact_text, chunks=capped(cap))
    want = doc["expect"]
    seen = [r for r in records if any(getattr(r, f) is not None for f in REQUEST_FIELDS)]
    orphans = [r for r in records if r not in seen]
    i = 0
    for rec in seen:  # in order, skipping the expected requests that were never captured
        while i < len(want):
            req = {k: v for k, v in want[i].items() if k in REQUEST_FIELDS}
            i += 1
            if not matches(rec, req):
                break
        else:
            raise AssertionError(f"no expected request for {rec.to_json()}")
        if not rec.partial:
            assert not matches(rec, want[i - 1]), (rec.to_json(), want[i - 1])
    unseen = len(want) - len(seen)
    assert unseen == UNSEEN.get((name, cap), 0), [r.to_json() for r in records]
    assert all(r.partial for r in orphans) and len(orphans) <= unseen
    if cap == 4096:  # only a chunk bigger than the cap can cost a record its completeness
        assert sum(r.partial for r in records) <= sum(len(b) > cap for c in doc["conns"]
                                                      for _, _, b in c)


def test_body_gap_of_known_length_stays_in_sync() -> None:
    conn = L7Conn(R.redact_text, role="client")
    out = conn.feed("out", b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n"
                    + b"x" * 200, 1.0)
    out += conn.gap("out", 100000 - 200, 1.1)
    out += conn.feed("in", b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n" + b"y" * 100, 1.2)
    out += conn.gap("in", 50000 - 100, 1.3)
    out += conn.feed("out", b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n", 2.0)
    out += conn.feed("in", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 2.1)
    assert [(r.method, r.path, r.status, r.partial) for r in out] == [
        ("POST", "/up", 200, False), ("GET", "/next", 404, False)]
    assert out[0].latency_ms == 300.0
    assert out[0].req_bytes == 100000 + 54 and out[0].resp_bytes == 50000 + 42
    assert not conn.stats["gaps_lost_sync"]


def test_gap_in_header_gives_partial_then_resyncs() -> None:
    conn = L7Conn(R.redact_text, role="client")
    out = conn.feed("out", b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nUser-Ag", 1.0)
    out += conn.gap("out", 500, 1.0)  # the rest of the head was not captured
    out += conn.feed("in", b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", 1.1)
    out += conn.feed("out", b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n", 2.0)
    out += conn.feed("in", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 2.1)
    assert [(r.method, r.path, r.status, r.partial, r.error) for r in out] == [
        ("GET", "/a?x=1", 503, True, True), ("GET", "/b", 200, False, False)]
    assert conn.stats["gaps_lost_sync"] == 1 and conn.stats["resyncs"] == 1


def test_gap_cutting_the_request_line_drops_the_cut_token() -> None:
    conn = L7Conn(R.redact_text, role="client")
    conn.feed("out", b"GET /reset?user=bob&code=9f8e7d6c5b4a", 1.0)
    conn.gap("out", 300, 1.0)
    (rec,) = conn.close(2.0)
    assert rec.method == "GET" and rec.partial and rec.status is None
    assert rec.path == "/reset?user=bob…" and "9f8e" not in str(rec.to_json())


def test_gap_in_response_framing_marks_that_pair_partial() -> None:
    conn = L7Conn(R.redact_text, role="client")
    out = conn.feed("out", b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", 1.0)
    out += conn.feed("in", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 1.1)
    out += conn.gap("in", 4000, 1.2)  # chunk sizes lost: cannot tell where /1 ends
    out += conn.feed("out", b"GET /3 HTTP/1.1\r\n\r\n", 2.0)
    out += conn.feed("in", b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 2.1)
    out += conn.close(3.0)
    assert [(r.path, r.status, r.partial) for r in out] == [
        ("/1", 200, True), ("/2", 201, False), ("/3", None, True)]


def test_redis_value_cut_by_the_cap_stays_in_sync() -> None:
    conn = L7Conn(R.redact_text, role="client")
    value = b"v" * 5000
    cmd = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n%s\r\n" % (len(value), value)
    out = conn.feed("out", cmd[:256], 1.0) + conn.gap("out", len(cmd) - 256, 1.0)
    out += conn.feed("in", b"+OK\r\n", 1.1)
    out += conn.feed("out", b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n", 2.0)
    out += conn.feed("in", b"$5000\r\n" + value[:249], 2.1) + conn.gap("in", 5000 + 2 - 249, 2.1)
    assert [(r.command, r.status, r.partial) for r in out] == [
        ("SET big …", "OK", False), ("GET big", "bulk", False)]
    assert out[0].req_bytes == len(cmd) and out[1].resp_bytes == 5009


def test_pgsql_datarows_cut_by_the_cap_stay_in_sync() -> None:
    conn = L7Conn(R.redact_text, role="client")
    q = b"SELECT payload FROM t\x00"
    out = conn.feed("out", b"Q" + (4 + len(q)).to_bytes(4, "big") + q, 1.0)
    row = b"D" + (4 + 2 + 4 + 3000).to_bytes(4, "big") + b"\x00\x01" + (3000).to_bytes(4, "big")
    out += conn.feed("in", row + b"z" * 100, 1.1) + conn.gap("in", 2900, 1.1)
    done = b"C\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00\x00\x05I"
    out += conn.feed("in", done, 1.2)
    assert [(r.query, r.status, r.partial) for r in out] == [
        ("SELECT payload FROM t", "SELECT 1", False)]
