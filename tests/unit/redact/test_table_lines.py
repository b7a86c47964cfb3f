"""Table.lines remembers redacted lines: same output and counters as a first sight, no raw
line kept, bounded."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redact import Redactor, table
from tests.unit.redact.test_stream import CARRIERS, SECRETS

FILLER = [b"Host: shop.example.com\r\n", b"Accept: */*\r\n", b"\r\n", b"plain words here\n",
          b"x=1&y=2\x00", b"GET /orders/7?page=2 HTTP/1.1\r\n"]
LINES = st.lists(st.sampled_from(CARRIERS + FILLER), min_size=1, max_size=12)


@functools.cache
def _shared() -> Redactor:
    return Redactor.default()


def lines_of(r: Redactor, text: bytes) -> bytes:
    return r._set.table(None).lines(text)


def test_a_remembered_line_is_counted_every_time() -> None:
    r = Redactor.default()
    text = b"Host: a\r\nCookie: sid=Zq9hunter2Xv\r\n"
    first = lines_of(r, text)
    assert b"Zq9hunter2Xv" not in first
    assert lines_of(r, text) == lines_of(r, text) == first
    assert r.counters()["http_cookie"] == 3


@settings(max_examples=200, deadline=None)
@given(warm=LINES, text=LINES)
def test_remembered_equals_first_sight(warm: list[bytes], text: list[bytes]) -> None:
    """A table that has seen other (or the same) lines redacts and counts like a new one."""
    seasoned, fresh = Redactor.default(), Redactor.default()
    lines_of(seasoned, b"".join(warm + text))
    before = seasoned.counters()
    got = lines_of(seasoned, b"".join(text))
    assert got == lines_of(fresh, b"".join(text))
    after = seasoned.counters()
    assert {k: after[k] - before[k] for k in after} == fresh.counters()


@settings(max_examples=200, deadline=None)
@given(warm=LINES, text=LINES)
def test_some_lines_remembered_redacts_as_first_sight(warm: list[bytes],
                                                      text: list[bytes]) -> None:
    """Warmed with other lines only: the run mixes remembered lines and new ones, which are
    matched again on their own (the run's hits may be the remembered lines')."""
    seasoned, fresh = Redactor.default(), Redactor.default()
    lines_of(seasoned, b"".join(warm))
    before = seasoned.counters()
    got = lines_of(seasoned, b"".join(text))
    assert got == lines_of(fresh, b"".join(text))
    after = seasoned.counters()
    assert {k: after[k] - before[k] for k in after} == fresh.counters()


def test_new_clean_lines_beside_a_remembered_hit_are_not_scanned(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's hit (the cookie) is a remembered line's: the new lines are matched alone,
    found clean, and not scanned rule by rule."""
    r = Redactor.default()
    cookie = b"Cookie: sid=Zq9hunter2Xv\r\n"
    first = lines_of(r, cookie)

    def scanned(*_a: object) -> None:
        raise AssertionError("new clean lines were scanned")

    monkeypatch.setattr(table.Table, "_redact_lines", scanned)
    text = b"GET /orders/7 HTTP/1.1\r\n" + cookie + b"X-Request-Id: 4f2a\r\n"
    assert lines_of(r, text) == b"GET /orders/7 HTTP/1.1\r\n" + first + b"X-Request-Id: 4f2a\r\n"
    assert r.counters()["http_cookie"] == 2


@settings(max_examples=200, deadline=None)
@given(text=st.lists(st.sampled_from(CARRIERS + FILLER + [b"q" * 900 + b"\n"]), min_size=1,
                     max_size=16).map(b"".join))
def test_a_run_redacts_as_its_lines_alone(text: bytes) -> None:
    """Short run (remembered lines) or long (one scan): each line as if it came alone. (What
    a table remembers does not change its output: test_remembered_equals_first_sight.)"""
    r = _shared()
    assert lines_of(r, text) == b"".join(lines_of(r, ln) for ln in table.split_lines(text))


def test_no_raw_line_is_kept() -> None:
    """What the memo holds is what redaction let out. (Carriers whose secret is only one in
    the context of other lines, RESP or PEM, never reach lines(): the Segmenter joins them.)"""
    r = Redactor.default()
    one_line = [c for c in CARRIERS if not any(s in lines_of(Redactor.default(), c)
                                               for s in SECRETS)]
    assert len(one_line) >= 10
    for c in one_line:
        lines_of(r, c)
    memo = r._set.table(None)._lines
    assert memo and all(isinstance(k, int) for k in memo)
    for out, _ in memo.values():
        assert not any(s in out for s in SECRETS), out


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """In entries, in bytes, and nothing in a long run is remembered."""
    monkeypatch.setattr(table, "LINE_MEMO", 8)
    r = Redactor.default()
    memo = r._set.table(None)._lines
    for i in range(100):
        lines_of(r, b"X-Request-Id: %d\r\n" % i)
        assert len(memo) <= 8
    monkeypatch.setattr(table, "LINE_MEMO_BYTES", 100)
    for i in range(100):
        lines_of(r, b"X-Request-Id: %040d\r\n" % i)
        assert sum(len(out) for out, _ in memo.values()) < 100 + 60
    memo.clear()
    long = b"token=Zq9hunter2Xv\n" + b"x" * table.LINE_MEMO_RUN + b"\n"
    assert lines_of(r, long) == b"token=[REDACTED:secret]\n" + long[19:]
    assert not memo


@given(st.binary(max_size=64) | st.lists(st.sampled_from([b"a", b"\n", b"\x00", b"\r", b"bc"]),
                                         max_size=20).map(b"".join))
def test_split_lines_is_the_line_regex(text: bytes) -> None:
    assert table.split_lines(text) == table._LINE.findall(text)
