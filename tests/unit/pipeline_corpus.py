"""A deterministic corpus of kernel records covering every event shape, for the pipeline
golden test: the expected events were produced by the original (pre-fast-path) pipeline."""

from __future__ import annotations

import socket
import struct

from probes.layout import F_DATA_OUT, F_PAYLOAD, F_TRUNCATED, HDR, LAYOUT_VERSION, SYS, Op, Sc

IO = [Sc.READ, Sc.WRITE, Sc.READV, Sc.WRITEV, Sc.PREAD64, Sc.PWRITE64, Sc.SENDTO, Sc.RECVFROM,
      Sc.SENDMSG, Sc.RECVMSG, Sc.SSL_READ, Sc.SSL_WRITE]
OUT = {Sc.WRITE, Sc.WRITEV, Sc.PWRITE64, Sc.SENDTO, Sc.SENDMSG, Sc.SSL_WRITE}


def sys_rec(nr: int, fd: int, ret: int, data: bytes = b"", flags: int = 0, pid: int = 4242,
            tid: int | None = None, arg: int = 0, lat: int = 1500, ktime: int = 10**9,
            cookie: int = 9, op: int = Op.SYSCALL, aux: int = 0, version: int = LAYOUT_VERSION,
            data_len: int | None = None, comm: bytes = b"", cgroup_id: int = 0) -> bytes:
    body = SYS.pack(nr, flags, fd, ret, lat, arg, len(data) if data_len is None else data_len,
                    aux)
    return HDR.pack(op, version, HDR.size + len(body) + len(data), cookie, ktime, pid,
                    pid if tid is None else tid, cgroup_id, comm) + body + data


def exec_rec(filename: bytes, argv: list[bytes], pid: int = 4242, truncated: bool = False,
             ktime: int = 10**9) -> bytes:
    data = b"\0".join([filename, *argv]) + b"\0"
    return sys_rec(Sc.EXECVE, -100, 0, data, F_TRUNCATED if truncated else 0, pid=pid,
                   arg=len(argv), ktime=ktime, op=Op.EXEC)


def fork_rec(parent: int, child: int, ktime: int = 10**9) -> bytes:
    return HDR.pack(Op.FORK, LAYOUT_VERSION, HDR.size + 8, 9, ktime, parent, parent, 0, b"") \
        + struct.pack("<II", child, 0)


def exit_rec(pid: int, code: int, ktime: int = 10**9) -> bytes:
    return HDR.pack(Op.EXIT, LAYOUT_VERSION, HDR.size + 8, 9, ktime, pid, pid, 0, b"") \
        + struct.pack("<iI", code, 0)


def _inet(port: int, addr: str) -> bytes:
    return (struct.pack("<H", socket.AF_INET) + struct.pack(">H", port)
            + socket.inet_aton(addr) + b"\0" * 8)


def _inet6(port: int, addr: str) -> bytes:
    return (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", port) + b"\0" * 4
            + socket.inet_pton(socket.AF_INET6, addr) + b"\0" * 4)


def batches() -> list[tuple[list[bytes], bool]]:
    """(records, shed_payload) batches, in order, for one pipeline."""
    out: list[tuple[list[bytes], bool]] = []
    t = [10**9]

    def k() -> int:
        t[0] += 1_234_567
        return t[0]

    # every payload syscall: captured, released on newline, held, errno, truncated, no payload
    b: list[bytes] = []
    for i, nr in enumerate(IO):
        fl = F_PAYLOAD | (F_DATA_OUT if nr in OUT else 0)
        fd = 3 + i
        ssl = 0x7F00AA00 + i
        arg = ssl if nr in (Sc.SSL_READ, Sc.SSL_WRITE) else 64
        line = b"GET /x?token=abc HTTP/1.1\r\nAuthorization: Bearer sekritsekritsekrit12\r\n\r\n"
        b.append(sys_rec(nr, fd, len(line), line, fl, arg=arg, ktime=k(), lat=1234 + i))
        b.append(sys_rec(nr, fd, 5, b"hello", fl, arg=arg, ktime=k(), lat=999_999))
        b.append(sys_rec(nr, fd, -11, b"", fl, arg=arg, ktime=k(), lat=7))
        b.append(sys_rec(nr, fd, 500, b"password=hun", fl | F_TRUNCATED, arg=arg, ktime=k()))
        b.append(sys_rec(nr, fd, 10, b"", fl & ~F_PAYLOAD, arg=arg, ktime=k(), pid=777))
        b.append(sys_rec(nr, fd, 3, b"\x00\xff\n", fl, arg=arg, ktime=k(), pid=99999, tid=100000,
                         cookie=3))
        b.append(sys_rec(nr, fd, -4096, b"", 0, arg=arg, ktime=k()))
        b.append(sys_rec(nr, fd, -4095, b"", 0, arg=arg, ktime=k()))
    out.append((b, False))
    # a secret split across writes, then close; close failing; a second close
    p1 = b"POST /login HTTP/1.1\r\nAuthorization: Bearer abcdefghij"
    p2 = b"klmnopqrstuvwxyz0123456789\r\nHost: x\r\n\r\n"
    out.append(([sys_rec(Sc.WRITE, 5, len(p1), p1, F_PAYLOAD | F_DATA_OUT, arg=len(p1), ktime=k()),
                 sys_rec(Sc.WRITE, 5, len(p2), p2, F_PAYLOAD | F_DATA_OUT, arg=len(p2), ktime=k()),
                 sys_rec(Sc.CLOSE, 5, 0, ktime=k()),
                 sys_rec(Sc.CLOSE, 6, -9, ktime=k())], False))
    # meta syscalls: openat(2) with a secret path, connect/accept families, clone, fork-likes
    out.append(([
        sys_rec(Sc.OPENAT, -100, 7, b"/home/u/.aws/credentials?password=x", 0, arg=0o1101,
                ktime=k()),
        sys_rec(Sc.OPENAT2, 3, -2, b"/etc/shadow", F_TRUNCATED, arg=0, ktime=k()),
        sys_rec(Sc.CONNECT, 4, 0, _inet(8080, "10.1.2.3"), 0, ktime=k(), aux=1),
        sys_rec(Sc.CONNECT, 4, -111, _inet6(443, "::1"), 0, ktime=k(), aux=1),
        sys_rec(Sc.CONNECT, 4, 0, struct.pack("<H", socket.AF_UNIX) + b"/run/x.sock\0", 0,
                ktime=k(), aux=1),
        sys_rec(Sc.CONNECT, 4, 0, struct.pack("<H", 99) + b"zz", 0, ktime=k(), aux=1),
        sys_rec(Sc.ACCEPT, 3, 8, _inet(5555, "127.0.0.1"), 0, ktime=k(), aux=1),
        sys_rec(Sc.ACCEPT4, 3, 9, b"", 0, ktime=k(), aux=0),
        sys_rec(Sc.CLONE, 0, 5000, ktime=k()),
        sys_rec(Sc.CLONE3, 0, -1, ktime=k()),
        sys_rec(Sc.FORK, 0, 0, ktime=k()),
        sys_rec(Sc.VFORK, 0, 5001, ktime=k()),
    ], False))
    # exec (redacted argv), fork, payload then exit (streams flushed into "data" events)
    out.append(([
        exec_rec(b"/usr/bin/mysql", [b"mysql", b"--password", b"hunter2", b"-h", b"db"],
                 ktime=k()),
        exec_rec(b"/bin/true", [b"true"], pid=777, truncated=True, ktime=k()),
        fork_rec(4242, 4300, ktime=k()),
        sys_rec(Sc.WRITE, 11, 20, b"api_key=ABCDEFGH1234", F_PAYLOAD | F_DATA_OUT, pid=4300,
                arg=20, ktime=k()),
        sys_rec(Sc.READ, 11, 6, b"partia", F_PAYLOAD, pid=4300, arg=4096, ktime=k()),
        exit_rec(4300, 0, ktime=k()),
        exit_rec(777, -1, ktime=k()),
    ], False))
    # decode errors, mixed into a batch with good records
    out.append(([
        b"", b"\x01" * 30, HDR.pack(77, LAYOUT_VERSION, HDR.size, 0, 0, 1, 1, 0, b""),
        sys_rec(Sc.WRITE, 3, 5, b"hello", version=7),
        sys_rec(999, 3, 5, b"hello"),
        sys_rec(Sc.WRITE, 3, 5, b"hello", F_PAYLOAD, data_len=200),
        sys_rec(Sc.WRITE, 3, 5, b"hello", F_PAYLOAD, op=Op.TLS, arg=5, ktime=k()),
        HDR.pack(Op.FORK, LAYOUT_VERSION, HDR.size, 0, 0, 1, 1, 0, b""),
    ], False))
    # overload: payload shed (stream gets a gap), then the stream recovers
    shed = [sys_rec(Sc.WRITE, 12, 6, b"secret", F_PAYLOAD | F_DATA_OUT, arg=6, ktime=k()),
            sys_rec(Sc.READ, 12, 40, b"x" * 10, F_PAYLOAD | F_TRUNCATED, arg=40, ktime=k()),
            sys_rec(Sc.CLOSE, 12, 0, ktime=k())]
    out.append((shed, True))
    out.append(([sys_rec(Sc.WRITE, 12, 6, b"ok\nmo", F_PAYLOAD | F_DATA_OUT, arg=6, ktime=k()),
                 sys_rec(Sc.WRITE, 12, 3, b"re\n", F_PAYLOAD | F_DATA_OUT, arg=3, ktime=k())],
                False))
    # many streams: more than max_streams (the golden pipeline uses max_streams=8)
    out.append(([sys_rec(Sc.WRITE, 20 + i, 4, b"ab=c", F_PAYLOAD | F_DATA_OUT, arg=4,
                         pid=5000 + i % 3, ktime=k()) for i in range(20)], False))
    return out


class FakeStream:
    """Deterministic stand-in for redact's Stream: releases whole lines, masks digits."""

    def __init__(self) -> None:
        self.held = b""
        self.closed = False

    def feed(self, chunk: bytes) -> bytes:
        if self.closed or not chunk:
            return b""
        buf = self.held + bytes(chunk)
        cut = buf.rfind(b"\n") + 1
        self.held = buf[cut:]
        return FakeRedactor().redact(buf[:cut])

    def gap(self, n: int = 0) -> bytes:
        if self.closed:
            return b""
        out = b"[GAP]" if self.held else b""
        self.held = b""
        return out

    def close(self) -> bytes:
        if self.closed:
            return b""
        self.closed = True
        out, self.held = self.held, b""
        return FakeRedactor().redact(out)


class FakeRedactor:
    def redact(self, data: bytes, protocol: str | None = None) -> bytes:
        return data.translate(bytes.maketrans(b"0123456789", b"##########"))

    def stream(self, protocol: str | None = None) -> FakeStream:
        return FakeStream()
