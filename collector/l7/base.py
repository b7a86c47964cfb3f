"""Framing on raw bytes per direction: buffer, known-length skips across gaps, loss and resync.

A protocol parser subclasses Parser and writes `step()` (frame one message from
side.buf, or return False for "need more"), `sync()` (where a fresh chunk may start a
message after a loss) and, where it can salvage something, `lost()`. Everything about
gaps lives here: bytes the syscall moved but we did not capture are either inside a
message whose length is known (skipped, still in sync) or not (the side is lost until
sync() finds a plausible message start, and the message in progress is partial).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable

from collector.l7.record import Emitter, Pending

HEAD_MAX = 64 * 1024  # a framing region (headers, a RESP line) longer than this is garbage


class Side:
    """One direction's unparsed bytes. `pos` is the stream offset of buf[0]."""

    __slots__ = ("buf", "eat", "eaten", "lost", "mark", "offs", "pos", "req", "skip", "then",
                 "ts", "tss")

    def __init__(self, req: bool) -> None:
        self.req = req  # True: the client->server direction
        self.buf = bytearray()
        self.pos = 0
        self.skip = 0  # bytes of the current message still to come, not needed (dropped)
        self.lost = False  # out of sync: waiting for sync() to accept a chunk
        self.mark = 0  # requests seen when it was lost (a response side waits for a new one)
        self.eat = False  # a body delimited by close: every byte belongs to it
        self.eaten = 0
        self.then: Callable[[float], None] | None = None  # run when the skip completes
        self.ts = 0.0  # ts of the latest input (feed or gap)
        self.offs: list[int] = []  # stream offset where each buffered chunk starts
        self.tss: list[float] = []  # ... and its ts

    def append(self, data: bytes, ts: float) -> None:
        self.offs.append(self.pos + len(self.buf))
        self.tss.append(ts)
        self.buf += data

    def ts_at(self, off: int) -> float:
        """ts of the chunk that brought the byte at stream offset `off` (buf-relative)."""
        i = bisect_right(self.offs, self.pos + off) - 1
        return self.tss[i] if i >= 0 else self.ts

    def consume(self, n: int, then: Callable[[float], None] | None = None) -> None:
        """Drop n bytes of framed message; what is not buffered yet is skipped as it comes.
        `then(ts)` runs when the message's last byte has passed (now, or after the skip)."""
        have = len(self.buf)
        if n <= have:
            if then is not None:
                then(self.ts_at(n - 1))
            del self.buf[:n]
        else:
            self.skip = n - have
            self.then = then
            self.buf.clear()
        self.pos += n
        # keep the chunk that holds buf[0] and the ones after it
        i = bisect_right(self.offs, self.pos) - 1
        if i > 0:
            del self.offs[:i]
            del self.tss[:i]

    def reset(self) -> None:
        self.buf.clear()
        self.offs.clear()
        self.tss.clear()
        self.skip = 0
        self.then = None

    def done(self) -> None:
        """The skip completed: run what waited for the message's last byte."""
        if self.then is not None:
            then, self.then = self.then, None
            then(self.ts)


class Parser:
    """Base of the protocol parsers: the feed/gap/resync machinery and in-order pairing."""

    proto = ""

    def __init__(self, out: Emitter, stats: Counter[str]) -> None:
        self.out = out
        self.stats = stats
        self.req = Side(True)
        self.resp = Side(False)
        self.pending: deque[Pending] = deque()
        self.dormant = False  # e.g. TLS negotiated: nothing more to parse on this connection
        self.cutting = False  # step() may frame an incomplete message (a gap follows it)
        self.requests = 0  # requests framed so far (parsers count them)

    # -- protocol hooks ------------------------------------------------------------------
    def step(self, side: Side) -> bool:
        """Frame (part of) one message at side.buf[0]; False when more bytes are needed."""
        raise NotImplementedError

    def sync(self, side: Side, data: bytes) -> int | None:
        """After a loss: offset in this fresh chunk where a message plausibly starts."""
        return None

    def lost(self, side: Side) -> None:
        """A gap hit a framing region; side.buf holds the incomplete message (if any)."""
        if not side.req:
            self.drop_response()

    def end(self, side: Side) -> None:
        """The peer closed: a body delimited by close is complete."""

    # -- machinery -------------------------------------------------------------------------
    def feed(self, side: Side, data: bytes, ts: float) -> None:
        if self.dormant or not data:
            return
        side.ts = ts
        if side.eat:
            side.eaten += len(data)
            return
        if side.skip:
            k = min(side.skip, len(data))
            side.skip -= k
            data = data[k:]
            if not side.skip:
                side.done()
            if not data:
                return
        if side.lost:
            # A response side resyncs only after a new request: until then a chunk is most
            # likely the middle of the reply we lost, and would misframe as new replies.
            at = self.sync(side, data) if side.req or self.requests != side.mark else None
            if at is None:
                self.stats["bytes_unsynced"] += len(data)
                side.pos += len(data)
                return
            self.stats["resyncs"] += 1
            side.lost = False
            side.pos += at
            data = data[at:]
        side.append(data, ts)
        self.pump(side)

    def gap(self, side: Side, n: int, ts: float) -> None:
        if self.dormant or n <= 0:
            return
        side.ts = ts
        self.stats["gaps"] += 1
        if side.eat:
            side.eaten += n
            return
        if side.lost:
            side.pos += n
            return
        if not side.skip and side.buf and not self._cut(side):
            self.stats["gaps_lost_sync"] += 1
            self.desync(side)
            side.pos += n
            return
        if side.skip >= n:  # inside a message of known length: still in sync
            side.skip -= n
            side.pos += n
            if not side.skip:
                side.done()
            return
        if side.skip:  # the message ends inside the gap; what follows it is lost
            n -= side.skip
            side.pos += side.skip
            side.skip = 0
            side.done()
            if side.eat:
                side.eaten += n
                return
        # the next message starts inside the gap: out of sync until sync() finds one
        self.stats["gaps_lost_sync"] += 1
        self.desync(side)
        side.pos += n

    def _cut(self, side: Side) -> bool:
        """side.buf holds the start of a message and a gap follows: frame it from what was
        captured when its length is known (the step then skips the rest); False if not."""
        self.cutting = True
        try:
            done = self.step(side)
        finally:
            self.cutting = False
        return done and not side.buf and side.skip > 0

    def desync(self, side: Side) -> None:
        """Out of sync on this side (a gap in framing, or bytes that do not parse)."""
        self.lost(side)
        side.reset()
        side.lost = True
        side.mark = self.requests

    def pump(self, side: Side) -> None:
        while side.buf and not side.skip and not side.lost and not side.eat \
                and not self.dormant:
            if not self.step(side):
                # never buffer without bound: frame a huge message from its first bytes
                if len(side.buf) > HEAD_MAX and not self._cut(side):
                    self.stats["oversize_frames"] += 1
                    self.desync(side)
                break

    def close(self, ts: float) -> None:
        for side in (self.req, self.resp):
            if side.eat:
                self.end(side)
        while self.pending:
            p = self.pending.popleft()
            p.partial = True
            self.stats["unanswered"] += 1
            self.out.emit(p, None)

    # -- pairing helpers ---------------------------------------------------------------------
    def head(self, ts: float) -> Pending:
        """The request the next response answers; a response with none becomes partial."""
        if self.pending:
            return self.pending[0]
        self.stats["unpaired_responses"] += 1
        p = Pending(ts=ts, partial=True, orphan=True)
        self.pending.append(p)
        return p

    def finish(self, ts: float | None) -> None:
        p = self.pending.popleft()
        self.out.emit(p, ts)

    def drop_response(self) -> None:
        """The response in progress was lost: its request is emitted partial now."""
        if self.pending:
            p = self.pending.popleft()
            p.partial = True
            self.out.emit(p, None)
