"""The I/O fast path's record -> event build: one syscall or TLS record with an I/O
syscall number becomes the event and what the pipeline needs next, or None for every
other record (the pipeline then takes the typed decode).

`build` is the C twin (collector/capture/_iobuild.c, optional at install) where it was
built, else `io_event` below, which is the definition: the unit tests hold the two
equal, key order included, on the golden corpus and on random records. The C twin reads
the record at the offsets probes/layout.py gives it at import (no layout of its own).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from collector.capture.events import IO_SYSCALLS, Event
from probes.layout import (
    C_LAYOUT,
    F_CIPHERTEXT,
    F_DATA_OUT,
    LAYOUT_VERSION,
    SYS_HDR_SIZE,
    SYS_HOT,
    SYS_HOT_FIELDS,
    Op,
)

# (event, tgid, cookie, where: the fd or "ssl:<SSL*>", direction, flags, data_len, ret)
Built = tuple[Event, int, int, "int | str", str, int, int, int]

_OP_SYSCALL = int(Op.SYSCALL)
_OP_TLS = int(Op.TLS)


def io_event(raw: bytes, offset_us: int) -> Built | None:
    """The event of an I/O record (`offset_us`: Clock.offset_us), or None."""
    if len(raw) < SYS_HDR_SIZE:
        return None
    op, version, cookie, ktime, tgid, tid, nr, flags, fd, ret, latency_ns, arg, \
        data_len = unpack(raw)
    io = IO_SYSCALLS.get(nr)
    if io is None or version != LAYOUT_VERSION or (op != _OP_SYSCALL and op != _OP_TLS) \
            or len(raw) < SYS_HDR_SIZE + data_len:
        return None
    name, kind, sized = io
    where: int | str
    # ts == Clock.wall(ktime)
    ev: Event = {"ts": ((ktime + 500) // 1000 + offset_us) / 1e6, "kind": kind, "pid": tgid,
                 "tid": tid, "target": cookie, "syscall": name, "ret": ret}
    if -4096 < ret < 0 and kind == "syscall":  # SSL_read's -1 is not an errno
        ev["errno"] = _errnames.get(-ret) or f"E{-ret}"
    # == round(lat / 1000, 3): an integer count of ns has at most 3 decimals in µs
    ev["latency_us"] = latency_ns / 1000
    if kind == "tls":
        ev["conn"] = where = f"ssl:{arg:x}"  # the SSL* identifies the connection
        if fd >= 0:  # its socket, when the kernel learned it
            ev["fd"] = fd
    else:
        ev["fd"] = where = fd
        if sized:
            ev["size"] = arg
    ev["direction"] = direction = "out" if flags & F_DATA_OUT else "in"
    if flags & F_CIPHERTEXT:  # inside SSL_read/SSL_write: see the "tls" event
        ev["ciphertext"] = True
    return ev, tgid, cookie, where, direction, flags, data_len, ret


unpack = SYS_HOT.unpack_from  # the fields named in layout.SYS_HOT_FIELDS, in order
_errnames = errno.errorcode

build: Callable[[bytes, int], Built | None] = io_event
IMPL = "python"
try:
    import collector.capture._iobuild as _iobuild
except ImportError:  # no compiler or Python headers where it was installed
    pass
else:
    _iobuild.configure(
        {f: C_LAYOUT["sys_event" if f in C_LAYOUT["sys_event"] else "event_hdr"][f]
         for f in SYS_HOT_FIELDS},
        SYS_HDR_SIZE, LAYOUT_VERSION, _OP_SYSCALL, _OP_TLS, F_DATA_OUT, F_CIPHERTEXT,
        dict(IO_SYSCALLS), dict(_errnames), io_event)
    build = _iobuild.build
    IMPL = "c"
