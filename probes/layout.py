"""Pure decode of ring-buffer records (mirror of probes/common.h) into typed raw records.

Raw records still hold unredacted bytes: they never leave the daemon's pipeline.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

LAYOUT_VERSION = 2


class Op(IntEnum):
    SYSCALL = 1
    EXEC = 2
    FORK = 3
    EXIT = 4
    TLS = 5


class Sc(IntEnum):
    """Our syscall ids (enum sc in common.h), not the arch's numbers."""

    READ = 1
    WRITE = 2
    READV = 3
    WRITEV = 4
    PREAD64 = 5
    PWRITE64 = 6
    SENDTO = 7
    RECVFROM = 8
    SENDMSG = 9
    RECVMSG = 10
    CONNECT = 11
    ACCEPT = 12
    ACCEPT4 = 13
    CLOSE = 14
    OPENAT = 15
    OPENAT2 = 16
    EXECVE = 17
    EXECVEAT = 18
    CLONE = 19
    CLONE3 = 20
    FORK = 21
    VFORK = 22
    SSL_READ = 23
    SSL_WRITE = 24
    SENDFILE = 25


class Stat(IntEnum):
    """Kernel-side counters (enum stat in common.h)."""

    EMITTED = 0
    DROP_RINGBUF = 1
    DROP_INFLIGHT = 2
    MISSING_ENTER = 3
    TARGET_FULL = 4
    SKIPPED_SAMPLE = 5
    SKIPPED_RATE = 6
    SHED_OVERLOAD = 7


F_TRUNCATED = 0x1
F_DATA_OUT = 0x2
F_PAYLOAD = 0x4
F_CIPHERTEXT = 0x8  # moved inside SSL_read/SSL_write: TLS records, never copied

# struct event_hdr: op, version, size, cookie, ktime, tgid, tid, cgroup_id, comm
HDR = struct.Struct("<BBHIQIIQ16s")
COMM_LEN = 16
# struct sys_event after the header: nr, flags, fd, ret, latency_ns, arg, data_len, aux
SYS = struct.Struct("<HHiqQQII")
FORK = struct.Struct("<II")
EXIT = struct.Struct("<iI")
SYS_HDR_SIZE = HDR.size + SYS.size
# Header and sys_event fused: the pipeline's hot path unpacks a syscall record in one call.
SYS_REC = struct.Struct("<" + HDR.format[1:] + SYS.format[1:])
assert SYS_REC.size == SYS_HDR_SIZE

# (C struct name, field name) -> (offset, size), for the root alignment check.
C_LAYOUT: dict[str, dict[str, tuple[int, int]]] = {
    "event_hdr": {
        "op": (0, 1), "version": (1, 1), "size": (2, 2), "cookie": (4, 4),
        "ktime": (8, 8), "tgid": (16, 4), "tid": (20, 4), "cgroup_id": (24, 8),
        "comm": (32, COMM_LEN),
    },
    "sys_event": {
        "hdr": (0, HDR.size), "nr": (48, 2), "flags": (50, 2), "fd": (52, 4),
        "ret": (56, 8), "latency_ns": (64, 8), "arg": (72, 8), "data_len": (80, 4),
        "aux": (84, 4), "data": (88, -1),
    },
    "fork_event": {"hdr": (0, HDR.size), "child_tgid": (48, 4)},
    "exit_event": {"hdr": (0, HDR.size), "code": (48, 4)},
}
# Where the pipeline reads the kernel's names for a process it could not read in /proc.
COMM_OFFSET = C_LAYOUT["event_hdr"]["comm"][0]
CGROUP_ID = struct.Struct("<Q")
CGROUP_ID_OFFSET = C_LAYOUT["event_hdr"]["cgroup_id"][0]


def _fields(struct_name: str) -> list[str]:
    own = C_LAYOUT[struct_name]
    return sorted((f for f in own if f not in ("hdr", "data")), key=lambda f: own[f][0])


# The values of SYS_REC.unpack_from(), in order: struct event_hdr, then struct sys_event.
SYS_REC_FIELDS: tuple[str, ...] = (*_fields("event_hdr"), *_fields("sys_event"))
# field -> struct code ("16s" is one code)
_CODES = dict(zip(SYS_REC_FIELDS, re.findall(r"\d*[A-Za-z?]", SYS_REC.format[1:]), strict=True))
# The I/O fast path's view of a syscall record: the fields it reads, in this order, the
# others skipped as padding. The pipeline unpacks into variables named exactly as here
# (a unit test holds it to that), so the struct's order is known in this file only.
SYS_HOT_FIELDS = ("op", "version", "cookie", "ktime", "tgid", "tid", "nr", "flags", "fd", "ret",
                  "latency_ns", "arg", "data_len")
SYS_HOT = struct.Struct("<" + "".join(
    _CODES[f] if f in SYS_HOT_FIELDS else "x" * struct.calcsize("<" + _CODES[f])
    for f in SYS_REC_FIELDS))
assert SYS_HOT.size == SYS_HDR_SIZE
assert tuple(f for f in SYS_REC_FIELDS if f in SYS_HOT_FIELDS) == SYS_HOT_FIELDS

class DecodeError(ValueError):
    """A record that cannot be decoded (short, bad version, unknown op)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # counter label: short | version | unknown_op


@dataclass(frozen=True, slots=True)
class Header:
    op: Op
    cookie: int
    ktime: int
    tgid: int
    tid: int
    cgroup_id: int = 0  # the task's cgroup v2 id at record time
    comm: bytes = b""   # the thread's name at record time (NULs stripped)


@dataclass(frozen=True, slots=True)
class SyscallRecord:
    hdr: Header
    nr: Sc
    flags: int
    fd: int
    ret: int
    latency_ns: int
    arg: int
    data: bytes  # payload prefix, path, sockaddr or argv: raw, unredacted
    has_sockaddr: bool


@dataclass(frozen=True, slots=True)
class ExecRecord:
    hdr: Header
    nr: Sc
    filename: bytes
    argv: tuple[bytes, ...]
    truncated: bool


@dataclass(frozen=True, slots=True)
class ForkRecord:
    hdr: Header
    child_tgid: int


@dataclass(frozen=True, slots=True)
class ExitRecord:
    hdr: Header
    code: int  # exit_group() status, -1 when killed by a signal


RawRecord = SyscallRecord | ExecRecord | ForkRecord | ExitRecord


# Enum lookups by value through Sc(nr)/Op(op) cost ~1 µs each on the hot path: use dicts.
_SC_BY_ID: dict[int, Sc] = {int(s): s for s in Sc}
_OP_BY_ID: dict[int, Op] = {int(o): o for o in Op}


def _sc(nr: int) -> Sc:
    sc = _SC_BY_ID.get(nr)
    if sc is None:
        raise DecodeError("unknown_syscall", f"unknown syscall id {nr}")
    return sc


def _syscall(hdr: Header, buf: memoryview) -> SyscallRecord:
    nr, flags, fd, ret, lat, arg, data_len, aux = SYS.unpack_from(buf, HDR.size)
    end = SYS_HDR_SIZE + data_len
    if len(buf) < end:
        raise DecodeError("short", f"syscall record holds {len(buf)} bytes, needs {end}")
    return SyscallRecord(hdr, _sc(nr), flags, fd, ret, lat, arg,
                         bytes(buf[SYS_HDR_SIZE:end]), bool(aux))


def _exec(hdr: Header, buf: memoryview) -> ExecRecord:
    nr, flags, _fd, _ret, _lat, argc, data_len, _aux = SYS.unpack_from(buf, HDR.size)
    end = SYS_HDR_SIZE + data_len
    if len(buf) < end:
        raise DecodeError("short", f"exec record holds {len(buf)} bytes, needs {end}")
    parts = bytes(buf[SYS_HDR_SIZE:end]).split(b"\0")
    filename = parts[0]
    argv = tuple(parts[1 : 1 + argc])
    return ExecRecord(hdr, _sc(nr), filename, argv, bool(flags & F_TRUNCATED))


def _fork(hdr: Header, buf: memoryview) -> ForkRecord:
    (child, _pad) = FORK.unpack_from(buf, HDR.size)
    return ForkRecord(hdr, child)


def _exit(hdr: Header, buf: memoryview) -> ExitRecord:
    (code, _pad) = EXIT.unpack_from(buf, HDR.size)
    return ExitRecord(hdr, code)


_DECODERS: dict[int, tuple[int, Callable[[Header, memoryview], RawRecord]]] = {
    Op.SYSCALL: (SYS_HDR_SIZE, _syscall),
    Op.TLS: (SYS_HDR_SIZE, _syscall),
    Op.EXEC: (SYS_HDR_SIZE, _exec),
    Op.FORK: (HDR.size + FORK.size, _fork),
    Op.EXIT: (HDR.size + EXIT.size, _exit),
}


def decode(raw: bytes | memoryview) -> RawRecord:
    """Decode one ring-buffer record. Raises DecodeError with a counter label."""
    buf = memoryview(raw)
    if len(buf) < HDR.size:
        raise DecodeError("short", f"record of {len(buf)} bytes is shorter than the header")
    op, version, _size, cookie, ktime, tgid, tid, cgroup_id, comm = HDR.unpack_from(buf)
    if version != LAYOUT_VERSION:
        raise DecodeError("version", f"layout version {version}, expected {LAYOUT_VERSION}")
    entry = _DECODERS.get(op)
    if entry is None:
        raise DecodeError("unknown_op", f"unknown op {op}")
    min_size, fn = entry
    if len(buf) < min_size:
        raise DecodeError("short", f"op {op} record of {len(buf)} bytes, needs {min_size}")
    return fn(Header(_OP_BY_ID[op], cookie, ktime, tgid, tid, cgroup_id,
                     comm.split(b"\0", 1)[0]), buf)


def kernel_comm(raw: bytes) -> str:
    """The comm a record's header carries, as text (a thread name is any bytes)."""
    return raw[COMM_OFFSET:COMM_OFFSET + COMM_LEN].split(b"\0", 1)[0].decode(errors="replace")


def kernel_cgroup_id(raw: bytes) -> int:
    return int(CGROUP_ID.unpack_from(raw, CGROUP_ID_OFFSET)[0])


# struct target (common.h): the leaf of targets, comm_targets and cgroup_targets:
# cookie, payload_cap, sample_every, pad.
TARGET = struct.Struct("<IIII")
