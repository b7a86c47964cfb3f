"""Connections as records: one per socket from connect/accept (or the session's start) to
close, with its peer, role, traffic each way, errors and the L7 protocol seen on it.

The L7 stage (l7stage.py) owns a ConnTable on the pipeline's worker thread and asks each
Conn for its "conn" record when it opens, at intervals while it carries traffic, and when
it closes. Field names are in docs/events.md ("conn").
"""

from __future__ import annotations

import itertools
import secrets
from collections import Counter, OrderedDict
from collections.abc import Iterator

from collector.capture.events import Event
from collector.l7 import L7Conn

# errno -> what an SRE calls it; others are counted under their own name
ERROR_KINDS = {"ECONNREFUSED": "refused", "ECONNRESET": "reset", "EPIPE": "reset",
               "ETIMEDOUT": "timeout", "EHOSTUNREACH": "unreachable",
               "ENETUNREACH": "unreachable", "ECONNABORTED": "aborted"}
# errnos that are flow control, not failures (non-blocking I/O, signals)
NOT_ERRORS = frozenset(("EAGAIN", "EWOULDBLOCK", "EINPROGRESS", "EALREADY", "EINTR",
                        "ERESTARTSYS", "E512"))


class Conn:
    """One connection's running totals (mutable; the stage's worker thread owns it)."""

    __slots__ = ("bytes_in", "bytes_out", "calls_in", "calls_out", "cap_tries", "cookie",
                 "dgram", "dirty", "errors", "facts", "family", "fd", "id", "inode", "l7",
                 "local",
                 "opened", "peer", "pid", "plaintext", "preexisting", "proto", "quiet",
                 "role", "rx_queue", "shown", "tcp_state", "tls", "tx_queue")

    def __init__(self, cid: str, pid: int, fd: int, cookie: int, role: str | None,
                 opened: float, family: str | None = None, peer: str | None = None) -> None:
        self.id = cid
        self.pid = pid
        self.fd = fd
        self.cookie = cookie
        self.role = role  # "client" (connect), "server" (accept) or None (not seen opening)
        self.opened = opened
        self.family = family
        self.peer = peer
        self.local: str | None = None
        self.inode: int | None = None
        self.preexisting = False
        self.tcp_state: str | None = None  # from sock_diag, for connections seeded at start
        self.rx_queue: int | None = None
        self.tx_queue: int | None = None
        self.bytes_in = self.bytes_out = self.calls_in = self.calls_out = 0
        self.errors: dict[str, int] = {}
        self.proto: str | None = None
        self.tls = False  # ciphertext seen (SSL_* on this fd)
        self.plaintext = False  # its L7 input is the TLS plaintext, not the syscall bytes
        self.l7: L7Conn | None = None
        self.dgram: bool | None = None  # UDP: one message per call (None: not known yet)
        self.cap_tries = 0  # asks for the larger L7 cap on this fd (done: l7feed.CAP_TRIES)
        self.dirty = False  # changed since its last record
        # comm and unit as the process's events had them: its records keep them when they
        # are made after it exited (at close or exit), when /proc can no longer say
        self.facts: dict[str, str] | None = None
        # No records yet: a socket adopted unseen might be unix or netlink; it is shown once
        # sock_diag finds it (inet) or a protocol is detected on it.
        self.quiet = False
        self.shown = 0.0  # when its last record was made

    def forked(self, child: int) -> Conn:
        """The child's copy of this connection after fork(): the same connection (same id,
        peer, role, totals so far); it parses the child's traffic afresh."""
        c = Conn(self.id, child, self.fd, self.cookie, self.role, self.opened, self.family,
                 self.peer)
        for name in ("local", "inode", "preexisting", "tcp_state", "rx_queue", "tx_queue",
                     "bytes_in", "bytes_out", "calls_in", "calls_out", "proto", "tls",
                     "dgram", "quiet", "shown", "facts"):
            setattr(c, name, getattr(self, name))
        c.errors = dict(self.errors)
        return c

    def error(self, errno_name: str) -> None:
        if errno_name in NOT_ERRORS:
            return
        kind = ERROR_KINDS.get(errno_name, errno_name)
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.dirty = True

    def record(self, state: str, now: float) -> Event:
        """The "conn" record: `state` is open, active (totals so far), closed or failed."""
        ev: Event = {"ts": self.opened, "kind": "conn", "pid": self.pid, "target": self.cookie,
                     "conn": self.id, "fd": self.fd, "state": state}
        for key, value in (("role", self.role), ("family", self.family),
                           ("local", self.local), ("peer", self.peer), ("proto", self.proto)):
            if value is not None:
                ev[key] = value
        if state in ("closed", "failed"):
            ev["end"] = now
            ev["duration_ms"] = round(max(0.0, now - self.opened) * 1000, 3)
        ev["bytes_in"] = self.bytes_in
        ev["bytes_out"] = self.bytes_out
        ev["calls_in"] = self.calls_in
        ev["calls_out"] = self.calls_out
        if self.errors:
            ev["errors"] = dict(self.errors)
        if self.tls:
            ev["tls"] = True
        if self.dgram:
            ev["transport"] = "udp"
        if self.facts:
            ev.update(self.facts)
        if self.preexisting:
            ev["preexisting"] = True
            if self.tcp_state is not None:  # seeded from sock_diag at the session's start
                ev["tcp_state"] = self.tcp_state
                ev["rx_queue"] = self.rx_queue
                ev["tx_queue"] = self.tx_queue
        self.dirty = False
        self.shown = now
        return ev


class ConnTable:
    """(pid, fd) -> Conn, bounded (the oldest opened is evicted first, counted by the caller).

    A connection forked into a child is one connection held by two processes: both copies
    share its id, and only the last one to let go of it makes its closing record.
    """

    def __init__(self, capacity: int = 16384) -> None:
        self.capacity = capacity
        self._by_key: OrderedDict[tuple[int, int], Conn] = OrderedDict()
        self._by_pid: dict[int, set[int]] = {}
        self._holders: Counter[str] = Counter()  # conn id -> processes holding it
        # ids unique across daemon restarts (the store keeps one row per id)
        self._run = secrets.token_hex(2)
        self._ids = itertools.count(1)  # next() is atomic: seed() takes ids on another thread

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Conn]:
        return iter(list(self._by_key.values()))

    def get(self, pid: int, fd: int) -> Conn | None:
        return self._by_key.get((pid, fd))

    def of_pid(self, pid: int) -> list[Conn]:
        return [self._by_key[(pid, fd)] for fd in sorted(self._by_pid.get(pid, ()))]

    def new_id(self) -> str:
        return f"c{next(self._ids):x}-{self._run}"

    def open(self, pid: int, fd: int, cookie: int, role: str | None, ts: float,
             family: str | None = None, peer: str | None = None
             ) -> tuple[Conn, Conn | None, Conn | None]:
        """A new connection at (pid, fd): (it, the one it replaced, the one evicted)."""
        c = Conn(self.new_id(), pid, fd, cookie, role, ts, family, peer)
        return (c, *self.add(c))

    def add(self, c: Conn) -> tuple[Conn | None, Conn | None]:
        """Follow `c`: (the connection it replaced, the one evicted to make room).

        A replaced one is a connection whose close we never saw (the fd was reused).
        """
        old = self.close(c.pid, c.fd)
        evicted = None
        if len(self._by_key) >= self.capacity:
            (pid, fd), evicted = next(iter(self._by_key.items()))
            self.close(pid, fd)
        self._by_key[(c.pid, c.fd)] = c
        self._by_pid.setdefault(c.pid, set()).add(c.fd)
        self._holders[c.id] += 1
        return old, evicted

    def close(self, pid: int, fd: int) -> Conn | None:
        c = self._by_key.pop((pid, fd), None)
        if c is not None:
            fds = self._by_pid[pid]
            fds.discard(fd)
            if not fds:
                del self._by_pid[pid]
            self._holders[c.id] -= 1
        return c

    def close_pid(self, pid: int) -> list[Conn]:
        return [c for c in (self.close(pid, fd) for fd in sorted(self._by_pid.get(pid, ())))
                if c is not None]

    def last(self, c: Conn) -> bool:
        """After close(): no other process holds this connection (its record is due)."""
        if self._holders.get(c.id, 0) > 0:
            return False
        self._holders.pop(c.id, None)
        return True
