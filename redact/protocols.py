"""Protocol structure the regex rules cannot see: RESP arrays that carry Redis credentials."""

from __future__ import annotations

import re
from collections.abc import Callable

NEED_MORE = 0
NOT_RESP = -1
_SENSITIVE = frozenset({b"AUTH", b"HELLO", b"ACL", b"CONFIG", b"MIGRATE"})
_MAX_ELEMS = 64
_MAX_BULK = 1 << 16
_MASKED_BULK = re.compile(rb"\$\d+\r\n\[REDACTED:[a-z0-9_]+(?::[0-9a-f]{12})?\]\r\n")

Placeholder = Callable[[str, bytes], bytes]


def _line(buf: bytes | bytearray, pos: int, limit: int = 12) -> tuple[int, int] | int | None:
    """(value, next_pos) for `<digits>\\r\\n` at pos; None if incomplete; NOT_RESP if malformed."""
    end = buf.find(b"\r\n", pos, pos + limit)
    if end < 0:
        tail = bytes(buf[pos : pos + limit])
        core = tail[:-1] if tail.endswith(b"\r") else tail
        if len(tail) < limit and (core == b"" or core.isdigit()):
            return None
        return NOT_RESP
    digits = bytes(buf[pos:end])
    if not digits.isdigit():
        return NOT_RESP
    return int(digits), end + 2


_HEAD_LINE = re.compile(rb"\*(\d{1,4})\r\n")
_BULK_LINE = re.compile(rb"\$(\d{1,6})\r\n")


def _elements(buf: bytes | bytearray, pos: int) -> tuple[list[tuple[int, int, int]], int] | int:
    """Parse a RESP array of bulk strings at pos: ([(hdr, start, end)], array_end).

    Returns NEED_MORE when the array is incomplete and NOT_RESP when it is not a sensitive
    command array (so the caller treats the bytes as ordinary lines).
    """
    # Complete `*N` / `$N` lines are read with one regex each (the digit widths _line
    # accepts); anything else (cut or malformed header) is decided by _elements_slow.
    m = _HEAD_LINE.match(buf, pos)
    if m is None:
        return _elements_slow(buf, pos)
    count = int(m[1])
    if not 1 <= count <= _MAX_ELEMS:
        return NOT_RESP
    p = m.end()
    elems: list[tuple[int, int, int]] = []
    for k in range(count):
        b = _BULK_LINE.match(buf, p)
        if b is None:
            return _elements_slow(buf, pos)
        start = b.end()
        end = start + int(b[1])
        bad = _bulk_status(buf, k, start, end)
        if bad is not None:
            return bad
        elems.append((p, start, end))
        p = end + 2
    return elems, p


def _elements_slow(
    buf: bytes | bytearray, pos: int
) -> tuple[list[tuple[int, int, int]], int] | int:
    """_elements, one header byte at a time: tells a cut header (NEED_MORE) from a bad one."""
    if buf[pos : pos + 1] != b"*":
        return NOT_RESP
    head = _line(buf, pos + 1, 6)
    if head is None:
        return NEED_MORE
    if isinstance(head, int):
        return NOT_RESP
    count, p = head
    if not 1 <= count <= _MAX_ELEMS:
        return NOT_RESP
    elems: list[tuple[int, int, int]] = []
    for k in range(count):
        if p >= len(buf):
            return NEED_MORE
        if buf[p : p + 1] != b"$":
            return NOT_RESP
        got = _line(buf, p + 1, 8)
        if got is None:
            return NEED_MORE
        if isinstance(got, int):
            return NOT_RESP
        size, start = got
        end = start + size
        bad = _bulk_status(buf, k, start, end)
        if bad is not None:
            return bad
        elems.append((p, start, end))
        p = end + 2
    return elems, p


def _bulk_status(buf: bytes | bytearray, k: int, start: int, end: int) -> int | None:
    """NOT_RESP or NEED_MORE for element k's bulk string at [start, end), None if it is
    complete and (for the command name, k == 0) sensitive."""
    if end - start > _MAX_BULK:
        return NOT_RESP
    if len(buf) < end + 2:
        if k == 0 and len(buf) > start and not _could_be_sensitive(bytes(buf[start:end])):
            return NOT_RESP
        return NEED_MORE
    if buf[end : end + 2] != b"\r\n":
        return NOT_RESP
    if k == 0 and bytes(buf[start:end]).upper() not in _SENSITIVE:
        return NOT_RESP
    return None


def _could_be_sensitive(prefix: bytes) -> bool:
    up = prefix.upper()
    return any(name.startswith(up) for name in _SENSITIVE)


# `*<count>\r\n$<size>\r\n`: the head of a RESP array and of its first bulk string, in the
# digit widths _line accepts (4 and 6 digits).
_FIRST = re.compile(rb"\*(\d{1,4})\r\n\$(\d{1,6})\r\n")


def resp_plain(buf: bytes | bytearray, pos: int = 0) -> bool:
    """Cheap and sure: the array at pos is an ordinary command (resp_probe says NOT_RESP).
    False when its first name is sensitive, cut, or the header is not the usual shape."""
    m = _FIRST.match(buf, pos)
    if m is None:
        return False
    start = m.end()
    end = start + int(m[2])
    return (1 <= int(m[1]) <= _MAX_ELEMS and end - start <= _MAX_BULK
            and buf[end : end + 2] == b"\r\n"
            and bytes(buf[start:end]).upper() not in _SENSITIVE)


def resp_probe(buf: bytes | bytearray, pos: int) -> int:
    """End offset of a complete sensitive RESP array at pos, NEED_MORE, or NOT_RESP."""
    got = _elements(buf, pos)
    return got if isinstance(got, int) else got[1]


def _secret_indices(words: list[bytes]) -> list[tuple[int, int]]:
    """(element index, bytes of prefix to keep) for each element that holds a credential."""
    cmd = words[0].upper()
    out: list[tuple[int, int]] = []
    if cmd == b"AUTH":
        out = [(i, 0) for i in range(1, len(words))]
    elif cmd in (b"HELLO", b"MIGRATE"):
        for i, w in enumerate(words):
            if w.upper() == b"AUTH":
                out += [(j, 0) for j in range(i + 1, min(i + 3 if cmd == b"HELLO" else i + 2,
                                                      len(words)))]
            elif w.upper() == b"AUTH2":
                out += [(j, 0) for j in range(i + 1, min(i + 3, len(words)))]
    elif cmd == b"ACL" and len(words) > 1 and words[1].upper() == b"SETUSER":
        out = [(i, 1) for i in range(3, len(words)) if words[i][:1] in (b">", b"<", b"#", b"!")]
    elif cmd == b"CONFIG" and len(words) > 1 and words[1].upper() == b"SET":
        out = [(i + 1, 0) for i in range(2, len(words) - 1, 2)
               if words[i].lower() in (b"requirepass", b"masterauth")]
    return out


def resp_redact(seg: bytes, placeholder: Placeholder) -> tuple[bytes, int]:
    """Mask credential elements of one sensitive RESP array, fixing their `$len` headers.

    A truncated array (stream closed or gapped mid-command) keeps only the command name.
    Returns the new bytes and the number of masked elements.
    """
    got = _elements(seg, 0)
    if isinstance(got, int):
        cut = seg.find(b"\r\n", seg.find(b"$", 1) + 1)
        name_end = seg.find(b"\r\n", cut + 2) if cut >= 0 else -1
        if name_end < 0:
            return placeholder("password", seg), 1
        rest = seg[name_end + 2 :]
        if not rest or _MASKED_BULK.fullmatch(rest):
            return seg, 0
        ph = placeholder("password", rest)
        return seg[: name_end + 2] + b"$%d\r\n%s\r\n" % (len(ph), ph), 1
    elems, _ = got
    words = [seg[s:e] for _, s, e in elems]
    out = bytearray()
    last = 0
    hits = 0
    for i, keep in _secret_indices(words):
        hdr, start, end = elems[i]
        value = seg[start + keep : end]
        if not value or value.startswith(b"[REDACTED:"):
            continue
        new = seg[start : start + keep] + placeholder("password", value)
        out += seg[last:hdr] + b"$%d\r\n" % len(new) + new
        last = end
        hits += 1
    out += seg[last:]
    return bytes(out), hits


def resp_named(buf: bytes | bytearray, pos: int) -> bool:
    """True once the array at pos has a complete, sensitive command name (even if truncated)."""
    head = _line(buf, pos + 1, 6)
    if not isinstance(head, tuple) or buf[head[1] : head[1] + 1] != b"$":
        return False
    got = _line(buf, head[1] + 1, 8)
    if not isinstance(got, tuple):
        return False
    size, start = got
    name = bytes(buf[start : start + size])
    return len(name) == size and name.upper() in _SENSITIVE
