"""Kernel records -> redacted events, off the reader thread: decode, redact, enrich, fan out.

The ring-buffer reader only appends batches here (never blocks). A worker thread
decodes and redacts; a sink thread hands the redacted events to the sinks (store,
sessions), so SQLite's own work (which releases the GIL) overlaps the next batch. The
sink queue is short and the worker waits when it is full: overload then backs up into
the input queue, where we shed payload first, then whole batches; both counted, and
received + dropped_overload stays equal to what the reader handed us.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

import orjson

from collector.enrich import Enricher
from collector.events import (
    IO_SYSCALLS,
    Clock,
    Event,
    RedactorLike,
    exec_event,
    exit_event,
    fork_event,
    payload_of,
    printable,
    syscall_event,
)
from probes.layout import (
    F_DATA_OUT,
    F_PAYLOAD,
    F_TRUNCATED,
    LAYOUT_VERSION,
    SYS_HDR_SIZE,
    SYS_REC,
    DecodeError,
    ExecRecord,
    ExitRecord,
    ForkRecord,
    Op,
    Sc,
    SyscallRecord,
    decode,
)

log = logging.getLogger("periscope.pipeline")

# (events, their orjson bodies): serialized once here, shared by the store and the stream.
Sink = Callable[[list[Event], list[bytes]], None]
StreamKey = tuple[int, "int | str", str]  # (tgid, fd or "ssl:ID", direction)
STREAM_IDLE_FLUSH_S = 2.0
SINK_BATCHES = 4  # redacted batches waiting for the sinks before the worker waits
_OP_SYSCALL = int(Op.SYSCALL)
_OP_TLS = int(Op.TLS)


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
        # key -> [stream, last use (monotonic, per batch), target cookie]
        self._streams: OrderedDict[StreamKey, list[Any]] = OrderedDict()
        self._stamp = time.monotonic()
        self._last_idle_scan = 0.0
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._out: deque[list[Event]] = deque()  # redacted batches for the sink thread
        self._out_events = 0
        self._out_cv = threading.Condition()
        self._out_stop = False
        self._sink_thread = threading.Thread(target=self._sink_run, name="pipeline-sinks",
                                             daemon=True)

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
        self._sink_thread.start()
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)
        self._close_streams(lambda _k: True, round(time.time(), 6))
        with self._out_cv:  # the sinks get everything already redacted, then stop
            self._out_stop = True
            self._out_cv.notify_all()
        if self._sink_thread.is_alive():
            self._sink_thread.join(timeout=10)

    def backlog(self) -> int:
        """Records not yet decoded plus events not yet handed to the sinks."""
        return self._queued + self._out_events

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
                    self._hand_off(events)
            except Exception:  # a bug must not kill capture: count it, keep going
                self.counters["pipeline_errors"] += 1
                log.exception("pipeline batch failed (%d records)", len(batch))

    def _hand_off(self, events: list[Event]) -> None:
        """Queue a batch for the sink thread; wait while SINK_BATCHES are queued (counted)."""
        with self._out_cv:
            if len(self._out) >= SINK_BATCHES:
                self.counters["sink_waits"] += 1  # the sinks are the bottleneck right now
                while len(self._out) >= SINK_BATCHES and self._sink_thread.is_alive():
                    self._out_cv.wait(timeout=0.5)
            if not self._sink_thread.is_alive():  # not started (or gone): deliver inline
                self._emit(events)
                return
            self._out.append(events)
            self._out_events += len(events)
            self._out_cv.notify_all()

    def _sink_run(self) -> None:
        while True:
            with self._out_cv:
                while not self._out and not self._out_stop:
                    self._out_cv.wait(timeout=0.5)
                if not self._out:
                    return  # stopped, and everything was delivered
                events = self._out.popleft()
                self._out_cv.notify_all()
            try:
                self._emit(events)
            finally:
                with self._out_cv:
                    self._out_events -= len(events)

    def _emit(self, events: list[Event]) -> None:
        bodies = list(map(orjson.dumps, events))
        for sink in self.sinks:
            try:
                sink(events, bodies)
            except Exception:
                self.counters["sink_errors"] += 1
                log.exception("event sink %r failed", sink)

    def process(self, batch: list[bytes], shed_payload: bool = False) -> list[Event]:
        """Pure-ish core (no threads): decode and redact one batch of records.

        I/O syscall records (the bulk) take an inline path: one unpack of header and
        sys_event together, the event built as a literal, the stream and the process facts
        looked up once per run of records. It builds exactly what decode() +
        syscall_event() + _payload() build (tests/unit/test_pipeline_golden.py); every
        other record, and every malformed one, goes through _record().
        """
        out: list[Event] = []
        append = out.append
        unpack = SYS_REC.unpack_from
        io = IO_SYSCALLS
        errnames = errno.errorcode
        offset = self.clock.offset
        facts: dict[int, dict[str, str]] = {}  # tgid -> comm/unit, for this batch
        self._stamp = time.monotonic()  # stream last-use, once per batch
        last_key: StreamKey | None = None
        last: list[Any] = []
        shed = 0
        for raw in batch:
            fields = unpack(raw) if len(raw) >= SYS_HDR_SIZE else None
            if fields is None or fields[7] not in io or fields[1] != LAYOUT_VERSION \
                    or (fields[0] != _OP_SYSCALL and fields[0] != _OP_TLS) \
                    or len(raw) < SYS_HDR_SIZE + fields[13]:
                self._record(raw, out, facts, shed_payload)
                last_key = None  # a close or an exit may have closed the cached stream
                continue
            (_op, _v, _sz, cookie, ktime, tgid, tid, nr, flags, fd, ret, lat, arg, dlen,
             _aux) = fields
            name, kind, sized = io[nr]
            ev: Event = {"ts": round(ktime / 1e9 + offset, 6), "kind": kind, "pid": tgid,
                         "tid": tid, "target": cookie, "syscall": name, "ret": ret}
            if -4096 < ret < 0 and kind == "syscall":  # SSL_read's -1 is not an errno
                ev["errno"] = errnames.get(-ret) or f"E{-ret}"
            # == round(lat / 1000, 3): an integer count of ns has at most 3 decimals in µs
            ev["latency_us"] = lat / 1000
            if kind == "tls":
                ev["conn"] = where = f"ssl:{arg:x}"  # the SSL* identifies the connection
            else:
                ev["fd"] = where = fd
                if sized:
                    ev["size"] = arg
            ev["direction"] = direction = "out" if flags & F_DATA_OUT else "in"
            if flags & F_PAYLOAD:
                key = (tgid, where, direction)
                if key != last_key:
                    last = self._stream(key, cookie)
                    last_key = key
                elif last[2] != cookie:
                    last[2] = cookie
                stream = last[0]
                missing = max(0, ret - dlen) if flags & F_TRUNCATED else 0
                if shed_payload:
                    shed += 1
                    ev["payload_shed"] = True
                    stream.gap(dlen + missing)  # stays fail-closed
                else:
                    released = stream.feed(raw[SYS_HDR_SIZE:SYS_HDR_SIZE + dlen])
                    if missing:
                        tail = stream.gap(missing)
                        released += tail or b""
                        ev["truncated"] = True
                    ev["captured"] = dlen
                    if released:
                        ev["payload"] = printable(released)
                    else:
                        ev["held"] = True  # held back until the field completes: "data" event
            known = facts.get(tgid)
            if known is None:
                known = facts[tgid] = self._facts(tgid)
            if known:
                ev.update(known)
            append(ev)
        if shed:
            self.counters["payload_shed"] += shed
        self.counters["events"] += len(out)
        return out

    def _record(self, raw: bytes, out: list[Event], facts: dict[int, dict[str, str]],
                shed_payload: bool) -> None:
        """Any record through the typed decode (exec, fork, exit, close, open, connect...)."""
        try:
            rec = decode(raw)
        except DecodeError as err:
            self.counters[f"decode_{err.reason}"] += 1
            return
        pid = rec.hdr.tgid
        if isinstance(rec, ExecRecord):
            ev = exec_event(rec, self.clock, self.redactor)
            self.enricher.forget(pid)
            facts.pop(pid, None)
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
        known = facts.get(pid)
        if known is None:
            known = facts[pid] = self._facts(pid)
        if known:
            ev.update(known)
        out.append(ev)
        if isinstance(rec, ExitRecord):
            self.enricher.forget(pid)
            facts.pop(pid, None)

    def _facts(self, pid: int) -> dict[str, str]:
        """The enrichment keys an event of this process gets (comm, unit), cached facts."""
        f = self.enricher.facts(pid)
        got: dict[str, str] = {}
        if f.comm is not None:
            got["comm"] = f.comm
        if f.unit is not None:
            got["unit"] = f.unit
        return got

    def _enrich(self, ev: Event) -> None:
        ev.update(self._facts(ev["pid"]))

    def _payload(self, ev: Event, rec: SyscallRecord, shed: bool) -> None:
        got = payload_of(rec)
        if got is None:
            return
        data, missing = got
        if shed:
            self.counters["payload_shed"] += 1
            ev["payload_shed"] = True
            key = (rec.hdr.tgid, ev.get("conn", rec.fd), ev["direction"])
            self._stream(key, rec.hdr.cookie)[0].gap(len(data) + missing)  # stays fail-closed
            return
        key = (rec.hdr.tgid, ev.get("conn", rec.fd), ev["direction"])
        stream = self._stream(key, rec.hdr.cookie)[0]
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

    def _stream(self, key: StreamKey, cookie: int) -> list[Any]:
        """The [stream, last use, cookie] entry of a key, created (LRU-evicting) if new.

        Last use is the batch's timestamp: the LRU order is exact to the batch, and a
        stream used many times in one batch is moved to the end once.
        """
        entry = self._streams.get(key)
        now = self._stamp
        if entry is None:
            if len(self._streams) >= self.max_streams:
                _key, (old, _ts, _cookie) = self._streams.popitem(last=False)
                self.counters["streams_evicted"] += 1
                old.close()  # bytes held back for an evicted stream are discarded, counted
            entry = self._streams[key] = [self.redactor.stream(None), now, cookie]
            return entry
        if entry[1] != now:
            self._streams.move_to_end(key)
            entry[1] = now
        entry[2] = cookie
        return entry

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
