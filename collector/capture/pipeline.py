"""Kernel records -> redacted events, off the reader thread: decode, redact, enrich, fan out.

The ring-buffer reader only appends batches here (never blocks). A worker thread
decodes and redacts; a sink thread hands the redacted events to the sinks (store,
sessions), so SQLite's own work (which releases the GIL) overlaps the next batch. The
sink queue is short and the worker waits when it is full: overload then backs up into
the input queue. Past half of it the reader has the kernel shed targets' I/O syscalls at
their enter (overloaded(); the cheapest place: the target pays a flag check, the daemon
nothing) until it is down to an eighth, and the worker sheds payload; a full queue drops
whole batches. All counted: received + dropped_overload stays equal to what the reader
handed us, and the kernel counts what it shed. After records were lost the observers
hear of it (lost()) in record order, so the L7 parsers resynchronise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Container, Mapping
from typing import Protocol

from collector.capture import iobuild
from collector.capture.events import (
    Batch,
    Clock,
    Event,
    RedactorLike,
    data_event,
    exec_event,
    exit_event,
    fork_event,
    printable,
    syscall_event,
)
from collector.capture.streams import Closed, StreamKey, StreamTable
from collector.proc.facts import Enricher, ProcFacts
from probes.layout import (
    F_PAYLOAD,
    F_TRUNCATED,
    SYS_HDR_SIZE,
    DecodeError,
    ExecRecord,
    ExitRecord,
    ForkRecord,
    Sc,
    decode,
    kernel_cgroup_id,
    kernel_comm,
)

log = logging.getLogger("periscope.pipeline")

SINK_BATCHES = 4  # redacted batches waiting for the sinks before the worker waits
# In the input queue: records were lost between the batch before this and the one after.
LOSS: list[bytes] = []
# Per process, for one batch: the keys its events get (comm, unit) and all its facts.
Known = tuple[dict[str, str], ProcFacts]


class Sink(Protocol):
    """Takes each redacted batch, on the sink thread: its events, the facts of each event's
    process as they were at capture (the store keeps them, for access decisions), and
    the events serialized once for all sinks (Batch.json)."""

    def __call__(self, batch: Batch, /) -> None: ...


class RecordObserver(Protocol):
    """A stage that reads what the pipeline captured (the L7 parsers, connection records)
    and produces records of its own. Called on the worker thread, in record order."""

    @property
    def ignored_fds(self) -> Mapping[int, Container[int]]:
        """pid -> fds whose reads and writes it has no use for (files, pipes): the pipeline
        does not hand it their I/O events, ~0.1 µs per event it would have returned at
        once. Every other event of those fds (open, close) still reaches it."""

    def observe(self, ev: Event, data: bytes | None, missing: int, /) -> None:
        """Every event built but the I/O on its ignored_fds. For payload records `data` is
        the RAW captured bytes (never stored; not kept past the call beyond the observer's
        own parse buffer) and `missing` the bytes moved but not captured; else `data` is
        None and `missing` 0. A payload shed under load arrives as data None with all its
        bytes missing."""

    def collect(self, now: float, /) -> list[Event]:
        """Records made since the last call: redacted, JSON-ready, each with a "kind" and
        a "pid"; the pipeline emits them to the sinks after the batch's events."""

    def lost(self) -> None:
        """Records were lost here (shed or dropped under load): any stream may have a gap
        of unknown size before the next record."""


class Pipeline:
    def __init__(self, redactor: RedactorLike, sinks: list[Sink], enricher: Enricher,
                 queue_max: int = 65536, max_streams: int = 4096,
                 observers: list[RecordObserver] | None = None,
                 event_cap: int | None = None) -> None:
        self.redactor = redactor
        # Payload bytes an event shows at most (the targets' cap). The kernel may copy more
        # on a connection where the L7 stage asked for it; the observers and the stream get
        # all of it, the event the first event_cap bytes of what the stream released.
        self.event_cap = event_cap
        self.sinks = sinks
        self.observers = list(observers or [])
        self.enricher = enricher
        self.queue_max = queue_max
        self.max_streams = max_streams
        self.clock = Clock()
        self._build = iobuild.build  # tests set iobuild.io_event to run the Python twin
        self.counters: Counter[str] = Counter()  # read by metrics at scrape time
        self._queue: deque[list[bytes]] = deque()  # batches, and LOSS where records were lost
        self._queued = 0
        self._shedding = False  # overloaded()'s answer: the kernel sheds at the source
        self._cv = threading.Condition()
        self._stop = False
        self.streams = StreamTable(lambda: redactor.stream(None), max_streams, self.counters)
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        # redacted batches (events, their processes' facts) for the sink thread
        self._out: deque[tuple[list[Event], list[ProcFacts | None]]] = deque()
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
                self._mark_loss()
                return
            self._queue.append(batch)
            self._queued += len(batch)
            self.counters["received"] += len(batch)
            self._cv.notify()

    def overloaded(self) -> bool:
        """Whether the kernel should shed targets' I/O syscalls now (the reader asks after
        each drain): from past half of queue_max until the queue is down to an eighth."""
        if self._shedding:
            self._shedding = self._queued > self.queue_max // 8
        else:
            self._shedding = self._queued > self.queue_max // 2
        return self._shedding

    def shed_ended(self) -> None:
        """The kernel stopped shedding: what it skipped lies before the next batch."""
        with self._cv:
            self._mark_loss()

    def _mark_loss(self) -> None:
        if self._queue and self._queue[-1] is LOSS:
            return
        self._queue.append(LOSS)
        self._cv.notify()

    def start(self) -> None:
        self._sink_thread.start()
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)
        self.streams.close(lambda _k: True)  # what they held is discarded: nobody is left to see it
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
            if batch is LOSS:
                self._lost()
                continue
            try:
                procs: list[ProcFacts | None] = []
                events = self.process(batch, shed_payload=shed_payload, procs=procs)
                self._released(self.streams.close_idle(), round(time.time(), 6), events, procs)
                if events:
                    self._hand_off(events, procs)
            except Exception:  # a bug must not kill capture: count it, keep going
                self.counters["pipeline_errors"] += 1
                log.exception("pipeline batch failed (%d records)", len(batch))

    def _lost(self) -> None:
        for o in self.observers:
            try:
                o.lost()
            except Exception:
                self.counters["pipeline_errors"] += 1
                log.exception("observer %r failed on a loss", o)

    def _hand_off(self, events: list[Event], procs: list[ProcFacts | None]) -> None:
        """Queue a batch for the sink thread; wait while SINK_BATCHES are queued (counted)."""
        with self._out_cv:
            if len(self._out) >= SINK_BATCHES:
                self.counters["sink_waits"] += 1  # the sinks are the bottleneck right now
                while len(self._out) >= SINK_BATCHES and self._sink_thread.is_alive():
                    self._out_cv.wait(timeout=0.5)
            if not self._sink_thread.is_alive():  # not started (or gone): deliver inline
                self._emit(events, procs)
                return
            self._out.append((events, procs))
            self._out_events += len(events)
            self._out_cv.notify_all()

    def _sink_run(self) -> None:
        while True:
            with self._out_cv:
                while not self._out and not self._out_stop:
                    self._out_cv.wait(timeout=0.5)
                if not self._out:
                    return  # stopped, and everything was delivered
                events, procs = self._out.popleft()
                self._out_cv.notify_all()
            try:
                self._emit(events, procs)
            finally:
                with self._out_cv:
                    self._out_events -= len(events)

    def _emit(self, events: list[Event], procs: list[ProcFacts | None]) -> None:
        batch = Batch(events, procs)
        for sink in self.sinks:
            try:
                sink(batch)
            except Exception:
                self.counters["sink_errors"] += 1
                log.exception("event sink %r failed", sink)

    def process(self, batch: list[bytes], shed_payload: bool = False,
                procs: list[ProcFacts | None] | None = None) -> list[Event]:
        """Pure-ish core (no threads): decode and redact one batch of records.

        I/O syscall records (the bulk) take an inline path: the event built in one call
        (iobuild.build, in C where it was built), the process facts looked up once per
        process and batch. It builds exactly what decode() + syscall_event() +
        _capture() would (tests/unit/test_pipeline_golden.py); every other record, and
        every malformed one, goes through _record(). `procs`, if given, receives the facts
        of each event's process, in step with the events.
        """
        out: list[Event] = []
        append = out.append
        add_proc = (procs if procs is not None else []).append
        build = self._build  # iobuild.build: the C twin where it was built
        offset_us = self.clock.offset_us
        capture = self._capture
        observers = self.observers  # empty: the hot path pays one truth test per record
        watch = [(o.observe, o.ignored_fds.get) for o in observers]
        known: dict[int, Known] = {}  # tgid -> its enrichment, for this batch
        self.streams.tick()
        for raw in batch:
            built = build(raw, offset_us)
            if built is None:  # not an I/O record (or a malformed one): the typed decode
                self._record(raw, out, procs, known, shed_payload)
                continue
            ev, tgid, cookie, where, direction, flags, data_len, ret = built
            data: bytes | None = None
            missing = 0
            if flags & F_PAYLOAD:
                data = raw[SYS_HDR_SIZE:SYS_HDR_SIZE + data_len]
                missing = max(0, ret - data_len) if flags & F_TRUNCATED else 0
                capture(ev, (tgid, where, direction), cookie, data, missing, shed_payload)
                if shed_payload:  # observers do no parsing work under overload either
                    data, missing = None, max(ret, 0)
            k = known.get(tgid)
            if k is None:
                k = known[tgid] = self._known(tgid, raw)
            keys, proc = k
            if keys:
                ev.update(keys)
            append(ev)
            add_proc(proc)
            if watch:
                for observe, ignored in watch:
                    fds = ignored(tgid)
                    if fds is None or where not in fds:
                        observe(ev, data, missing)
        if observers:
            self._collect(out, procs, known)
        self.counters["events"] += len(out)
        return out

    def _collect(self, out: list[Event], procs: list[ProcFacts | None] | None,
                 known: dict[int, Known]) -> None:
        """The observers' records join the batch, enriched like events."""
        now = round(time.time(), 6)
        for o in self.observers:
            for rec in o.collect(now):
                pid = rec["pid"]
                k = known.get(pid)
                if k is None:
                    k = known[pid] = self._known(pid)
                for key, value in k[0].items():
                    rec.setdefault(key, value)
                out.append(rec)
                if procs is not None:
                    procs.append(k[1])

    def _capture(self, ev: Event, key: StreamKey, cookie: int, data: bytes, missing: int,
                 shed: bool) -> None:
        """Feed captured bytes to their stream; what it releases (redacted) is the payload.

        `missing` bytes moved but were not captured: the stream is told of the gap, so it
        stays fail-closed across it (a secret cut short is not released half-masked).
        Bytes captured past event_cap (a connection whose cap the L7 stage raised) are fed
        too, not turned into a gap: a gap makes the stream drop the line it cuts, which
        would be the next request's first line, and sends it down its slow path. The event
        shows the first event_cap bytes of what was released, already redacted.
        """
        stream = self.streams.get(key, cookie).stream
        if shed:
            self.counters["payload_shed"] += 1
            ev["payload_shed"] = True
            stream.gap(len(data) + missing)
            return
        released = stream.feed(data)
        if missing:
            released += stream.gap(missing) or b""
            ev["truncated"] = True
        cap = self.event_cap
        if cap is not None and len(data) > cap:
            ev["truncated"] = True
            ev["captured"] = cap
            released = released[:cap]
        else:
            ev["captured"] = len(data)
        if released:
            ev["payload"] = printable(released)
        else:
            ev["held"] = True  # held back until the field completes: see the "data" event

    def _record(self, raw: bytes, out: list[Event], procs: list[ProcFacts | None] | None,
                known: dict[int, Known], shed_payload: bool) -> None:
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
            known.pop(pid, None)
        elif isinstance(rec, ForkRecord):
            ev = fork_event(rec, self.clock)
        elif isinstance(rec, ExitRecord):
            ev = exit_event(rec, self.clock)
            self._released(self.streams.close(lambda k: k[0] == pid), ev["ts"], out, procs)
        else:
            ev = syscall_event(rec, self.clock, self.redactor)
            if rec.nr == Sc.CLOSE and rec.ret == 0:
                fd = rec.fd
                self._released(self.streams.close(lambda k: k[0] == pid and k[1] == fd),
                               ev["ts"], out, procs)
            elif rec.flags & F_PAYLOAD:
                # Only I/O syscalls carry payload (trace.bpf.c), and every well-formed one
                # took the inline path: bytes on anything else are not shown, but counted.
                self.counters["payload_unexpected"] += 1
        k = known.get(pid)
        if k is None:
            k = known[pid] = self._known(pid, raw)
        if k[0]:
            ev.update(k[0])
        out.append(ev)
        if procs is not None:
            procs.append(k[1])
        for o in self.observers:
            o.observe(ev, None, 0)
        if isinstance(rec, (ExecRecord, ExitRecord)):
            # Read at exec enter, the facts may be the old image's (the exec not done yet
            # when we looked): the process's next record reads them again.
            self.enricher.forget(pid)
            known.pop(pid, None)

    def _known(self, pid: int, raw: bytes | None = None) -> Known:
        """The enrichment keys an event of this process gets (comm, unit), and its facts.
        A process gone before /proc was read is named from the record's header (raw)."""
        f = self.enricher.facts(pid)
        if (f.comm is None or f.cgroup is None) and raw is not None:
            f = self.enricher.complete(f, kernel_comm(raw), kernel_cgroup_id(raw))
        got: dict[str, str] = {}
        if f.comm is not None:
            got["comm"] = f.comm
        if f.unit is not None:
            got["unit"] = f.unit
        return got, f

    def _released(self, closed: list[Closed], ts: float, into: list[Event],
                  procs: list[ProcFacts | None] | None) -> None:
        """What closed streams still held becomes "data" events at `ts`."""
        for (pid, where, direction), cookie, tail in closed:
            if tail:
                ev = data_event(ts, pid, where, direction, cookie, tail)
                keys, facts = self._known(pid)
                ev.update(keys)
                into.append(ev)
                if procs is not None:
                    procs.append(facts)
