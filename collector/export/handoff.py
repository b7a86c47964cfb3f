"""A bounded hand-off from a caller's thread to one worker: offer() never blocks or grows."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
Chunk = tuple[int, list[T]]  # (tag, items): what one offer() queued


class Handoff(Generic[T]):
    """At most `cap` items wait; offer() takes what fits and says how many it took.

    An offer is kept as one chunk (one append, whatever its size), so the caller pays per
    call, not per item; the caller counts what did not fit (it knows under which name).
    The worker takes up to max_n items: it waits for the first, then lingers up to
    `linger_s` for a full batch, so a trickle still leaves within `linger_s` and a flood
    leaves in full batches.
    """

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"hand-off capacity must be >= 1, got {cap}")
        self.cap = cap
        self._chunks: deque[Chunk[T]] = deque()
        self._held = 0  # items in _chunks
        self._cv = threading.Condition()
        self._closed = False
        self._want = 1  # items the waiting worker needs before it is woken early

    def __len__(self) -> int:
        return self._held

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, items: Sequence[T], tag: int = 0) -> int:
        """Queue as many of `items` as fit (all, or a prefix); returns how many."""
        n = len(items)
        if not n:
            return 0
        cv = self._cv
        with cv:
            before = self._held
            room = self.cap - before
            if self._closed or room <= 0:
                return 0
            took = n if n <= room else room
            # A copy: the caller may reuse its list; the items themselves are not copied.
            self._chunks.append((tag, list(items) if took == n else list(items[:took])))
            self._held = before + took
            # Wake the worker only when it waits for this: the first item, or a full batch.
            if before < self._want <= before + took:
                cv.notify()
            return took

    def take(self, max_n: int, linger_s: float, poll_s: float = 0.5) -> list[Chunk[T]] | None:
        """Chunks totalling at most max_n items (worker side), in offer order.

        [] after `poll_s` with nothing queued; None once closed and drained.
        """
        cv = self._cv
        with cv:
            if not self._held:
                self._want = 1
                if not self._closed:
                    cv.wait(poll_s)
                if not self._held:
                    return None if self._closed else []
            if self._held < max_n and linger_s > 0 and not self._closed:
                self._want = max_n
                deadline = time.monotonic() + linger_s
                while self._held < max_n and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    cv.wait(left)
                self._want = 1
            out: list[Chunk[T]] = []
            need = max_n
            chunks = self._chunks
            while need and chunks:
                tag, items = chunks[0]
                if len(items) <= need:
                    chunks.popleft()
                    out.append((tag, items))
                    need -= len(items)
                else:  # split: the rest stays first in line
                    out.append((tag, items[:need]))
                    chunks[0] = (tag, items[need:])
                    need = 0
            self._held -= max_n - need
            return out

    def close(self) -> None:
        """No more offers; the worker drains what is queued, then take() returns None."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def discard(self) -> list[Chunk[T]]:
        """Remove and return everything queued (shutdown past its deadline), for counting."""
        with self._cv:
            gone = list(self._chunks)
            self._chunks.clear()
            self._held = 0
            self._cv.notify_all()
            return gone


class Counts(Counter[str]):
    """Counters that several threads add to (the caller's, the worker's, the SDK's).

    Every add() holds one lock, so no update is lost; every key exists from the start, so
    a scrape iterating the counters never sees the dict change size under it.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        super().__init__(dict.fromkeys(keys, 0))
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self[key] += n
