"""Redacted events as JSON lines for log pipelines: a rotated 0600 file, or journald.

Fed by the export route (collector/export/route.py) on the pipeline's sink thread: the
call appends the events to a bounded queue and returns; a worker thread serializes them,
one JSON document per line (a line per event is the format log pipelines read, so the
batch's one JSON array cannot be reused), and writes. A full queue drops new lines; a
failed write (a full disk, an I/O error) drops its lines; both are counted and neither
stops capture:

    offered = jsonlog_written + jsonlog_dropped (+ what is still queued)
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson

from collector.capture.events import Event
from collector.config import JsonLogExport
from collector.errors import PeriscopeError
from collector.export import ExportError
from collector.export.handoff import Counts, Handoff

log = logging.getLogger("periscope.export.jsonlog")

BATCH_LINES = 1024
LINGER_S = 0.5                     # a quiet trickle still reaches the file within this
JOURNAL_IDENTIFIER = "periscope-events"
COUNTERS = ("jsonlog_written", "jsonlog_failed", "jsonlog_dropped", "jsonlog_dropped_queue_full",
            "jsonlog_dropped_write_error", "jsonlog_dropped_shutdown")
# Journal fields per event: every scalar except the payload, which is only in MESSAGE.
_JOURNAL_SKIP = frozenset({"payload"})
_FIELD = re.compile(r"^[a-z0-9_]{1,50}$")  # a journal field name once upper-cased


class PartialWrite(PeriscopeError, OSError):
    """A write failed after `done` of the lines were written whole."""

    def __init__(self, err: OSError, done: int) -> None:
        super().__init__(err.errno, err.strerror)
        self.done = done


class LineWriter(Protocol):
    """Where lines go. write() raises OSError (PartialWrite when some lines made it)."""
    wants_events: bool  # True: write() gets the events; False: their JSON bodies
    def write(self, items: Sequence[Any]) -> None: ...
    def close(self) -> None: ...


class RotatingFile:
    """JSON lines appended to `path` (0600), rotated at max_bytes into path.1 .. path.keep.

    Reopens when the file was moved or removed behind our back (logrotate). Only regular
    files rotate: a FIFO or a device (/dev/full) is written as is.
    """

    wants_events = False

    def __init__(self, path: str, max_bytes: int, keep: int) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.rotations = 0
        self._fd = -1
        self._broken = False  # a failed write may have left half a line: end it first
        try:
            self._open()
        except OSError as err:
            raise ExportError(f"export.jsonlog.path={path!r}: cannot open: "
                              f"{err.strerror}") from err

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                     | os.O_NOFOLLOW, 0o600)
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)  # redacted, but still what processes did: owner only
        self._fd, self._ino, self._size = fd, st.st_ino, st.st_size
        self._regular = stat.S_ISREG(st.st_mode)

    def _reopen_if_moved(self) -> None:
        try:
            same = os.stat(self.path).st_ino == self._ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(self._fd)
            self._fd = -1
            self._open()

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        if self.keep == 0:
            os.unlink(self.path)
        else:
            for i in range(self.keep - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self.rotations += 1
        self._open()

    def write(self, items: Sequence[Any]) -> None:
        if self._fd < 0 or self._regular:
            if self._fd < 0:
                self._open()
            else:
                self._reopen_if_moved()
        done = 0
        while done < len(items):
            chunk: list[bytes] = []
            size = 0
            for line in items[done:]:  # as many lines as fit before the size limit
                if (self._regular and chunk and self._size + size + len(line) + 1
                        > self.max_bytes):
                    break
                chunk.append(line)
                size += len(line) + 1
            if self._regular and self._size and self._size + size > self.max_bytes:
                self._rotate()
            lead = b"\n" if self._broken else b""
            data = lead + b"\n".join(chunk) + b"\n"
            written = 0
            try:
                while written < len(data):
                    n = self._write_some(data[written:])
                    written += n
                    self._size += n
            except OSError as err:
                whole = data[:written].count(b"\n") - (1 if lead and written else 0)
                if written:  # half a line in the file: the next write ends it first
                    self._broken = data[written - 1] != 0x0A
                raise PartialWrite(err, done + whole) from err
            self._broken = False
            done += len(chunk)

    def _write_some(self, data: bytes) -> int:
        return os.write(self._fd, data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


JournalSend = Callable[..., None]


class Journal:
    """One journal entry per event: MESSAGE = the JSON line, PERISCOPE_* = its fields."""

    wants_events = True

    def __init__(self, send: JournalSend | None = None) -> None:
        if send is None:
            try:
                from systemd import journal  # python3-systemd, installed by provision.sh
            except ImportError as err:
                raise ExportError('export.jsonlog.path = "journald" needs python3-systemd '
                                  "(the systemd.journal module), which is not installed: "
                                  "install it, or set a file path") from err
            send = journal.send
        self._send = send

    def write(self, items: Sequence[Any]) -> None:
        for done, ev in enumerate(items):
            fields = {f"PERISCOPE_{k.upper()}": str(v) for k, v in ev.items()
                      if k not in _JOURNAL_SKIP and _FIELD.match(k)
                      and not isinstance(v, list | dict)}
            try:
                # CODE_FUNC given: send() then skips extracting the caller's stack frame.
                self._send(orjson.dumps(ev).decode(), PRIORITY=4 if "errno" in ev else 6,
                           SYSLOG_IDENTIFIER=JOURNAL_IDENTIFIER, CODE_FUNC="Journal.write",
                           **fields)
            except OSError as err:
                raise PartialWrite(err, done) from err

    def close(self) -> None:
        pass


class JsonLogSink:
    """The pipeline sink. start(), feed it, close(timeout_s); `counters` for metrics.

    Counters: jsonlog_written (lines), jsonlog_failed (failed writes), jsonlog_dropped
    (lines never written: jsonlog_dropped_queue_full + _write_error + _shutdown).
    """

    def __init__(self, writer: LineWriter, queue_size: int) -> None:
        self.writer = writer
        self.counters = Counts(COUNTERS)
        self._queue: Handoff[Any] = Handoff(queue_size)
        self._thread = threading.Thread(target=self._run, name="jsonlog", daemon=True)
        self._last_error = 0.0

    def __call__(self, events: list[Event]) -> None:
        """Route sink (the pipeline's sink thread): one append, never blocks; the events
        are serialized on the writer thread, off the pipeline's path."""
        took = self._queue.offer(events)
        if took < len(events):
            self._drop("shutdown" if self._queue.closed else "queue_full", len(events) - took)

    def _drop(self, reason: str, n: int) -> None:
        self.counters.add("jsonlog_dropped", n)
        self.counters.add(f"jsonlog_dropped_{reason}", n)

    def backlog(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunks = self._queue.take(BATCH_LINES, LINGER_S)
            if chunks is None:
                return
            for _tag, items in chunks:
                try:
                    self._write(items)
                except Exception:  # a bug must not stop the writer: count, say it once
                    self.counters.add("jsonlog_failed", 1)
                    self._drop("write_error", len(items))
                    if self.counters["jsonlog_failed"] == 1:
                        log.exception("JSON log writer failed")

    def _write(self, events: list[Event]) -> None:
        items = events if self.writer.wants_events else [orjson.dumps(ev) for ev in events]
        try:
            self.writer.write(items)
        except OSError as err:
            done = err.done if isinstance(err, PartialWrite) else 0
            self.counters.add("jsonlog_written", done)
            self.counters.add("jsonlog_failed", 1)
            self._drop("write_error", len(items) - done)
            now = time.monotonic()
            if now - self._last_error > 60:  # a full disk fails every batch: say it rarely
                self._last_error = now
                log.error("JSON log write failed (%s); lines are dropped and counted "
                          "(jsonlog_dropped)", errno.errorcode.get(err.errno or 0, err))
            return
        self.counters.add("jsonlog_written", len(items))

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued within timeout_s; the rest is dropped and counted."""
        self._queue.close()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        for _tag, items in self._queue.discard():
            self._drop("shutdown", len(items))
        if not self._thread.is_alive():
            self.writer.close()


def open_sink(cfg: JsonLogExport) -> JsonLogSink | None:
    """The sink [export.jsonlog] asks for (not started), or None when it is off."""
    if not cfg.path:
        return None
    writer: LineWriter = (Journal() if cfg.path == "journald"
                          else RotatingFile(cfg.path, cfg.max_bytes, cfg.keep))
    return JsonLogSink(writer, cfg.queue_size)
