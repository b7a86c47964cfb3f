"""Stream: one direction of one connection, cut by the Segmenter and redacted piece by piece.

Most traffic needs no Segmenter at all: while the bytes held back are a plain partial line
(no line end, not a RESP array, no join or drop in progress), a chunk without a line end is
only appended, and a chunk with one costs a single RE2 scan: when that scan finds neither a
rule hint nor the TRIGGER, every complete line goes out as it is. That is exactly what the
Segmenter's own line fast path decides, without its bookkeeping; anything else (a TRIGGER
hit, a `*` that may start a RESP array, a segment over CAP, gap()) hands the same buffer to
the Segmenter, and the stream comes back to the fast path once the Segmenter is idle again
(except in RESP traffic, where most cuts are near a `*`).
"""

from __future__ import annotations

from redact.protocols import resp_plain
from redact.segment import CAP, CLEAN, HITS, LINES, TRIGGERED, Piece, Segmenter
from redact.table import Hits, Table

# A partial line kept after a cut is scanned with the lines before it when it is at most
# this long (close() then needs no scan); a longer one only once it is complete.
_SCAN_REST = 512


class Stream:
    """One direction of one connection: feed() chunks, close() at the end, gap() on loss."""

    __slots__ = ("_buf", "_closed", "_fast", "_hits", "_match", "_memo", "_resp", "_seg",
                 "_table", "_trigger")

    def __init__(self, table: Table) -> None:
        """A stream over one Table (Redactor.stream(protocol) gives the protocol's)."""
        self._table = table
        self._match = table.match
        self._trigger = table.trigger
        self._memo: tuple[bytes, Hits] | None = None
        self._seg: Segmenter | None = None  # made on first need; shares _buf (see adopt)
        # Held-back bytes. While _fast, they are a plain partial line: no LF or NUL, not
        # starting with `*`, at most CAP, and the Segmenter (if any) is idle.
        self._buf = bytearray()
        self._fast = True
        # _fast only: RE2 hits of a text that ends with the held partial line (a superset of
        # its own), or None when bytes were added since.
        self._hits: Hits | None = None
        # The Segmenter's "RESP traffic" flag while the fast path runs.
        self._resp = table.protocol == "redis"
        self._closed = False

    # ------------------------------------------------------------------ slow path
    def _segmenter(self) -> Segmenter:
        seg = self._seg
        if seg is None:
            seg = self._seg = Segmenter(resp=self._resp, probe=self._probe)
        elif not self._fast:
            return seg
        # The fast path only ever left a plain partial line in _buf, with the Segmenter idle.
        seg.adopt(self._buf, clean=self._hits is not None and not self._hits, resp=self._resp)
        self._fast = False
        return seg

    def _settle(self, seg: Segmenter) -> None:
        """Back to the fast path once the Segmenter holds nothing but a plain partial line.
        Not in RESP traffic: there most cuts are near a `*` and the fast path would only
        try and hand over."""
        buf = self._buf
        if (seg.idle and not seg.resp and buf[:1] != b"*"
                and buf.find(b"\n") < 0 and buf.find(b"\x00") < 0):
            self._fast = True
            self._hits = () if seg.clean else None

    def _probe(self, text: bytes) -> int:
        """One RE2 scan answers both "does a segment span lines?" and "which rules?"."""
        hits = self._match(text)
        self._memo = (text, hits)
        if self._trigger in hits:
            return TRIGGERED
        return HITS if hits else CLEAN

    def _one(self, p: Piece) -> bytes:
        memo = self._memo
        # The probed text is the piece or starts with it: its hits cover the piece.
        if p[0] == LINES and memo is not None and memo[0].startswith(p[1]):
            return self._table.lines(p[1], memo[1])
        return self._table.piece(p)

    def _run(self, pieces: list[Piece]) -> bytes:
        if not pieces:
            return b""
        out = self._one(pieces[0]) if len(pieces) == 1 else b"".join(map(self._one, pieces))
        self._memo = None
        return out

    def _fail(self) -> bytes:
        """Never raise, never leak: drop what is held, mask it, count it."""
        self._table.count("engine_error")
        self._memo = None
        self._seg = None
        self._buf = bytearray()
        self._fast = True
        self._hits = None
        self._resp = self._table.protocol == "redis"
        self._segmenter().gap()  # what follows the error is the rest of an unknown field
        return b"[REDACTED:error]"

    def _plain_resp(self, chunk: bytes) -> bool:
        """A chunk starts with `*` at a segment start: the Segmenter would note RESP traffic
        and cut a sensitive array on its own. True when it is surely not one (then plain
        lines); False leaves the decision to the Segmenter."""
        self._resp = self._resp or chunk[1:2].isdigit()
        return resp_plain(chunk)

    # ------------------------------------------------------------------ API
    def feed(self, chunk: bytes) -> bytes:
        """Bytes safe to emit so far; a bounded tail (at most one segment) is held back."""
        if not self._fast:
            # The Segmenter decides (here, not in a helper: one call less per feed).
            seg = self._seg
            if self._closed or seg is None or not chunk:
                return b""
            try:
                if type(chunk) is not bytes:
                    chunk = bytes(chunk)
                # Dropping the rest of a line and still no line end: the Segmenter only
                # keeps its tail (the write loop: one call, not its general loop).
                if seg.push_dropped(chunk):
                    return b""
                out = self._run(seg.push(chunk))
                self._settle(seg)
                return out
            except Exception:  # see _fail
                return self._fail()
        if type(chunk) is not bytes or not chunk:
            return self._feed(chunk)
        try:
            buf = self._buf
            held = len(buf)
            if held + len(chunk) > CAP:
                return self._feed(chunk)  # the Segmenter's cap logic
            last = chunk.rfind(b"\n")
            nul = chunk.rfind(b"\x00")
            if nul > last:
                last = nul
            if last < 0:
                # No line end: nothing can be cut, only held (the Segmenter would hold it
                # too). The first byte decides whether a RESP array may start here.
                if held or chunk[0] != 0x2A:
                    buf += chunk
                    self._hits = None
                    return b""
            elif (not chunk.startswith(b"*", last + 1)
                  and (held or chunk[0] != 0x2A or self._plain_resp(chunk))):
                end = held + last + 1
                # A RESP array may start near the cut whose name is not in yet: the
                # Segmenter waits for it (its line fast path tests the 40 bytes before the
                # cut, not the first byte; here in chunk, then in the held bytes).
                lo = end - 40
                if (chunk.rfind(b"*", max(lo - held, 1 - held, 0), last + 1) < 0
                        and (lo >= held or buf.rfind(b"*", max(lo, 1), held) < 0)):
                    text = bytes(buf) + chunk if held else chunk
                    # Scanning all of text also answers for its prefix (no hint or TRIGGER is
                    # anchored at the end) and for the partial line kept, which saves close()
                    # a scan; a long partial line is scanned once, when complete.
                    rest = len(text) - end
                    if rest > _SCAN_REST:
                        text = text[:end]
                    hits = self._match(text)
                    if not hits or self._trigger not in hits:
                        if held:
                            buf.clear()
                        if rest:
                            buf += chunk[last + 1 :]
                        if rest > _SCAN_REST:
                            self._hits = None
                        else:
                            self._hits = hits
                            if rest:
                                text = text[:end]
                        return self._table.lines(text, hits) if hits else text
            return self._feed(chunk)
        except Exception:  # see _fail
            return self._fail()

    def _feed(self, chunk: bytes) -> bytes:
        """The fast path hands over (or chunk is empty or not bytes): the Segmenter takes
        the held partial line and chunk."""
        if not chunk:
            return b""
        try:
            if type(chunk) is not bytes:
                return self.feed(bytes(chunk))
            seg = self._segmenter()
            out = self._run(seg.push(chunk))
            self._settle(seg)
            return out
        except Exception:  # see _fail
            return self._fail()

    def gap(self, n: int = 0) -> bytes:
        """n bytes were lost: emit what is complete, mask the field in progress."""
        if self._closed:
            return b""
        try:
            return self._run(self._segmenter().gap())
        except Exception:  # see _fail
            return self._fail()

    def close(self) -> bytes:
        """Flush the held tail, redacted. Further calls return b''."""
        if self._closed:
            return b""
        self._closed = True
        try:
            if self._fast:
                self._fast = False  # feed() after close() returns b"" (see feed)
                # A plain partial line is one last segment (the Segmenter would say LINES).
                tail = bytes(self._buf)
                self._buf.clear()
                hits = self._hits
                if not tail or (hits is not None and not hits):
                    return tail
                return self._table.lines(tail, hits)
            return self._run(self._segmenter().finish())
        except Exception:  # see _fail
            return self._fail()

    @property
    def pending(self) -> int:
        """Bytes currently held back."""
        return len(self._buf)


def redact_once(table: Table, data: bytes) -> bytes:
    """One complete payload cut by the Segmenter, as any stream would cut it: one-shot
    redaction when a segment may span lines (a TRIGGER hit) or data is over CAP."""
    stream = Stream(table)
    stream._segmenter()  # the line fast path would only scan again and hand over
    return stream.feed(data) + stream.close()
