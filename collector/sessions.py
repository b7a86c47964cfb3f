"""Live trace sessions: per-client bounded queues fed from the pipeline thread.

A slow client never blocks capture: when its queue is full the session is ended
with reason "slow_reader" and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from collector.events import Event

_ids = itertools.count(1)


@dataclass(eq=False)  # identity semantics: sessions are set members
class Session:
    id: str
    user: str
    uid: int
    cookies: set[int]
    payload: bool                       # False: meta level, payload stripped
    deadline: float                     # wall clock
    sources: tuple[str, ...]            # what allowed it ("grant ab12cd34", "role admin")
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event | None]
    events: int = 0
    bytes: int = 0
    ended: str | None = None            # reason, once ended
    started: float = field(default_factory=time.time)

    def end(self, reason: str) -> None:
        """Thread-unsafe: call on the loop (use Router.end_threadsafe elsewhere)."""
        if self.ended is None:
            self.ended = reason
            with contextlib.suppress(asyncio.QueueFull):  # consumer sees `ended` when it wakes
                self.queue.put_nowait(None)
            self.queue_wakeup()

    def queue_wakeup(self) -> None:
        # A full queue cannot take the None sentinel: drop one event to make room.
        if self.queue.full():
            try:
                self.queue.get_nowait()
                self.queue.put_nowait(None)
            except (asyncio.QueueEmpty, asyncio.QueueFull):
                pass


def _meta(ev: Event) -> Event:
    """The event a meta-level session sees: no payload bytes (nor their count)."""
    if "payload" in ev:
        return {k: v for k, v in ev.items() if k not in ("payload", "captured")}
    return ev


def new_session_id() -> str:
    return f"s{next(_ids)}-{secrets.token_hex(3)}"


class Router:
    """Fans redacted events out to the sessions subscribed to their target cookie."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_cookie: dict[int, set[Session]] = defaultdict(set)
        self.sessions: dict[str, Session] = {}
        self.counters: Counter[str] = Counter()

    def add(self, s: Session) -> None:
        with self._lock:
            self.sessions[s.id] = s
            for c in s.cookies:
                self._by_cookie[c].add(s)

    def remove(self, s: Session) -> None:
        with self._lock:
            self.sessions.pop(s.id, None)
            for c in s.cookies:
                subs = self._by_cookie.get(c)
                if subs is not None:
                    subs.discard(s)
                    if not subs:
                        del self._by_cookie[c]

    def __call__(self, events: list[Event]) -> None:
        """Pipeline sink (worker thread)."""
        per: dict[Session, list[Event]] = defaultdict(list)
        with self._lock:
            for ev in events:
                for s in self._by_cookie.get(ev.get("target", 0), ()):
                    per[s].append(ev)
        for s, evs in per.items():
            s.loop.call_soon_threadsafe(self._deliver, s, evs)

    def _deliver(self, s: Session, evs: list[Event]) -> None:
        """Runs on the loop: one call per session per batch, no per-event work beyond the put."""
        if s.ended is not None:
            return
        if not s.payload:
            evs = [_meta(ev) for ev in evs if ev["kind"] != "data"]
        put = s.queue.put_nowait
        for ev in evs:
            try:
                put(ev)
            except asyncio.QueueFull:
                self.counters["slow_reader_dropped"] += 1
                s.end("slow_reader")
                return

    def end_where(self, pred: Any, reason: str) -> int:
        """End every session matching pred (thread-safe). Returns how many."""
        with self._lock:
            hit = [s for s in self.sessions.values() if pred(s)]
        for s in hit:
            s.loop.call_soon_threadsafe(s.end, reason)
        return len(hit)
