"""The L7 stage: a pipeline RecordObserver that follows each connection of the traced
processes and feeds the bytes it moves to one L7Conn, so "conn" and "l7" records come out.

    stage = L7Stage(redactor.redact_text, StageOptions(l7_cap=1024), fd_cap=..., ...)
    Pipeline(..., observers=[stage])

Connections open at connect/accept (role client/server), at the session's start (seeded
from sock_diag, `preexisting`), or when a socket fd we never saw open carries payload
(adopted, role inferred from content). TLS plaintext (kind "tls") is fed to the
connection of its fd and replaces the syscall bytes on it, which are ciphertext. What
happens to the bytes of a connection is l7feed.py. Runs on the pipeline's worker thread;
only seed() is called from elsewhere (it queues).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collector.capture.conns import Conn, ConnTable
from collector.capture.events import Event
from collector.capture.l7feed import Feeder
from collector.capture.sockets import SocketBook
from collector.l7 import Redact

FILES_MAX = 65536  # (pid, fd) known not to be sockets; cleared when full
TLS_ASKED_MAX = 4096


@dataclass(frozen=True)
class StageOptions:
    l7: bool = True          # parse L7 (else connections only)
    l7_cap: int = 0          # payload cap asked of the kernel for fds with a detected protocol
    update_s: float = 10.0   # an open connection with new traffic gets a record this often
    lookup_s: float = 1.0    # at most one sock_diag dump this often (local addresses)
    max_conns: int = 16384


def _facts(ev: Event) -> dict[str, str]:
    """The enrichment an event carried (comm, unit), for records made later."""
    return {k: ev[k] for k in ("comm", "unit") if k in ev}


class L7Stage:
    """Connections and L7 records from what the pipeline captured (a RecordObserver)."""

    def __init__(self, redact: Redact, options: StageOptions | None = None, *,
                 procfs: str | Path = "/proc", book: SocketBook | None = None,
                 fd_cap: Callable[[int, int, int], bool] | None = None,
                 tls_candidate: Callable[[int, int], object] | None = None) -> None:
        self.options = options or StageOptions()
        self.counters: Counter[str] = Counter()  # read by metrics at scrape time
        self._out: list[Event] = []
        self._feeder = Feeder(redact, self.options.l7_cap, self._out, self.counters, fd_cap,
                              self._show)
        self._table = ConnTable(self.options.max_conns)
        self._ssl: dict[tuple[int, str], Conn] = {}  # TLS connections whose fd is unknown
        self.ignored_fds: dict[int, set[int]] = {}  # pid -> fds that are not sockets
        self._nfiles = 0
        self._book = book or SocketBook(procfs)
        self._tls_candidate = tls_candidate
        self._tls_asked: set[int] = set()
        self._seeds: deque[list[Conn]] = deque()  # filled by seed() on another thread
        self._last_sweep = 0.0

    # -- RecordObserver --------------------------------------------------------------------
    def observe(self, ev: Event, data: bytes | None, missing: int, /) -> None:
        if self._seeds:
            self._take_seeds()
        kind = ev["kind"]
        if kind == "syscall":
            direction = ev.get("direction")
            if direction is not None:
                files = self.ignored_fds.get(ev["pid"])
                if files is None or ev["fd"] not in files:  # a file, pipe, tty: no L7 here
                    self._io(ev, direction, data, missing)
                return
            sc = ev["syscall"]
            if sc == "connect":
                self._connect(ev)
            elif sc == "accept" or sc == "accept4":
                self._accept(ev)
            elif sc == "close":
                self._close(ev)
            elif sc == "openat" or sc == "openat2":
                self._opened(ev)
            elif (sc == "execve" or sc == "execveat") and ev["ret"] == 0:
                self._exec(ev)
        elif kind == "tls":
            self._tls(ev, data, missing)
        elif kind == "exit":
            self._exit(ev)
        elif kind == "fork":
            self._fork(ev)

    def collect(self, now: float, /) -> list[Event]:
        if self._seeds:
            self._take_seeds()
        mono = time.monotonic()
        if mono - self._last_sweep >= 1.0:
            self._last_sweep = mono
            self._sweep(now)
            for c in self._book.resolve(mono):
                c.dirty = True
                self._show(c)
        out = self._out[:]  # the feeder appends to this very list
        self._out.clear()
        return out

    def lost(self, /) -> None:
        """Records were lost under load: every parsed connection may miss bytes."""
        self.counters["l7_losses"] += 1
        for c in [*self._table, *self._ssl.values()]:
            if c.l7 is not None and not c.l7.gave_up:
                self._feeder.records(c, c.l7.lost())

    # -- connections -----------------------------------------------------------------------
    def _open(self, pid: int, fd: int, cookie: int, role: str | None, ts: float,
              family: str | None, peer: str | None) -> Conn:
        c, old, evicted = self._table.open(pid, fd, cookie, role, ts, family, peer)
        self._ended(old, ts)  # its close was not seen (lost, or before we traced it)
        if evicted is not None:
            self.counters["conns_evicted"] += 1
            self._ended(evicted, ts)
        files = self.ignored_fds.get(pid)
        if files is not None:
            files.discard(fd)
        return c

    def _connect(self, ev: Event) -> None:
        family = ev.get("family")
        if family not in ("AF_INET", "AF_INET6", "AF_UNIX"):
            return  # AF_UNSPEC (dissolves a UDP association), netlink, ...
        err = ev.get("errno")
        if err is not None and err != "EINPROGRESS":
            if err in ("EALREADY", "EISCONN", "EINTR", "EAGAIN"):
                return  # a non-blocking connect polled again: the first call opened it
            c = Conn(self._table.new_id(), ev["pid"], ev["fd"], ev["target"], "client",
                     ev["ts"], family, ev.get("peer"))
            c.error(err)
            self._out.append(c.record("failed", ev["ts"]))
            return
        c = self._open(ev["pid"], ev["fd"], ev["target"], "client", ev["ts"], family,
                       ev.get("peer"))
        c.facts = _facts(ev)
        self._book.want(c)
        self._out.append(c.record("open", ev["ts"]))

    def _accept(self, ev: Event) -> None:
        if ev["ret"] < 0:
            return
        c = self._open(ev["pid"], ev["ret"], ev["target"], "server", ev["ts"],
                       ev.get("family"), ev.get("peer"))
        c.facts = _facts(ev)
        self._book.want(c)
        self._out.append(c.record("open", ev["ts"]))

    def _close(self, ev: Event) -> None:
        if ev["ret"] != 0:
            return
        pid, fd = ev["pid"], ev["fd"]
        files = self.ignored_fds.get(pid)
        if files is not None:
            files.discard(fd)
        self._ended(self._table.close(pid, fd), ev["ts"])

    def _exit(self, ev: Event) -> None:
        pid, ts = ev["pid"], ev["ts"]
        for c in self._table.close_pid(pid):
            self._ended(c, ts)
        for key in [k for k in self._ssl if k[0] == pid]:
            self._ended(self._ssl.pop(key), ts, record=False)
        self._nfiles -= len(self.ignored_fds.pop(pid, ()))
        self._tls_asked.discard(pid)

    def _exec(self, ev: Event) -> None:
        """A new image: its close-on-exec sockets closed without a close() call. The
        connections whose fd no longer holds the same socket end here; SSLs are gone."""
        pid, ts = ev["pid"], ev["ts"]
        held = self._table.of_pid(pid)
        if held:
            now = self._book.inodes(pid, [c.fd for c in held])
            for c in held:
                inode = now.get(c.fd)
                if inode is None or (c.inode is not None and inode != c.inode):
                    self._ended(self._table.close(pid, c.fd), ts)
        for key in [k for k in self._ssl if k[0] == pid]:
            self._ended(self._ssl.pop(key), ts, record=False)
        self._nfiles -= len(self.ignored_fds.pop(pid, ()))

    def _fork(self, ev: Event) -> None:
        """The child holds the parent's connections too (a server that accepts, then forks
        a process to serve the connection: PostgreSQL, sshd)."""
        child = ev["child"]
        for c in self._table.of_pid(ev["pid"]):
            for gone in self._table.add(c.forked(child)):
                self._ended(gone, ev["ts"])

    def _ended(self, c: Conn | None, ts: float, record: bool = True) -> None:
        """A connection's copy was closed (already taken out of the table, if it was in)."""
        if c is None:
            return
        self._feeder.close(c, ts)
        # the closing record comes from the last process holding it
        if record and not c.quiet and self._table.last(c):
            self._out.append(c.record("closed", ts))

    def _show(self, c: Conn) -> None:
        """An adopted socket turned out to be a connection worth a record: its first one."""
        if c.quiet:
            c.quiet = False
            self._out.append(c.record("open", c.opened))

    def _opened(self, ev: Event) -> None:
        """A file is not a socket (no lookup for it later); an exec'd or dlopen'ing process
        that opens libssl gets the TLS probes (the tracer attaches them off this thread)."""
        pid = ev["pid"]
        if ev["ret"] >= 0:
            self._not_socket(pid, ev["ret"])
        if self._tls_candidate is not None and "libssl.so" in ev.get("path", "") \
                and pid not in self._tls_asked:
            if len(self._tls_asked) >= TLS_ASKED_MAX:
                self._tls_asked.clear()
            self._tls_asked.add(pid)
            self._tls_candidate(pid, ev["target"])

    def _not_socket(self, pid: int, fd: int) -> None:
        if self._nfiles >= FILES_MAX:
            self.ignored_fds.clear()
            self._nfiles = 0
        files = self.ignored_fds.setdefault(pid, set())
        if fd not in files:
            files.add(fd)
            self._nfiles += 1

    def _adopt(self, ev: Event) -> Conn | None:
        """A socket we never saw open (inherited, or opened before the session): tracked
        from now on; an fd that is not a socket is remembered as such."""
        pid, fd = ev["pid"], ev["fd"]
        files = self.ignored_fds.get(pid)
        if files is not None and fd in files:
            return None
        inode = self._book.inode(pid, fd)
        if inode is None:
            self._not_socket(pid, fd)
            return None
        c = self._open(pid, fd, ev["target"], None, ev["ts"], None, None)
        c.preexisting = True  # it was open before we saw it: its start is when we first did
        c.quiet = True  # unix, netlink or inet: shown once we know (sock_diag, a protocol)
        c.inode = inode
        self._book.want(c, inode)
        self.counters["conns_adopted"] += 1
        return c

    # -- bytes ---------------------------------------------------------------------------
    def _io(self, ev: Event, direction: str, data: bytes | None, missing: int) -> None:
        c = self._table.get(ev["pid"], ev["fd"])
        if c is None:
            if data is None and not missing:
                return  # meta level: no lookup for fds we did not see open
            c = self._adopt(ev)
            if c is None:
                return
        if c.facts is None:
            c.facts = _facts(ev)
        ret = ev["ret"]
        if ret > 0:
            if direction == "out":
                c.bytes_out += ret
                c.calls_out += 1
            else:
                c.bytes_in += ret
                c.calls_in += 1
            c.dirty = True
        elif "errno" in ev:
            c.error(ev["errno"])
        if "ciphertext" in ev:
            c.tls = True
            return
        if c.plaintext or not self.options.l7:
            return
        if data is None and not missing:
            if ret <= 0 or c.l7 is None or ev["syscall"] != "sendfile":
                return  # meta level, or nothing moved
            missing = ret  # a body sent from a file: bytes the parser skips, in sync
        self._feeder.feed(c, ev, direction, data, missing)

    def _tls(self, ev: Event, data: bytes | None, missing: int) -> None:
        pid = ev["pid"]
        fd = ev.get("fd")
        if fd is None:  # the kernel did not learn its socket: a connection of its own
            key = (pid, ev["conn"])
            c = self._ssl.get(key)
            if c is None:
                if len(self._ssl) >= self.options.max_conns:
                    self._ended(self._ssl.pop(next(iter(self._ssl))), ev["ts"], record=False)
                c = self._ssl[key] = Conn(self._table.new_id(), pid, -1, ev["target"], None,
                                          ev["ts"])
        else:
            c = self._table.get(pid, fd) or self._adopt(ev)
            if c is None:
                return
        if c.facts is None:
            c.facts = _facts(ev)
        if not c.plaintext:
            self._feeder.plaintext(c, ev["ts"])
        if (data is None and not missing) or not self.options.l7:
            return
        self._feeder.feed(c, ev, ev["direction"], data, missing)

    # -- periodic ------------------------------------------------------------------------
    def _sweep(self, now: float) -> None:
        """Open connections with new traffic get a record every update_s."""
        every = self.options.update_s
        for c in self._table:
            if c.dirty and not c.quiet and now - c.shown >= every:
                self._out.append(c.record("active", now))

    # -- seeding (another thread) ----------------------------------------------------------
    def seed(self, cookie: int, pids: list[int]) -> int:
        """Connections the processes have now (a session starts): queued for the worker.
        Called on a session opener's thread; returns how many were found."""
        conns = self._book.seed(cookie, pids, self._table.new_id)
        if conns:
            self._seeds.append(conns)
        return len(conns)

    def _take_seeds(self) -> None:
        while self._seeds:
            for c in self._seeds.popleft():
                if self._table.get(c.pid, c.fd) is not None:
                    continue  # already followed (seen opening, or an earlier session)
                for gone in self._table.add(c):
                    self._ended(gone, c.opened)
                self._out.append(c.record("open", c.opened))
