"""What the kernel knows of the traced processes' sockets, for connection records: which
fds are sockets, their local addresses, and the connections open when a session starts.

connect/accept tell us the peer only; the local address comes from sock_diag, matched
by the socket's inode (read from /proc/PID/fd when the connection opens). Dumps are
rate-limited (one per `lookup_s` at most, only while some connection waits for one): a
pyroute2 dump costs milliseconds, so a connection that closes before the next dump keeps
no local address.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from collector.capture.conns import Conn
from collector.proc.sockdiag import Sock, SockDiag, socket_inodes

PENDING_MAX = 4096
PENDING_S = 5.0  # a connection not found by then is given up on (closed, other netns)
_FAMILY = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}


def _port(address: str | None) -> str | None:
    return None if address is None else address.rpartition(":")[2]


class SocketBook:
    """Socket inodes and sock_diag lookups. resolve() and want() run on the pipeline's
    worker; seed() on a session opener's thread (its own netlink socket, under a lock)."""

    def __init__(self, procfs: str | Path = "/proc", diag: SockDiag | None = None,
                 seed_diag: SockDiag | None = None, lookup_s: float = 1.0) -> None:
        self.procfs = procfs
        self.lookup_s = lookup_s
        self._diag = diag or SockDiag()
        self._seed_diag = seed_diag or SockDiag()
        self._seed_lock = threading.Lock()
        self._pending: dict[int, tuple[Conn, float]] = {}  # inode -> (conn, since)
        self._last = 0.0

    def inode(self, pid: int, fd: int) -> int | None:
        """The socket inode of an fd, None if it is not a socket (or is gone)."""
        return socket_inodes(pid, self.procfs, (fd,)).get(fd)

    def inodes(self, pid: int, fds: list[int]) -> dict[int, int]:
        """fd -> socket inode for those of `fds` that are sockets now."""
        return socket_inodes(pid, self.procfs, fds)

    def want(self, c: Conn, inode: int | None = None) -> None:
        """Find this inet connection's local address at the next resolve()."""
        if c.family not in (None, "AF_INET", "AF_INET6"):
            return
        if inode is None:
            inode = self.inode(c.pid, c.fd)
            if inode is None:
                return  # closed already: nothing to look up
        c.inode = inode
        if len(self._pending) < PENDING_MAX:
            self._pending[inode] = (c, time.monotonic())

    def resolve(self, now: float) -> list[Conn]:
        """One dump (at most every lookup_s) for the connections waiting: those it found
        get their local address (and family, transport); returns them."""
        if not self._pending or now - self._last < self.lookup_s:
            return []
        self._last = now
        waiting = list(self._pending.items())
        fams = {c.family for c, _t in self._pending.values()}
        families = [f for name, f in _FAMILY.items() if name in fams or None in fams]
        table = self._diag.dump(families=families)
        found = []
        for inode, (c, since) in waiting:
            s = table.get(inode)
            if s is not None and (c.peer is None or _port(c.peer) == _port(s.peer)):
                fill(c, s)
                found.append(c)
            elif now - since < PENDING_S:
                continue
            del self._pending[inode]
        return found

    def seed(self, cookie: int, pids: list[int], new_id: Callable[[], str]) -> list[Conn]:
        """The inet sockets these processes hold now, as preexisting connections (LISTEN
        sockets are not connections: they only make a socket on their port a server's)."""
        held = {pid: socket_inodes(pid, self.procfs) for pid in pids}
        if not any(held.values()):
            return []
        with self._seed_lock:
            table = self._seed_diag.dump()
        now = time.time()
        out = []
        for pid, fds in held.items():
            socks = {fd: table[ino] for fd, ino in fds.items() if ino in table}
            listening = {_port(s.local) for s in socks.values() if s.state == "LISTEN"}
            for fd, s in sorted(socks.items()):
                if s.state == "LISTEN":
                    continue
                role = None if s.peer is None else (
                    "server" if _port(s.local) in listening else "client")
                c = Conn(new_id(), pid, fd, cookie, role, now, s.family, s.peer)
                c.preexisting = True
                fill(c, s)
                c.tcp_state = s.state
                c.rx_queue, c.tx_queue = s.rx_queue, s.tx_queue
                out.append(c)
        return out


def fill(c: Conn, s: Sock) -> None:
    """What sock_diag adds to a connection: its local address, family and transport."""
    c.inode = s.inode
    c.local = s.local
    c.family = c.family or s.family
    c.peer = c.peer or s.peer
    if c.l7 is None:  # a parser already chosen keeps its framing
        c.dgram = s.proto == "udp"
