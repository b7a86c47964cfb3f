"""Kernel records -> redacted events, off the reader thread: decode, redact, enrich, fan out.

The ring-buffer reader only appends batches here (never blocks). A worker thread
does the rest. Under overload we shed payload first, then whole batches; both counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable

from collector.enrich import Enricher
from collector.events import (
    Clock,
    Event,
    RedactorLike,
    StreamLike,
    exec_event,
    exit_event,
    fork_event,
    payload_of,
    printable,
    syscall_event,
)
from probes.layout import (
    DecodeError,
    ExecRecord,
    ExitRecord,
    ForkRecord,
    Sc,
    SyscallRecord,
    decode,
)

log = logging.getLogger("periscope.pipeline")

Sink = Callable[[list[Event]], None]
StreamKey = tuple[int, "int | str", str]  # (tgid, fd or "ssl:ID", direction)
STREAM_IDLE_FLUSH_S = 2.0


class Pipeline:
    def __init__(self, redactor: RedactorLike, sinks: list[Sink], enricher: Enricher,
                 queue_max: int = 65536, max_streams: int = 4096) -> None:
        self.redactor = redactor
        self.sinks = sinks
        self.enricher = enricher
        self.queue_max = queue_max
        self.max_streams = max_streams
        self.clock = Clock()
        self.counters: Counter[str] = Counter()  # read by metrics at scrape time
        self._queue: deque[list[bytes]] = deque()
        self._queued = 0
        self._cv = threading.Condition()
        self._stop = False
        self._streams: OrderedDict[StreamKey, tuple[StreamLike, float, int]] = OrderedDict()
        self._last_idle_scan = 0.0
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)

    # -- reader side: O(1), never blocks on downstream work ----------------------
    def submit(self, batch: list[bytes]) -> None:
        with self._cv:
            if self._queued + len(batch) > self.queue_max:
                self.counters["dropped_overload"] += len(batch)
                return
            self._queue.append(batch)
            self._queued += len(batch)
            self.counters["received"] += len(batch)
            self._cv.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)
        self._close_streams(lambda _k: True, round(time.time(), 6))

    def backlog(self) -> int:
        return self._queued

    # -- worker side ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait(timeout=0.5)
                    if not self._queue:
                        break
                if self._stop and not self._queue:
                    return
                batch = self._queue.popleft() if self._queue else []
                self._queued -= len(batch)
                shed_payload = self._queued > self.queue_max // 2
            try:
                events = self.process(batch, shed_payload=shed_payload)
                self._flush_idle(events)
                if events:
                    self._emit(events)
            except Exception:  # a bug must not kill capture: count it, keep going
                self.counters["pipeline_errors"] += 1
                log.exception("pipeline batch failed (%d records)", len(batch))

    def _emit(self, events: list[Event]) -> None:
        for sink in self.sinks:
            try:
                sink(events)
            except Exception:
                self.counters["sink_errors"] += 1
                log.exception("event sink %r failed", sink)

    def process(self, batch: list[bytes], shed_payload: bool = False) -> list[Event]:
        """Pure-ish core (no threads): decode and redact one batch of records."""
        out: list[Event] = []
        for raw in batch:
            try:
                rec = decode(raw)
            except DecodeError as err:
                self.counters[f"decode_{err.reason}"] += 1
                continue
            pid = rec.hdr.tgid
            if isinstance(rec, ExecRecord):
                ev = exec_event(rec, self.clock, self.redactor)
                self.enricher.forget(pid)
            elif isinstance(rec, ForkRecord):
                ev = fork_event(rec, self.clock)
            elif isinstance(rec, ExitRecord):
                ev = exit_event(rec, self.clock)
                self._close_streams(lambda k, p=pid: k[0] == p, ev["ts"], out)  # type: ignore[misc]
            else:
                ev = syscall_event(rec, self.clock, self.redactor)
                if rec.nr == Sc.CLOSE and rec.ret == 0:
                    self._close_streams(lambda k, p=pid, fd=rec.fd: k[:2] == (p, fd),  # type: ignore[misc]
                                        ev["ts"], out)
                else:
                    self._payload(ev, rec, shed_payload)
            self._enrich(ev)
            out.append(ev)
            if isinstance(rec, ExitRecord):
                self.enricher.forget(pid)
        self.counters["events"] += len(out)
        return out

    def _enrich(self, ev: Event) -> None:
        facts = self.enricher.facts(ev["pid"])
        if facts.comm is not None:
            ev["comm"] = facts.comm
        if facts.unit is not None:
            ev["unit"] = facts.unit

    def _payload(self, ev: Event, rec: SyscallRecord, shed: bool) -> None:
        got = payload_of(rec)
        if got is None:
            return
        data, missing = got
        if shed:
            self.counters["payload_shed"] += 1
            ev["payload_shed"] = True
            key = (rec.hdr.tgid, ev.get("conn", rec.fd), ev["direction"])
            self._stream(key, rec.hdr.cookie).gap(len(data) + missing)  # stays fail-closed
            return
        key = (rec.hdr.tgid, ev.get("conn", rec.fd), ev["direction"])
        stream = self._stream(key, rec.hdr.cookie)
        released = stream.feed(data)
        if missing:
            tail = stream.gap(missing)
            released += tail or b""
            ev["truncated"] = True
        ev["captured"] = len(data)
        if released:
            ev["payload"] = printable(released)
        else:
            ev["held"] = True  # held back until the field completes; see the "data" event

    def _stream(self, key: StreamKey, cookie: int) -> StreamLike:
        entry = self._streams.get(key)
        now = time.monotonic()
        if entry is None:
            stream = self.redactor.stream(None)
            if len(self._streams) >= self.max_streams:
                _key, (old, _ts, _cookie) = self._streams.popitem(last=False)
                self.counters["streams_evicted"] += 1
                old.close()  # bytes held back for an evicted stream are discarded, counted
        else:
            stream = entry[0]
            self._streams.move_to_end(key)
        self._streams[key] = (stream, now, cookie)
        return stream

    def _flush_idle(self, into: list[Event]) -> None:
        """Release what idle streams hold back (their peer went quiet).

        At most twice a second: scanning every stream after every batch was hot-path work.
        """
        now = time.monotonic()
        if now - self._last_idle_scan < STREAM_IDLE_FLUSH_S / 4:
            return
        self._last_idle_scan = now
        cutoff = now - STREAM_IDLE_FLUSH_S
        self._close_streams(lambda k: self._streams[k][1] < cutoff, round(time.time(), 6), into)

    def _close_streams(self, match: Callable[[StreamKey], bool], ts: float,
                       into: list[Event] | None = None) -> None:
        """Close matching streams; what they held back becomes a "data" event at `ts`."""
        for key in [k for k in self._streams if match(k)]:
            stream, _last, cookie = self._streams.pop(key)
            tail = stream.close()
            if tail and into is not None:
                pid, fd, direction = key
                ev: Event = {"ts": ts, "kind": "data", "pid": pid, "tid": pid, "target": cookie,
                             "direction": direction, "payload": printable(tail), "flushed": True}
                ev["conn" if isinstance(fd, str) else "fd"] = fd
                self._enrich(ev)
                into.append(ev)
