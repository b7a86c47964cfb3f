"""Stream: one direction of one connection, cut by the Segmenter and redacted piece by piece."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redact.segment import CLEAN, HITS, LINES, TRIGGERED, Piece, Segmenter

if TYPE_CHECKING:
    from redact.engine import Redactor


class Stream:
    """One direction of one connection: feed() chunks, close() at the end, gap() on loss."""

    def __init__(self, redactor: Redactor, protocol: str | None = None) -> None:
        self._r = redactor
        self._protocol = protocol
        self._table = redactor._tables.get(protocol) or redactor._tables[None]
        self._memo: tuple[bytes, list[int] | tuple[int, ...]] | None = None
        self._seg = self._segmenter()
        self._closed = False

    def _segmenter(self) -> Segmenter:
        return Segmenter(resp=self._protocol == "redis", probe=self._probe)

    def _probe(self, text: bytes) -> int:
        """One RE2 scan answers both "does a segment span lines?" and "which rules?"."""
        hits = self._table.match(text)
        self._memo = (text, hits)
        if self._table.trigger in hits:
            return TRIGGERED
        return HITS if hits else CLEAN

    def _one(self, p: Piece) -> bytes:
        memo = self._memo
        # The probed text is the piece or starts with it: its hits cover the piece.
        if p[0] == LINES and memo is not None and memo[0].startswith(p[1]):
            return self._r._lines(p[1], self._table, memo[1])
        return self._r.piece(p, self._protocol)

    def _run(self, pieces: list[Piece]) -> bytes:
        out = self._one(pieces[0]) if len(pieces) == 1 else b"".join(map(self._one, pieces))
        self._memo = None
        return out

    def _fail(self) -> bytes:
        """Never raise, never leak: drop what is held, mask it, count it."""
        self._r._counts["engine_error"] += 1
        self._seg = self._segmenter()
        self._seg.gap()  # what follows the error is the rest of an unknown field
        return b"[REDACTED:error]"

    def feed(self, chunk: bytes) -> bytes:
        """Bytes safe to emit so far; a bounded tail (at most one segment) is held back."""
        if self._closed or not chunk:
            return b""
        try:
            pieces = self._seg.push(chunk if type(chunk) is bytes else bytes(chunk))
            return self._run(pieces) if pieces else b""
        except Exception:  # see _fail
            return self._fail()

    def gap(self, n: int = 0) -> bytes:
        """n bytes were lost: emit what is complete, mask the field in progress."""
        if self._closed:
            return b""
        try:
            return self._run(self._seg.gap())
        except Exception:  # see _fail
            return self._fail()

    def close(self) -> bytes:
        """Flush the held tail, redacted. Further calls return b''."""
        if self._closed:
            return b""
        self._closed = True
        try:
            pieces = self._seg.finish()
            return self._run(pieces) if pieces else b""
        except Exception:  # see _fail
            return self._fail()

    @property
    def pending(self) -> int:
        """Bytes currently held back."""
        return self._seg.held()
