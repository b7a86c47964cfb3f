"""Live trace sessions: per-client bounded queues fed from the pipeline thread.

A slow client never blocks capture: when its queue is full the session is ended
with reason "slow_reader" and counted. The router also knows which targets' events an
exporting session sends off the host, and at which level (`exports`).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from collector.capture.events import Event, narrow
from collector.protocol import event, event_line
from collector.selectors import Level

_ids = itertools.count(1)
# What a session's queue holds: the event's wire line and its payload length (for the
# session's byte count), so the loop only joins and writes.
Frame = tuple[bytes, int]


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
    limit: int                          # frames queued before the session is a slow reader
    export: Level | None = None         # its events also leave the host, at this level
    events: int = 0
    bytes: int = 0
    ended: str | None = None            # reason, once ended
    started: float = field(default_factory=time.time)
    # The outbox: whole deliveries (one per pipeline batch), so the loop does no per-event
    # queue operation; `queued` counts their frames against `limit`.
    outbox: deque[list[Frame]] = field(default_factory=deque)
    queued: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self, reason: str) -> None:
        """Thread-unsafe: call on the loop (use Router.end_where elsewhere)."""
        if self.ended is None:
            self.ended = reason
            self.wakeup.set()  # the pump sends what is queued, then stops

    def offer(self, frames: list[Frame]) -> bool:
        """Queue a delivery (on the loop). False, queuing nothing, if it would exceed limit."""
        if self.queued + len(frames) > self.limit:
            return False
        self.outbox.append(frames)
        self.queued += len(frames)
        self.wakeup.set()
        return True

    def take(self) -> list[Frame]:
        """Everything queued, in order (on the loop)."""
        frames = [f for delivery in self.outbox for f in delivery]
        self.outbox.clear()
        self.queued = 0
        if self.ended is None:
            self.wakeup.clear()
        return frames


def new_session_id() -> str:
    return f"s{next(_ids)}-{secrets.token_hex(3)}"


class Router:
    """Fans redacted events out to the sessions subscribed to their target cookie."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_cookie: dict[int, set[Session]] = defaultdict(set)
        self.sessions: dict[str, Session] = {}
        self.counters: Counter[str] = Counter()
        # cookie -> (level exported, the exporting session): replaced whole on add/remove,
        # so the exporters' threads read it without the lock.
        self.exports: Mapping[int, tuple[Level, str]] = {}

    def add(self, s: Session) -> None:
        with self._lock:
            self.sessions[s.id] = s
            for c in s.cookies:
                self._by_cookie[c].add(s)
            self._exports_changed()

    def remove(self, s: Session) -> None:
        with self._lock:
            self.sessions.pop(s.id, None)
            for c in s.cookies:
                subs = self._by_cookie.get(c)
                if subs is not None:
                    subs.discard(s)
                    if not subs:
                        del self._by_cookie[c]
            self._exports_changed()

    def _exports_changed(self) -> None:
        """Rebuild `exports` (under the lock): per cookie, the highest level any exporting
        session on it allows, and that session (named in the exported resource)."""
        out: dict[int, tuple[Level, str]] = {}
        for s in sorted(self.sessions.values(), key=lambda s: s.started):
            if s.export is None:
                continue
            for c in s.cookies:
                if c not in out or s.export > out[c][0]:
                    out[c] = (s.export, s.id)
        self.exports = out

    def exporting_session(self, cookie: int) -> str | None:
        """The session whose export covers a target cookie (any thread)."""
        got = self.exports.get(cookie)
        return got[1] if got is not None else None

    def __call__(self, events: list[Event], bodies: list[bytes] | None = None,
                 _procs: object = None) -> None:
        """Pipeline sink (sink thread). bodies[i] is events[i] serialized (done once)."""
        if bodies is None:
            bodies = [orjson.dumps(ev) for ev in events]
        per: dict[Session, list[tuple[Event, bytes]]] = defaultdict(list)
        with self._lock:
            for ev, body in zip(events, bodies, strict=True):
                for s in self._by_cookie.get(ev.get("target", 0), ()):
                    per[s].append((ev, body))
        for s, evs in per.items():
            s.loop.call_soon_threadsafe(self._deliver, s, evs)

    def _deliver(self, s: Session, evs: list[tuple[Event, bytes]]) -> None:
        """Runs on the loop: one call per session per batch; frames built, one offer."""
        if s.ended is not None:
            return
        if s.payload:
            frames = [(event_line(body), len(ev.get("payload") or ())) for ev, body in evs]
        else:  # meta level: what narrow() leaves; re-serialized only where it hid something
            frames = []
            for ev, body in evs:
                seen = narrow(ev, Level.META)
                if seen is not None:
                    frames.append((event_line(body) if seen is ev else event(seen), 0))
        if frames and not s.offer(frames):
            self.counters["slow_reader_dropped"] += 1
            s.end("slow_reader")

    def end_where(self, pred: Any, reason: str) -> int:
        """End every session matching pred (thread-safe). Returns how many."""
        with self._lock:
            hit = [s for s in self.sessions.values() if pred(s)]
        for s in hit:
            s.loop.call_soon_threadsafe(s.end, reason)
        return len(hit)
