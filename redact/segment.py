"""Cut a byte stream into independently redactable segments, the same way for any chunking.

A segment is a line (ended by LF or NUL) unless something needs more than one line:
a PEM private key block, a line ending in a secret keyword whose value follows on the next
lines (SQL `PASSWORD`, JSON keys, multipart fields), or a RESP array carrying a Redis
credential. Every cut depends only on bytes already seen, so the segments of a prefix are
segments of the whole: that is what makes `feed` over any split equal to one-shot `redact`.
A segment longer than CAP is not held: it is masked and the rest of its line is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from redact import re2compat
from redact.protocols import NEED_MORE, NOT_RESP, resp_named, resp_probe

CAP = 64 * 1024
SKIP_TAIL = 256  # bytes of a dropped line kept while dropping (a keyword or END may straddle)
LINES, JOINED, RESP, MASK, EMIT = range(5)
Piece = tuple[int, bytes]

_TERM = re.compile(rb"[\n\x00]")
_PEM_BEGIN = re.compile(rb"-----BEGIN[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----")
_CONT_WORDS = (
    rb"passw(?:or)?d|passphrase|pwd|secret|token|api[_.-]?key|auth(?:orization)?|credentials?"
    rb"|identified[ \t]+(?:with[ \t]+\w+[ \t]+)?(?:by|as)|requirepass|masterauth"
    rb"|form-data;[^\n\x00]*name=\"[^\"\n\x00]*\""
)
_CONT_TAIL = rb"(?:\\?[\"'])?[ \t]*[:=]?[ \t]*\r?[\n\x00]"
_CONT = re.compile(rb"(?i)(?:" + _CONT_WORDS + rb")" + _CONT_TAIL + rb"\Z")
# Anything that can make a segment longer than one line. A superset of what the slow path
# checks, so when it does not match, every segment is exactly one line.
TRIGGER_SRC = (
    rb"(?i)(?:" + _CONT_WORDS + rb")" + _CONT_TAIL + rb"|PRIVATE KEY"
    rb"|\*\d+\r\n\$\d+\r\n(?:auth|hello|acl|config|migrate)"
    rb"|(?:^|[\n\x00])p\x00"
)
_TRIGGER = re2compat.searcher(re2compat.compile(TRIGGER_SRC))


def triggered(text: bytes) -> bool:
    """Could any segment of text be longer than one line?"""
    return bool(_TRIGGER(text, 0, len(text))[0][0] >= 0)


CLEAN, HITS, TRIGGERED = range(3)


def _default_probe(text: bytes) -> int:
    return TRIGGERED if triggered(text) else HITS

# PostgreSQL PasswordMessage: 'p', int32 length, password, NUL. Its NULs cut it into
# segments; join them so the rule sees the whole message.
_PG_PASSWORD = b"p\x00"
_DAMAGED_BEGIN = re.compile(rb"(?:PRIVATE KEY|-----)(?: BLOCK)?(?:-----)?\r?[\n\x00]\Z")
_RESP_PART = re.compile(rb"(?i)(?:\*\d{1,4}|\$\d{1,6}|auth|hello|acl|config|migrate)\r\n")
_RESP_HEAD = re.compile(rb"\*\d{1,4}\r\n")


def drop_tail_py(buf: bytearray, data: bytes, keep: int) -> bool:
    """The dropped-line step: False (buf untouched) if data holds a line end (LF or NUL);
    else buf becomes the last `keep` bytes of buf + data. `drop_tail` is this, or its C
    twin (_droptail.c) where it was built."""
    if data.find(b"\n") >= 0 or data.find(b"\x00") >= 0:
        return False
    buf += data
    if len(buf) > keep:
        del buf[: len(buf) - keep]
    return True


drop_tail: Callable[[bytearray, bytes, int], bool] = drop_tail_py
DROP_IMPL = "python"
try:
    from redact._droptail import drop_tail
except ImportError:  # no compiler or Python headers where it was installed
    pass
else:
    DROP_IMPL = "c"


# The two line tests below run on every line dropped after a gap (a request line cut by
# the capture cap, say): in `re` they cost ~0.5 and ~4 µs on a 60 B line, so each first
# checks what it cannot match without (~50 ns and ~1 µs).

def _pem_opens(line: bytes) -> bool:
    if b"-----BEGIN" not in line:  # _PEM_BEGIN starts with it
        return False
    ends = [m.end() for m in _PEM_BEGIN.finditer(line)]
    return bool(ends) and b"-----END" not in line[ends[-1] :]


def _continues(line: bytes) -> bool:
    """Does the line end in a keyword whose value follows on the next lines (_CONT)? The
    RE2 TRIGGER is a superset of _CONT (TRIGGER_SRC), and linear: Python's search tries the
    keywords at every byte."""
    return triggered(line) and _CONT.search(line) is not None


@dataclass
class _Join:
    pem: bool
    extra: int
    scan: int


class Segmenter:
    """Stateful cutter: push() bytes, get pieces; finish() flushes; gap() fails closed."""

    def __init__(self, resp: bool = False, probe: Callable[[bytes], int] | None = None) -> None:
        self._buf = bytearray()
        # probe(text) -> CLEAN (no rule can match), HITS, or TRIGGERED (a segment may span
        # lines). A Stream passes one that also keeps the prefilter result for the LINES
        # piece it is about to get; the default only knows about the trigger.
        self._probe = probe or _default_probe
        # Public, read-only for callers (adopt() sets them): the held bytes are a partial
        # line known to need no redaction; RESP traffic was seen (or declared), so a gap
        # drops to the next command.
        self.clean = False
        # 0: normal, 1: drop to end of line, 2: drop to end of a PEM END line,
        # 3: drop to the next line that starts a RESP array (Redis traffic after a gap),
        # 4: drop the lines a dropped keyword line would have joined (its value)
        self._skip = 0
        self._extra = 0
        self._dropped = 0  # bytes dropped in mode 2: a PEM block is never longer than CAP
        self._slow_until = -1  # within one drain: end of a region known to need the slow path
        self.resp = resp
        self._end_seen = False
        self._join: _Join | None = None

    def held(self) -> int:
        return len(self._buf)

    # A Stream shares its buffer with its Segmenter: while the Segmenter is idle and holds at
    # most a plain partial line, the Stream may append to that line itself (no LF/NUL, not a
    # RESP array), then calls adopt() before the next push().
    @property
    def idle(self) -> bool:
        """No join and no drop in progress: what is held is at most a partial segment."""
        return not self._skip and self._join is None

    def adopt(self, buf: bytearray, *, clean: bool, resp: bool) -> None:
        """Cut `buf` from now on (shared with the caller). Only while idle: buf holds at most
        a plain partial line, `clean` if known to need no redaction, `resp` if RESP traffic
        was seen meanwhile."""
        self._buf = buf
        self.clean = clean
        self.resp = self.resp or resp

    def push_dropped(self, data: bytes) -> bool:
        """push() for the common case while dropping the rest of a line (after a gap or an
        oversize segment): data with no line end is dropped but for the tail the drop step
        keeps, without the general loop. False (nothing taken) otherwise: call push()."""
        if self._skip != 1 or not drop_tail(self._buf, data, SKIP_TAIL):
            return False
        self.clean = False
        return True

    def push(self, data: bytes) -> list[Piece]:
        if not self._buf and not self._skip and self._join is None and data[:1] not in (b"", b"*"):
            fast = self._push_lines(data)
            if fast is not None:
                return fast
        self.clean = False
        self._buf += data
        return self._drain(final=False)

    def _push_lines(self, data: bytes) -> list[Piece] | None:
        """The common case, without the general loop: an idle segmenter gets whole lines
        and maybe a partial one. Exactly what _drain would do, or None to let it."""
        if len(data) > CAP:
            return None
        last = max(data.rfind(b"\n"), data.rfind(b"\x00"))
        if last < 0 or data.rfind(b"*", max(1, last + 1 - 40), last + 1) > 0:
            return None
        # Probing all of data also answers for its prefix `region` (a superset of hits; the
        # trigger has no end anchor), and says whether the held rest can be emitted as is.
        verdict = self._probe(data)
        if verdict == TRIGGERED:
            return None
        rest = data[last + 1 :]
        if rest[:1] == b"*":
            self.resp = self.resp or rest[1:2].isdigit()
        self._buf += rest
        self.clean = verdict == CLEAN
        return [(LINES, data[: last + 1])]

    def finish(self) -> list[Piece]:
        if self.clean:  # a clean partial line (no terminator, so no RESP or join either)
            out: list[Piece] = [(EMIT, bytes(self._buf))]
            self._buf.clear()
            self.clean = False
            return out
        out = self._drain(final=True)
        self._buf.clear()
        self._join = None
        self._skip = 0
        return out

    def gap(self) -> list[Piece]:
        self.clean = False
        out = self._drain(final=False)
        pem = (self._join is not None and self._join.pem) or _pem_opens(bytes(self._buf))
        self._buf.clear()
        self._join = None
        # In RESP traffic the lost bytes may hold a command name or a `$len`: what follows
        # cannot be trusted until the next command starts.
        self._skip = 2 if pem or self._skip == 2 else 3 if self.resp else 1
        self._dropped = 0
        self._end_seen = False
        out.append((MASK, b"gap"))
        return out

    def _oversize(self, out: list[Piece], start: int) -> tuple[int, bool]:
        """Fail closed on a segment longer than CAP: mask it, then drop the rest of its line."""
        pem = self._join is not None and self._join.pem
        out.append((MASK, b"oversize"))
        self._join = None
        self._skip = 2 if pem else 1
        self._dropped = 0
        self._end_seen = False
        return start, False

    def _drain(self, final: bool) -> list[Piece]:
        out: list[Piece] = []
        buf = self._buf
        pos = 0
        stop = False
        self._slow_until = -1
        while not stop:
            if self._skip:
                pos, stop = self._skip_step(out, pos, final)
            elif self._join is not None:
                pos, stop = self._join_step(out, pos, final)
            elif pos >= len(buf):
                stop = True
            else:
                got = None
                if buf[pos] == 0x2A:  # '*'
                    self.resp = self.resp or buf[pos + 1 : pos + 2].isdigit()
                    got = self._resp_step(out, pos, final)
                pos, stop = got if got is not None else self._plain_step(out, pos, final)
        del buf[:pos]
        if self._join is not None:
            self._join.scan -= pos
        return out

    def _skip_step(self, out: list[Piece], pos: int, final: bool) -> tuple[int, bool]:
        buf = self._buf
        if self._skip == 3:
            if pos < len(buf) and buf[pos] == 0x2A:
                self._skip = 0
                return pos, False
            nl = buf.find(b"\n", pos)
            return (len(buf), True) if nl < 0 else (nl + 1, False)
        if self._skip == 4 and buf[pos : pos + 1] == b"*":
            self._skip = 0
            return pos, False
        m = _TERM.search(buf, pos)
        if m is None:
            if self._skip == 2 and b"-----END" in buf[pos:]:
                self._end_seen = True
            # Keep a tail: the keyword that makes the dropped line join the next ones is at
            # its end, and an END marker may straddle two chunks.
            return (len(buf) if final else max(pos, len(buf) - SKIP_TAIL)), True
        i = m.start()
        line = bytes(buf[pos : i + 1])
        if self._skip == 2:
            self._dropped += len(line)
            if not (self._end_seen or b"-----END" in line) and self._dropped <= CAP:
                return i + 1, False
        elif _pem_opens(line) or ((b"-----" in line or b"PRIVATE KEY" in line)
                                  and _DAMAGED_BEGIN.search(line) and b"END" not in line):
            self._skip, self._dropped = 2, 0  # a (maybe cut) BEGIN line: drop the key body
            return i + 1, False
        elif _RESP_PART.fullmatch(line):
            self._skip = 3  # we lost the head of a RESP array: drop to the next command
            self.resp = True
            return i + 1, False
        elif _continues(line):
            self._skip, self._extra = 4, 3
            return i + 1, False
        elif self._skip == 4:
            self._extra -= 1
            if self._extra > 0:
                return i + 1, False
        out.append((EMIT, bytes(buf[i : i + 1])))
        self._skip = 0
        self._end_seen = False
        return i + 1, False

    def _resp_step(self, out: list[Piece], pos: int, final: bool) -> tuple[int, bool] | None:
        """A sensitive RESP array at pos becomes one RESP piece; None: not one, go plain."""
        buf = self._buf
        end = resp_probe(buf, pos)
        if end == NOT_RESP:
            return None
        if end == NEED_MORE:
            if len(buf) - pos > CAP:
                return self._oversize(out, pos)
            if not final:
                return pos, True
            if not resp_named(buf, pos):
                return None
            end = len(buf)
        out.append((RESP, bytes(buf[pos:end])))
        return end, False

    def _plain_step(self, out: list[Piece], pos: int, final: bool) -> tuple[int, bool]:
        buf = self._buf
        if pos < self._slow_until:  # this region already triggered: go line by line
            return self._one_line(out, pos, final)
        # Lines longer than CAP are masked anyway, so never look further than that.
        window = pos + CAP + 1
        last = max(buf.rfind(b"\n", pos, window), buf.rfind(b"\x00", pos, window))
        if last < 0:
            if len(buf) - pos > CAP:
                return self._oversize(out, pos)
            if final:
                out.append((LINES, bytes(buf[pos:])))
                return len(buf), True
            return pos, True
        region = bytes(buf[pos : last + 1])
        star = region.rfind(b"*", max(1, len(region) - 40))
        if star > 0:
            # A RESP array may start here whose command name is not in yet: keep that line
            # and what follows for the slow path, which waits for the name.
            region = region[: max(region.rfind(b"\n", 0, star), region.rfind(b"\x00", 0, star)) + 1]
        if region and len(region) <= CAP:
            if self._probe(region) != TRIGGERED:
                out.append((LINES, region))
                return pos + len(region), False
            self._slow_until = pos + len(region)
        return self._one_line(out, pos, final)

    def _one_line(self, out: list[Piece], pos: int, final: bool) -> tuple[int, bool]:
        """The slow path: decide the segment that starts at pos by its first line."""
        buf = self._buf
        m = _TERM.search(buf, pos)
        assert m is not None
        i = m.start()
        if i + 1 - pos > CAP:
            return self._oversize(out, pos)
        line = bytes(buf[pos : i + 1])
        star = line.rfind(b"*")
        if star > 0 and _RESP_HEAD.fullmatch(line, star):
            # A RESP array glued to the end of a line: cut before it if it is sensitive.
            end = resp_probe(buf, pos + star)
            if end == NEED_MORE and not final:
                return pos, True
            if end > 0 or (end == NEED_MORE and resp_named(buf, pos + star)):
                out.append((LINES, line[:star]))
                return pos + star, False
        pem = _pem_opens(line)
        if not pem and line != _PG_PASSWORD and not _continues(line):
            out.append((LINES, line))
            return i + 1, False
        self._join = _Join(pem=pem, extra=3, scan=i + 1)
        return pos, False

    def _join_step(self, out: list[Piece], pos: int, final: bool) -> tuple[int, bool]:
        """Grow the joined segment starting at pos by one line; close it when complete."""
        buf = self._buf
        join = self._join
        assert join is not None
        if not join.pem and buf[join.scan : join.scan + 1] == b"*":
            # A keyword's value never starts a RESP array; let the array be cut on its own.
            out.append((JOINED, bytes(buf[pos : join.scan])))
            self._join = None
            return join.scan, False
        m = _TERM.search(buf, join.scan)
        if m is None:
            if len(buf) - pos > CAP:
                return self._oversize(out, join.scan)
            if final:
                out.append((JOINED, bytes(buf[pos:])))
                self._join = None
                return len(buf), True
            return pos, True
        i = m.start()
        if i + 1 - pos > CAP:
            return self._oversize(out, join.scan)
        line = bytes(buf[join.scan : i + 1])
        join.scan = i + 1
        if join.pem:
            done = b"-----END" in line
        else:
            join.pem = _pem_opens(line)
            join.extra = 3 if _continues(line) else join.extra - 1
            done = not join.pem and join.extra <= 0
        if done:
            out.append((JOINED, bytes(buf[pos : i + 1])))
            self._join = None
            return i + 1, False
        return pos, False
