"""Live trace sessions: per-client bounded queues fed from the pipeline thread.

A slow client never blocks capture: when its queue is full the session is ended
with reason "slow_reader" and counted. Each session's share of a pipeline batch is
serialized once, on the sink thread, into the wire bytes the loop writes as they are.
The router also knows which targets' events an exporting session sends off the host,
and at which level (`exports`).
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
from itertools import repeat
from typing import Any

import orjson

from collector.capture.events import Batch, Event, narrow
from collector.protocol import event_line, events_frame
from collector.selectors import Level

_ids = itertools.count(1)
Wire = bytes  # (Session has a field named bytes: its annotations cannot say `bytes`)


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
    limit: int                          # events queued before the session is a slow reader
    batched: bool = False               # the client reads {"events": [...]} frames
    export: Level | None = None         # its events also leave the host, at this level
    events: int = 0
    bytes: int = 0
    ended: str | None = None            # reason, once ended
    started: float = field(default_factory=time.time)
    # The outbox: whole deliveries (one per pipeline batch), wire-ready, so the loop does no
    # per-event work; `queued` counts their events against `limit`, `queued_bytes` the
    # payload bytes in them (the session's byte count).
    outbox: deque[Wire] = field(default_factory=deque)
    queued: int = 0
    queued_bytes: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self, reason: str) -> None:
        """Thread-unsafe: call on the loop (use Router.end_where elsewhere)."""
        if self.ended is None:
            self.ended = reason
            self.wakeup.set()  # the pump sends what is queued, then stops

    def offer(self, data: Wire, n: int, nbytes: int = 0) -> bool:
        """Queue a delivery of n events (on the loop). False, queuing nothing, if it would
        exceed limit."""
        if self.queued + n > self.limit:
            return False
        self.outbox.append(data)
        self.queued += n
        self.queued_bytes += nbytes
        self.wakeup.set()
        return True

    def take(self) -> tuple[Wire, int, int]:
        """Everything queued, in order, as one write: (bytes, events, payload bytes)."""
        out = (b"".join(self.outbox), self.queued, self.queued_bytes)
        self.outbox.clear()
        self.queued = self.queued_bytes = 0
        if self.ended is None:
            self.wakeup.clear()
        return out


def new_session_id() -> str:
    return f"s{next(_ids)}-{secrets.token_hex(3)}"


def wire(events: list[Event], batched: bool) -> bytes:
    """The wire bytes of a delivery: one {"events"} frame, or one {"event"} line per event
    for clients that did not ask for batches."""
    if batched:
        return events_frame(orjson.dumps(events), len(events))
    return b"".join([event_line(orjson.dumps(ev)) for ev in events])


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

    def __call__(self, batch: Batch) -> None:
        """Pipeline sink (sink thread): each session's events of the batch, serialized here
        (once per session and batch; the batch's own JSON when a payload-level session
        sees all of it), then one hand-off to the loop per session."""
        events = batch.events
        per: dict[Session, list[Event]] = {}
        with self._lock:
            if not self._by_cookie or not events:
                return
            subs_of = self._by_cookie.get
            targets = list(map(_get, events, repeat("target"), repeat(0)))
            if targets.count(targets[0]) == len(targets):  # one target (C-level check)
                per = dict.fromkeys(subs_of(targets[0], ()), events)
            else:
                for ev, target in zip(events, targets, strict=True):
                    for s in subs_of(target, ()):
                        got = per.get(s)
                        if got is None:
                            per[s] = [ev]
                        else:
                            got.append(ev)
        for s, evs in per.items():
            if s.payload:
                nbytes = sum(map(len, filter(None, map(_get, evs, repeat("payload")))))
                whole = s.batched and len(evs) == len(events)
                data = batch.frame() if whole else wire(evs, s.batched)
            else:  # meta level: what narrow() leaves of each event
                evs = [seen for seen in map(_meta, evs) if seen is not None]
                if not evs:
                    continue
                nbytes = 0
                data = wire(evs, s.batched)
            s.loop.call_soon_threadsafe(self._deliver, s, data, len(evs), nbytes)

    def _deliver(self, s: Session, data: bytes, n: int, nbytes: int) -> None:
        """Runs on the loop: one call per session per batch, one offer."""
        if s.ended is not None:
            return
        if not s.offer(data, n, nbytes):
            self.counters["slow_reader_dropped"] += 1
            s.end("slow_reader")

    def end_where(self, pred: Any, reason: str) -> int:
        """End every session matching pred (thread-safe). Returns how many."""
        with self._lock:
            hit = [s for s in self.sessions.values() if pred(s)]
        for s in hit:
            s.loop.call_soon_threadsafe(s.end, reason)
        return len(hit)


# The router's per-event passes: the unbound dict.get over repeat() is C-level and about
# twice as fast as a methodcaller (0.056 -> 0.030 µs per event each, here).
_get = dict.get


def _meta(ev: Event) -> Event | None:
    return narrow(ev, Level.META)
