"""The google-re2 internals the redaction hot path calls: fail here, loudly, if an upgrade
removes or changes them (redact/re2compat.py is the one place to adapt)."""

from __future__ import annotations

import pytest
import re2

from redact import re2compat


def test_the_internals_exist() -> None:
    # Named one by one, so a failure says which one went away.
    assert hasattr(re2, "_Anchor") and hasattr(re2._Anchor, "UNANCHORED"), "re2._Anchor"
    assert "max_mem" in re2.Options.NAMES, "re2.Options.max_mem"
    opts = re2.Options()
    opts.max_mem = re2compat.SET_MEM
    assert opts.max_mem == re2compat.SET_MEM, "re2.Options.max_mem is not settable"
    hints = re2.Set.SearchSet(opts)
    hints.Add(b"x")
    hints.Compile()
    assert callable(getattr(getattr(hints, "_set", None), "Match", None)), "re2.Set._set.Match"
    regexp = re2.compile(b"x")
    assert callable(getattr(getattr(regexp, "_regexp", None), "Match", None)), (
        "re2._Regexp._regexp.Match")


def test_set_matcher_reports_every_pattern_that_hits() -> None:
    match = re2compat.set_matcher([b"(?i)password", rb"\bAKIA[0-9A-Z]{16}", b"token", b"\x00p"])
    assert sorted(match(b"PassWord=1 AKIAIOSFODNN7EXAMPLE \x00p")) == [0, 1, 3]
    assert list(match(b"nothing here")) == []
    assert list(match(b"")) == []
    # Raw Set.Match takes any bytes, NULs and non-UTF-8 included, and large inputs.
    assert list(match(b"\xff\xfe" * 50_000 + b"token")) == [2]


def test_searcher_gives_group_spans_from_pos_to_endpos() -> None:
    find = re2compat.searcher(re2compat.compile(rb"(?i)key=(\w+)|(secret)"))
    text = b"a key=abc; KEY=def secret"
    found = find(text, 0, len(text))
    assert [tuple(s) for s in found] == [(2, 9), (6, 9), (-1, -1)]  # group 2 did not take part
    found = find(text, 3, len(text))  # unanchored: the next match at or after pos
    assert [tuple(s) for s in found[:2]] == [(11, 18), (15, 18)]
    found = find(text, 19, len(text))
    assert [tuple(s) for s in found] == [(19, 25), (-1, -1), (19, 25)]
    assert find(text, 0, 5)[0][0] < 0  # endpos bounds the search: no match, -1
    assert find(b"", 0, 0)[0][0] < 0


def test_compile_translates_errors_and_counts_groups() -> None:
    with pytest.raises(ValueError):
        re2compat.compile(rb"(?<=lookbehind)x")  # RE2 has no lookbehind
    with pytest.raises(ValueError):
        re2compat.compile(b"(unclosed")
    assert re2compat.groups(re2compat.compile(b"a(b)(c)?")) == 2
    assert re2compat.groups(re2compat.compile(b"abc")) == 0


def test_a_missing_internal_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(re2, "_Anchor")
    with pytest.raises(ImportError, match=r"re2\._Anchor.*adapt"):
        re2compat.check_internals()
