"""Table.lines remembers redacted lines: same output and counters as a first sight, no raw
line kept, bounded."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redact import Redactor, lines, table
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
    assert lines_of(r, text) == b"".join(lines_of(r, ln) for ln in lines.split_lines(text))


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
    assert lines.split_lines(text) == lines._LINE.findall(text)


RUN = st.lists(st.sampled_from([b"a", b"\n", b"\r\n", b"\x00", b"Host: x", b"", b"\xff"]),
               max_size=12).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(warm=st.lists(RUN, max_size=6), text=RUN)
def test_recall_twins_are_equal(warm: list[bytes], text: bytes) -> None:
    """The C twin (where built) and the Python one: same answer, same counts, same keys."""
    memo: lines.Memo = {}
    for i, w in enumerate(warm):
        _, keys, _ = lines.keyed_lines(w)
        for j, key in enumerate(keys):
            memo[key] = (b"<%d.%d>" % (i, j), (f"r{j % 3}",) * (j % 3))
    counts_c: dict[str, int] = {"r1": 5}
    counts_py = dict(counts_c)
    assert lines.recall(text, dict(memo), counts_c) == lines.recall_py(text, memo, counts_py)
    assert counts_c == counts_py
    got = lines.recall(text, {}, {})
    if not text:
        assert got == b""
    else:  # nothing remembered: every line is fresh, whole, keyed as keyed_lines keys it
        assert not isinstance(got, bytes)
        out, todo, fresh, keys = got
        assert out == [b""] * len(todo) and todo == list(range(len(out)))
        assert b"".join(fresh) == text
        assert keys == lines.keyed_lines(text)[1]


@settings(max_examples=300, deadline=None)
@given(lines_=st.lists(st.binary(max_size=6), min_size=1, max_size=8), data=st.data())
def test_remember_twins_are_equal(lines_: list[bytes], data: st.DataObject) -> None:
    """Same run out, same memo, same bytes held, the bounds included."""
    todo = sorted(data.draw(st.sets(st.integers(0, len(lines_) - 1))))
    done = [(b"<%s>" % lines_[i], ("r",) * (i % 2)) for i in todo]
    keys = [hash(lines_[i]) for i in todo]
    max_entries, max_bytes = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 24))
    old = {k: (b"old", ()) for k in data.draw(st.lists(st.integers(), max_size=4))}
    held = data.draw(st.integers(0, 30))
    answers = []
    for remember in (lines.remember, lines.remember_py):
        memo, out = dict(old), [b"" if i in todo else ln for i, ln in enumerate(lines_)]
        answers.append((remember(memo, out, list(todo), list(keys), list(done), max_entries,
                                 max_bytes, held), memo, out))
    assert answers[0] == answers[1]
    (joined, _), memo, out = answers[0]
    assert joined == b"".join(out) and len(memo) <= max(max_entries, len(old))


def test_the_memo_runs_in_c_where_built() -> None:
    import importlib.util
    if importlib.util.find_spec("redact._linememo") is None:
        pytest.skip("the C twin was not built here")
    assert lines.MEMO_IMPL == "c"
    assert lines.recall is not lines.recall_py and lines.remember is not lines.remember_py
