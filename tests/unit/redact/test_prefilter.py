"""The RE2 hints are prefilters: a rule's pattern runs only where its hint matched, so a
hint must match wherever `re` finds the pattern, bytes that are not UTF-8 included."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from redact import Redactor
from redact.table import Table
from tests.unit.redact.test_stream import CARRIERS

# bytes that are not UTF-8 alone, plus NUL and VT (which `\s` in RE2 does not take)
NOT_UTF8 = [b"\xff", b"\x80", b"\xe9", b"\xc3", b"\x00", b"\x0b"]


@functools.cache
def _table() -> Table:
    return Redactor.default()._set.table(None)


@st.composite
def marred(draw: st.DrawFn) -> bytes:
    """A carrier line with bytes that are not UTF-8 put in at random places."""
    text = bytearray(draw(st.sampled_from(CARRIERS)))
    for _ in range(draw(st.integers(1, 3))):
        text[draw(st.integers(0, len(text))):0] = draw(st.sampled_from(NOT_UTF8))
    return bytes(text)


@settings(max_examples=1500, deadline=None)
@given(marred())
def test_a_hint_matches_wherever_its_pattern_does(text: bytes) -> None:
    table = _table()
    hits = set(table.match(text))
    missed = [r.id for i, r in enumerate(table.rules)
              if i not in hits and r.pattern.search(text) is not None]
    assert not missed, (missed, text)


def test_a_byte_that_is_not_utf8_beside_a_secret_does_not_hide_it() -> None:
    """Found with RE2 in its UTF-8 mode, where `.` and `[^...]` skip such a byte."""
    r = Redactor.default()
    for text in (b"exec curl -sS -u depl\xffoy:S3cure-Pass_2024 https://ci.example.com/\n",
                 b"mongodb+srv://a\x80pp:6klacpYlsf1mX1IbLOZZ5q36@cluster0.example.net/db\n"):
        out = r.redact(text)
        assert b"S3cure-Pass_2024" not in out and b"6klacpYlsf1mX1IbLOZZ5q36" not in out, out
