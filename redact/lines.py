"""The lines of a run, and the line memo behind Table.lines (its lookup and its store).

    split_lines(text)           -> each line, its end (LF or NUL) kept
    recall(text, memo, counts)  -> bytes, if every line is remembered (and counted)
                                 | (out, todo, fresh, keys): the lines to redact
    remember(memo, out, todo, keys, done, max_entries, max_bytes, held)
                                -> (the run redacted, the bytes the memo now holds)

A Table remembers each redacted line by a key: the hash of its bytes (keyed_lines), so
no raw line is kept. `recall` and `remember` are the Python twins below, or the C ones
(_linememo.c: it cuts and hashes the lines without a bytes object each) where they were
built; MEMO_IMPL says which.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_LINE = re.compile(rb"[^\n\x00]*[\n\x00]|[^\n\x00]+")

# memo: key -> (the line redacted, the rule ids of its placeholders)
Memo = dict[int, tuple[bytes, tuple[str, ...]]]
# (out: each line's redaction, b"" where not remembered; todo: the indices of those;
#  fresh: those lines, whole; keys: their memo keys)
Missed = tuple[list[bytes], list[int], list[bytes], list[int]]


def split_lines(text: bytes) -> list[bytes]:
    """text cut after each line end (LF or NUL): _LINE.findall, by bytes.split where it can
    (the regex walks ~10 ns per byte)."""
    end = len(text) - 1
    if text.find(b"\n", 0, end) < 0 and text.find(b"\0", 0, end) < 0:
        return [text] if text else []  # one line (a long body, say): no copy
    if b"\0" in text:
        return _LINE.findall(text)
    cut = text.split(b"\n")
    last = cut.pop()
    lines = [ln + b"\n" for ln in cut]
    if last:
        lines.append(last)
    return lines


def keyed_lines(text: bytes) -> tuple[list[bytes], list[int], int]:
    """The lines of text, each one's memo key, and `cut`: parts[:cut] are lines that ended
    in LF and lost it to bytes.split (put it back to redact one); the rest are whole.

    A line's key is the hash of its bytes without that LF, or, for a line that ended in NUL
    (split_lines keeps it), with its NUL. A last line with no end is keyed by the hash of
    a 1-tuple of it, so it never shares a key with the same bytes followed by an LF.
    """
    if b"\0" in text:
        parts = split_lines(text)
        keys = list(map(hash, parts))
        last = parts[-1]
        if last[-1:] not in (b"\n", b"\0"):
            keys[-1] = hash((last,))
        return parts, keys, 0
    parts = text.split(b"\n")
    last = parts.pop()
    keys = list(map(hash, parts))
    cut = len(parts)
    if last:
        parts.append(last)
        keys.append(hash((last,)))
    return parts, keys, cut


def recall_py(text: bytes, memo: Memo, counts: dict[str, int]) -> bytes | Missed:
    """Each line of text looked up in memo; each remembered one counts its placeholders'
    rule ids. All remembered: their redactions joined. Else what Table._remember needs."""
    parts, keys, cut = keyed_lines(text)
    get = memo.get
    out: list[bytes] = []
    todo: list[int] = []
    for i, key in enumerate(keys):
        got = get(key)
        if got is None:
            todo.append(i)
            out.append(b"")
            continue
        for rid in got[1]:
            counts[rid] = counts.get(rid, 0) + 1
        out.append(got[0])
    if not todo:
        return b"".join(out)
    return (out, todo, [parts[i] + b"\n" if i < cut else parts[i] for i in todo],
            [keys[i] for i in todo])


def remember_py(memo: Memo, out: list[bytes], todo: list[int], keys: list[int],
                done: list[tuple[bytes, tuple[str, ...]]], max_entries: int, max_bytes: int,
                held: int) -> tuple[bytes, int]:
    """out[todo[j]] = done[j][0], remembered under keys[j]; the memo is cleared first
    whenever it holds max_entries lines or max_bytes bytes of them (`held`, returned
    updated). Returns out joined."""
    for i, key, line in zip(todo, keys, done, strict=True):
        if len(memo) >= max_entries or held >= max_bytes:
            memo.clear()
            held = 0
        memo[key] = line
        held += len(line[0])
        out[i] = line[0]
    return b"".join(out), held


recall: Callable[[bytes, Memo, dict[str, int]], bytes | Missed] = recall_py
remember: Callable[[Memo, list[bytes], list[int], list[int],
                    list[tuple[bytes, tuple[str, ...]]], int, int, int],
                   tuple[bytes, int]] = remember_py
MEMO_IMPL = "python"
try:
    import redact._linememo as _linememo
except ImportError:  # no compiler or Python headers where it was installed
    pass
else:
    _linememo.configure(recall_py)
    recall = _linememo.recall
    remember = _linememo.remember
    MEMO_IMPL = "c"
