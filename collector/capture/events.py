"""Turn a raw kernel record into the redacted event that may leave the daemon, and say
what each capture level may see of it (`narrow`).

This is the redaction boundary: every byte field of a raw record (payload, path,
argv, exec filename) goes through the Redactor here; nothing downstream sees raw bytes.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from collector.proc.facts import ProcFacts
from collector.protocol import events_frame_of
from collector.selectors import Level
from probes.layout import (
    F_CIPHERTEXT,
    F_DATA_OUT,
    F_PAYLOAD,
    F_TRUNCATED,
    ExecRecord,
    ExitRecord,
    ForkRecord,
    RawRecord,
    Sc,
    SyscallRecord,
)

Event = dict[str, Any]  # JSON-ready; keys documented in docs/events.md


class Batch:
    """One pipeline batch as every sink gets it (on the sink thread, one sink after the
    other): the redacted events, the facts of each event's process as read at capture (in
    step with the events; None where none were read), and the events serialized once, as
    the stream's batch frame, whose JSON array is what the store keeps (json()).
    """

    __slots__ = ("_frame", "events", "procs")

    def __init__(self, events: list[Event], procs: list[ProcFacts | None] | None = None
                 ) -> None:
        self.events = events
        self.procs: list[ProcFacts | None] = procs if procs is not None else [None] * len(events)
        self._frame: tuple[bytes, memoryview] | None = None

    def __len__(self) -> int:
        return len(self.events)

    def frame(self) -> bytes:
        """The events as one {"n", "events"} stream frame, for a session seeing them all:
        one orjson call per batch (0.6-1.3 µs per event here) instead of one per event
        (2.3-2.9 µs)."""
        return self._serialized()[0]

    def json(self) -> memoryview:
        """The events as one JSON array: a view into frame(), serialized with it."""
        return self._serialized()[1]

    def _serialized(self) -> tuple[bytes, memoryview]:
        if self._frame is None:
            self._frame = events_frame_of(self.events)
        return self._frame


class StreamLike(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...
    def gap(self, n: int) -> bytes | None: ...
    def close(self) -> bytes: ...


class RedactorLike(Protocol):
    def redact(self, data: bytes, protocol: str | None = None) -> bytes: ...
    def stream(self, protocol: str | None = None) -> StreamLike: ...


_OPEN_FLAGS = [
    (os.O_WRONLY, "O_WRONLY"), (os.O_RDWR, "O_RDWR"), (os.O_CREAT, "O_CREAT"),
    (os.O_EXCL, "O_EXCL"), (os.O_TRUNC, "O_TRUNC"), (os.O_APPEND, "O_APPEND"),
    (os.O_NONBLOCK, "O_NONBLOCK"), (os.O_DIRECTORY, "O_DIRECTORY"), (os.O_CLOEXEC, "O_CLOEXEC"),
]


def open_flags(flags: int) -> str:
    names = [] if flags & (os.O_WRONLY | os.O_RDWR) else ["O_RDONLY"]
    names += [n for bit, n in _OPEN_FLAGS if flags & bit]
    return "|".join(names)


def errno_name(ret: int) -> str | None:
    if ret >= 0 or ret < -4095:
        return None
    return errno.errorcode.get(-ret, f"E{-ret}")


def sockaddr(data: bytes) -> tuple[str, str | None]:
    """(family, "addr:port") from raw struct sockaddr bytes (uapi layout)."""
    if len(data) < 2:
        return "unknown", None
    (family,) = struct.unpack_from("<H", data)
    if family == socket.AF_INET and len(data) >= 8:
        port = struct.unpack_from(">H", data, 2)[0]
        return "AF_INET", f"{socket.inet_ntop(socket.AF_INET, data[4:8])}:{port}"
    if family == socket.AF_INET6 and len(data) >= 24:
        port = struct.unpack_from(">H", data, 2)[0]
        return "AF_INET6", f"[{socket.inet_ntop(socket.AF_INET6, data[8:24])}]:{port}"
    if family == socket.AF_UNIX:
        path = data[2:].split(b"\0", 1)[0] if data[2:3] != b"\0" else b"@" + data[3:]
        return "AF_UNIX", path.decode("utf-8", "backslashreplace") or None
    return f"AF_{family}", None


_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
_ESCAPES.update({ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
# undecodable bytes arrive as lone surrogates (surrogateescape): show them as \xNN
_ESCAPES.update({0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)})


# Control bytes other than tab, LF and CR: printable() replaces each one present.
_OTHER_CONTROLS = bytes(b for b in (*range(0x20), 0x7F) if b not in (0x09, 0x0A, 0x0D))
_NOT_OTHER_CONTROLS = bytes(b for b in range(256) if b not in _OTHER_CONTROLS)


def printable_py(data: bytes) -> str:
    """Escape bytes for display and JSON, strace-style (\\n, \\xNN); valid UTF-8 kept.
    `printable` is this, or its C twin (_printable.c, ~1 µs for 256 B) where it was built.

    Always the text of printable_reference (a unit test holds them equal on random bytes).
    str.translate with multi-character replacements looks every character up in a dict
    (~20 µs for a 256-byte HTTP head): valid UTF-8 (nearly all text payload, and text
    protocols with a few NUL or other control bytes in them: a C string, a postgres query)
    takes C-level replaces instead, one per special character present (~2 µs); anything
    else (binary) takes the translate.
    """
    controls = data.translate(None, _NOT_OTHER_CONTROLS)  # the other control bytes alone
    if len(controls) > len(data) >> 4:  # binary, most likely: a failed decode costs more
        return printable_reference(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # undecodable bytes become \xNN: the reference path
        return printable_reference(data)
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\n" in text:
        text = text.replace("\n", "\\n")
    if "\r" in text:
        text = text.replace("\r", "\\r")
    if "\t" in text:
        text = text.replace("\t", "\\t")
    for c in set(controls):  # after the backslashes: their escapes add one
        text = text.replace(chr(c), _ESCAPES[c])
    return text


def printable_reference(data: bytes) -> str:
    """printable() as the definition reads: each character through _ESCAPES."""
    return data.decode("utf-8", "surrogateescape").translate(_ESCAPES)


printable: Callable[[bytes], str] = printable_py
PRINTABLE_IMPL = "python"
try:
    import collector.capture._printable as _printable
except ImportError:  # no compiler or Python headers where it was installed
    pass
else:
    _printable.configure(printable_reference, _ESCAPES, _OTHER_CONTROLS)
    printable = _printable.printable
    PRINTABLE_IMPL = "c"


class Clock:
    """Maps bpf_ktime_get_ns() (CLOCK_MONOTONIC) to wall time."""

    def __init__(self) -> None:
        self.offset = time.time() - time.monotonic()

    @property
    def offset(self) -> float:
        """Wall time minus monotonic time, s (kept as whole µs: see wall())."""
        return self.offset_us / 1e6

    @offset.setter
    def offset(self, seconds: float) -> None:
        self.offset_us = round(seconds * 1e6)

    def wall(self, ktime_ns: int) -> float:
        """Wall time in s with µs resolution, in integer arithmetic: one int division
        instead of round(x, 6), which formats the float and costs ~1 µs per event."""
        return ((ktime_ns + 500) // 1000 + self.offset_us) / 1e6


_PAYLOAD_SCS = {
    Sc.READ, Sc.WRITE, Sc.READV, Sc.WRITEV, Sc.PREAD64, Sc.PWRITE64,
    Sc.SENDTO, Sc.RECVFROM, Sc.SENDMSG, Sc.RECVMSG, Sc.SSL_READ, Sc.SSL_WRITE,
    Sc.SENDFILE,  # an I/O call too (fd, size, direction), whose bytes are never copied
}


_SC_NAMES: dict[Sc, str] = {sc: sc.name.lower() for sc in Sc}

# I/O syscall id -> (name, kind, has "size"), for the pipeline's inline build of the
# commonest events (same keys and values as syscall_event; a unit test holds them equal).
IO_SYSCALLS: dict[int, tuple[str, str, bool]] = {
    int(sc): (sc.name.lower(), "tls" if sc in (Sc.SSL_READ, Sc.SSL_WRITE) else "syscall",
              sc not in (Sc.SENDMSG, Sc.RECVMSG, Sc.SSL_READ, Sc.SSL_WRITE))
    for sc in _PAYLOAD_SCS
}


def syscall_name(nr: Sc) -> str:
    return _SC_NAMES[nr]


def base(rec: RawRecord, clock: Clock, kind: str) -> Event:
    h = rec.hdr
    return {"ts": clock.wall(h.ktime), "kind": kind, "pid": h.tgid, "tid": h.tid,
            "target": h.cookie}


def syscall_event(rec: SyscallRecord, clock: Clock, redactor: RedactorLike) -> Event:
    """Meta fields plus redacted path/argv; payload is added by the stream stage."""
    tls = rec.nr in (Sc.SSL_READ, Sc.SSL_WRITE)
    ev = base(rec, clock, "tls" if tls else "syscall")
    ev["syscall"] = syscall_name(rec.nr)
    ev["ret"] = rec.ret
    err = None if tls else errno_name(rec.ret)  # SSL_read's -1 is not an errno
    if err:
        ev["errno"] = err
    ev["latency_us"] = round(rec.latency_ns / 1000, 3)
    nr = rec.nr
    if nr in _PAYLOAD_SCS:
        if tls:
            ev["conn"] = f"ssl:{rec.arg:x}"  # the SSL* identifies the connection
            if rec.fd >= 0:  # its socket, when the kernel learned it
                ev["fd"] = rec.fd
        else:
            ev["fd"] = rec.fd
            if nr is not Sc.SENDMSG and nr is not Sc.RECVMSG:
                ev["size"] = rec.arg
        ev["direction"] = "out" if rec.flags & F_DATA_OUT else "in"
        if rec.flags & F_CIPHERTEXT:  # inside SSL_read/SSL_write: see the "tls" event
            ev["ciphertext"] = True
    elif nr in (Sc.OPENAT, Sc.OPENAT2):
        ev["dirfd"] = rec.fd
        ev["path"] = printable(redactor.redact(rec.data))
        ev["flags"] = open_flags(rec.arg)
        if rec.flags & F_TRUNCATED:
            ev["truncated"] = True
    elif nr in (Sc.CONNECT, Sc.ACCEPT, Sc.ACCEPT4):
        ev["fd"] = rec.fd if nr == Sc.CONNECT else rec.ret
        if nr != Sc.CONNECT:
            ev["listen_fd"] = rec.fd
        if rec.has_sockaddr:
            ev["family"], ev["peer"] = sockaddr(rec.data)
    elif nr == Sc.CLOSE:
        ev["fd"] = rec.fd
    elif nr in (Sc.CLONE, Sc.CLONE3, Sc.FORK, Sc.VFORK) and rec.ret > 0:
        ev["child"] = rec.ret
    if ev.get("peer", 0) is None:
        del ev["peer"]  # a sockaddr family we do not render
    return ev


def payload_of(rec: SyscallRecord) -> tuple[bytes, int] | None:
    """(captured bytes, bytes moved but not captured) for payload syscalls."""
    if not rec.flags & F_PAYLOAD:
        return None
    missing = max(0, rec.ret - len(rec.data)) if rec.flags & F_TRUNCATED else 0
    return rec.data, missing


def exec_event(rec: ExecRecord, clock: Clock, redactor: RedactorLike) -> Event:
    ev = base(rec, clock, "exec")
    ev["filename"] = printable(redactor.redact(rec.filename))
    # argv is redacted as one line so "--password x" style pairs keep their context.
    joined = redactor.redact(b" ".join(rec.argv))
    ev["argv"] = printable(joined)
    if rec.truncated:
        ev["truncated"] = True
    return ev


def fork_event(rec: ForkRecord, clock: Clock) -> Event:
    ev = base(rec, clock, "fork")
    ev["child"] = rec.child_tgid
    return ev


def exit_event(rec: ExitRecord, clock: Clock) -> Event:
    ev = base(rec, clock, "exit")
    ev["code"] = rec.code
    return ev


def data_event(ts: float, pid: int, where: int | str, direction: str, cookie: int,
               payload: bytes) -> Event:
    """What a stream held back, released when it closed (peer quiet, close, exit, eviction)."""
    ev: Event = {"ts": ts, "kind": "data", "pid": pid, "tid": pid, "target": cookie,
                 "direction": direction, "payload": printable(payload), "flushed": True}
    ev["conn" if isinstance(where, str) else "fd"] = where  # "ssl:ID" for TLS, else the fd
    return ev


# Keys an event has only because payload bytes were captured for it.
PAYLOAD_KEYS = frozenset({"payload", "captured", "held", "payload_shed"})
# Records made of nothing but payload: bytes a stream held back, and L7 records.
PAYLOAD_KINDS = frozenset({"data", "l7"})


def narrow(ev: Event, level: Level) -> Event | None:
    """What `level` may see of an event: `ev` itself, a copy with less, or None.

    The one rule, used by live sessions, stored queries and exporters: meta sees what a
    meta-only capture of the same call would have produced. So no payload bytes, no
    count of captured bytes, no sign that bytes were held back, shed or cut short, and
    no "data" or "l7" record (they are nothing but payload), and no protocol read from a
    connection's bytes. Payload sees everything.
    """
    if level >= Level.PAYLOAD:
        return ev
    kind = ev.get("kind")
    if kind in PAYLOAD_KINDS:
        return None
    if kind == "conn":
        return {k: v for k, v in ev.items() if k != "proto"} if "proto" in ev else ev
    if "captured" in ev:  # payload was captured: "truncated" is about those bytes too
        return {k: v for k, v in ev.items() if k not in PAYLOAD_KEYS and k != "truncated"}
    if "payload" in ev or "held" in ev or "payload_shed" in ev:
        return {k: v for k, v in ev.items() if k not in PAYLOAD_KEYS}
    return ev
