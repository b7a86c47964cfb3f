"""The redaction streams of the pipeline: one per (pid, fd or TLS connection, direction).

A secret split across two writes is only caught if both writes go through the same
stream, so each direction of each connection keeps one, in an LRU table bounded by
`capacity` (evictions counted). What a stream holds back is released when it closes:
on close(2), on exit, on eviction, or when its peer has been quiet for a while.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from collector.capture.events import StreamLike

StreamKey = tuple[int, "int | str", str]  # (tgid, fd or "ssl:ID", direction)
Closed = tuple[StreamKey, int, bytes]  # (key, target cookie, bytes the stream still held)
IDLE_FLUSH_S = 2.0


class StreamEntry:
    """One stream, when it was last used (monotonic, per batch) and its target's cookie."""

    __slots__ = ("cookie", "stream", "used")

    def __init__(self, stream: StreamLike, used: float, cookie: int) -> None:
        self.stream = stream
        self.used = used
        self.cookie = cookie


class StreamTable:
    """Not thread-safe: the pipeline's worker owns it (stop() runs after the worker ends)."""

    def __init__(self, open_stream: Callable[[], StreamLike], capacity: int,
                 counters: Counter[str]) -> None:
        self._open = open_stream
        self.capacity = capacity
        self.counters = counters
        self._entries: OrderedDict[StreamKey, StreamEntry] = OrderedDict()
        self.now = time.monotonic()
        self._last_key: StreamKey | None = None
        self._last: StreamEntry | None = None
        self._last_idle_scan = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def tick(self) -> None:
        """Start of a batch: one clock read stamps every use in it (LRU exact to the batch)."""
        self.now = time.monotonic()
        self._last_key = self._last = None

    def get(self, key: StreamKey, cookie: int) -> StreamEntry:
        """The entry of `key`, created (evicting the least recently used) if new.

        Consecutive records of one stream are the common case: the last entry is kept
        at hand, and an entry used many times in a batch moves to the LRU end once.
        """
        if key == self._last_key:
            entry = self._last
            assert entry is not None
            entry.cookie = cookie
            return entry
        entry = self._entries.get(key)
        now = self.now
        if entry is None:
            if len(self._entries) >= self.capacity:
                _key, old = self._entries.popitem(last=False)
                self.counters["streams_evicted"] += 1
                old.stream.close()  # bytes held back for an evicted stream are discarded, counted
            entry = self._entries[key] = StreamEntry(self._open(), now, cookie)
        else:
            if entry.used != now:
                self._entries.move_to_end(key)
                entry.used = now
            entry.cookie = cookie
        self._last_key, self._last = key, entry
        return entry

    def close(self, match: Callable[[StreamKey], bool]) -> list[Closed]:
        """Close every matching stream: (key, cookie, what it still held), in LRU order."""
        self._last_key = self._last = None
        out = []
        for key in [k for k in self._entries if match(k)]:
            entry = self._entries.pop(key)
            out.append((key, entry.cookie, entry.stream.close()))
        return out

    def close_idle(self, idle_s: float = IDLE_FLUSH_S) -> list[Closed]:
        """Close streams unused for `idle_s` (their peer went quiet); at most 4 scans per idle_s.

        Scanning every stream after every batch was hot-path work.
        """
        now = time.monotonic()
        if now - self._last_idle_scan < idle_s / 4:
            return []
        self._last_idle_scan = now
        cutoff = now - idle_s
        entries = self._entries
        return self.close(lambda k: entries[k].used < cutoff)
