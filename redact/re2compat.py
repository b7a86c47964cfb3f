"""google-re2 behind three calls: compile a pattern, search it at a position, match a Set.

The redaction hot path calls google-re2's pybind11 binding directly (`re2._Regexp._regexp
.Match` with `re2._Anchor.UNANCHORED`, `re2.Set._set.Match`) instead of the documented
wrappers, because those build a generator and a Match object per search (measured on a
256-byte line: `search()` costs ~5x the raw call, `Set.Match` ~1.5x). These are
google-re2 internals, used nowhere else in periscope: importing this module raises
ImportError if one is gone, and tests/unit/redact/test_re2compat.py names which.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import re2

# RE2 Set memory: a DFA that runs out of memory is rebuilt, slowly, under varied input.
SET_MEM = 64 << 20

Regexp = Any  # re2._Regexp (google-re2 ships no type information)
# search(text, pos, endpos) -> [(start, end) of group 0, of group 1, ...]; (-1, -1) for a
# group that did not take part, so found[0][0] < 0 means no match in text[pos:endpos].
Search = Callable[[bytes, int, int], list[tuple[int, int]]]
# match(text) -> indices (into the patterns given, in no particular order) of those that
# match somewhere in text.
SetMatch = Callable[[bytes], list[int]]


def check_internals() -> None:
    """Use each internal once (at import), so a google-re2 without them fails there, with
    their names, instead of on the first payload."""
    try:
        opts = re2.Options()
        opts.max_mem = SET_MEM
        hints = re2.Set.SearchSet(opts)
        hints.Add(b"b")
        hints.Compile()
        found = re2.compile(b"(b)")._regexp.Match(re2._Anchor.UNANCHORED, b"abc", 0, 3)
        if (list(hints._set.Match(b"abc")) != [0]
                or [tuple(s) for s in found] != [(1, 2), (1, 2)]):
            raise ValueError("unexpected results")
    except Exception as err:  # missing names, new signatures, new results: the same news
        raise ImportError(
            "google-re2 changed the internals redact/re2compat.py uses (re2._Anchor, "
            "re2.Set._set.Match, re2._Regexp._regexp.Match, Options.max_mem): adapt it"
        ) from err


check_internals()
_UNANCHORED = re2._Anchor.UNANCHORED


def _options() -> Any:
    """Latin-1: one byte is one character, as for Python's bytes patterns. In RE2's default
    UTF-8 mode `.` and negated classes do not match a byte that is not UTF-8, so a hint
    missed secrets its `re` pattern finds (`curl -u depl<0xff>oy:<password>`)."""
    opts = re2.Options()
    opts.encoding = re2.Options.Encoding.LATIN1
    return opts


def compile(src: bytes) -> Regexp:
    """A compiled RE2 pattern; ValueError (with RE2's message) if RE2 rejects it."""
    try:
        return re2.compile(src, _options())
    except Exception as err:  # re2.error does not derive from ValueError
        raise ValueError(str(err)) from err


def groups(regexp: Regexp) -> int:
    """Number of capture groups."""
    return int(regexp.groups)


def searcher(regexp: Regexp) -> Search:
    """search(text, pos, endpos): the leftmost match in text[pos:endpos], as group spans.
    The raw binding call with UNANCHORED: no generator and no Match object per call."""
    return functools.partial(regexp._regexp.Match, _UNANCHORED)


def set_matcher(patterns: Iterable[bytes], max_mem: int = SET_MEM) -> SetMatch:
    """One RE2 Set (unanchored) over patterns: match(text) -> indices of those that hit.
    The raw Set.Match: the wrapper only re-checks the argument type on every call."""
    opts = _options()
    opts.max_mem = max_mem
    patterns_set = re2.Set.SearchSet(opts)
    for p in patterns:
        patterns_set.Add(p)
    patterns_set.Compile()
    match: SetMatch = patterns_set._set.Match
    return match
