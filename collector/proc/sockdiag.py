"""Sockets of a process from the kernel's sock_diag (pyroute2's inet_diag dump), by inode.

    inodes = socket_inodes(pid)            # fd -> socket inode, from /proc/PID/fd
    table = SockDiag().dump()              # inode -> Sock (TCP and UDP, IPv4 and IPv6)

Used to seed the connections that exist when a session starts (their TCP state and
queues), and to fill in the local address of connections we saw open (connect/accept
give only the peer). The dump sees the daemon's own network namespace: a socket of a
process in another one is not found (the caller leaves those fields out).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

log = logging.getLogger("periscope.sockdiag")

TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV",
}
# UDP sockets reuse the TCP numbers: 1 is connected, 7 is unconnected (bound or not)
UDP_STATES = {1: "CONNECTED", 7: "UNCONN"}
PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
FAMILIES = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6"}
_SOCKET_LINK = "socket:["


class Sock(NamedTuple):
    """One inet socket as sock_diag reports it. Addresses are spelled as in events:
    `1.2.3.4:80`, `[::1]:443`; `peer` is None when not connected."""

    inode: int
    family: str
    proto: str  # "tcp" or "udp"
    local: str
    peer: str | None
    state: str
    rx_queue: int  # bytes received, not yet read (a listener: its accept backlog)
    tx_queue: int  # bytes sent, not yet acknowledged


def addr(ip: str, port: int, family: int) -> str:
    """An address as events spell it (an IPv4-mapped IPv6 peer as ::ffff:a.b.c.d)."""
    if family == socket.AF_INET6:  # inet_ntop's spelling, as the events' sockaddr decode
        return f"[{socket.inet_ntop(family, socket.inet_pton(family, ip))}]:{port}"
    return f"{ip}:{port}"


def parse(msg: Mapping[str, Any], proto: str) -> Sock | None:
    """One inet_diag_msg (pyroute2's dict form) as a Sock; None if it is not inet."""
    family = msg.get("idiag_family")
    if family not in FAMILIES:
        return None
    code = int(msg.get("idiag_state", 0))
    states = TCP_STATES if proto == "tcp" else UDP_STATES
    connected = int(msg.get("idiag_dport", 0)) != 0
    peer = addr(str(msg["idiag_dst"]), int(msg["idiag_dport"]), family) if connected else None
    return Sock(int(msg.get("idiag_inode", 0)), FAMILIES[family], proto,
                addr(str(msg["idiag_src"]), int(msg["idiag_sport"]), family), peer,
                states.get(code, f"STATE{code}"), int(msg.get("idiag_rqueue", 0)),
                int(msg.get("idiag_wqueue", 0)))


def socket_inodes(pid: int, procfs: str | Path = "/proc",
                  fds: Iterable[int] | None = None) -> dict[int, int]:
    """fd -> socket inode for a process's socket fds (all of them, or only `fds`).

    Empty when the process is gone or hidden from us; an fd closed meanwhile is skipped.
    """
    base = Path(procfs, str(pid), "fd")
    out: dict[int, int] = {}
    try:
        names = [str(fd) for fd in fds] if fds is not None else os.listdir(base)
    except OSError:
        return out
    for name in names:
        try:
            link = os.readlink(base / name)
        except OSError:
            continue  # closed since, or the process exited
        if link.startswith(_SOCKET_LINK) and link.endswith("]") and name.isdigit():
            out[int(name)] = int(link[len(_SOCKET_LINK):-1])
    return out


class Dumper(Protocol):
    """What SockDiag needs of pyroute2's DiagSocket (a fake in unit tests)."""

    def get_sock_stats(self, family: int = ..., states: int = ..., protocol: int = ...,
                       ) -> list[Any]: ...


class SockDiag:
    """inet_diag dumps through one pyroute2 DiagSocket, opened at first use and reopened
    after an error. Not thread-safe: one owner (the pipeline worker, or a session opener
    with its own instance)."""

    def __init__(self, opener: Any = None) -> None:
        self._opener = opener  # () -> Dumper; default: a bound pyroute2 DiagSocket
        self._sock: Any = None
        self.dumps = 0
        self.errors = 0

    def _open(self) -> Dumper:
        if self._sock is None:
            if self._opener is not None:
                self._sock = self._opener()
            else:
                from pyroute2 import DiagSocket  # pyroute2 starts an event loop: import late

                self._sock = DiagSocket()
                self._sock.bind()
        return self._sock

    def dump(self, protos: Iterable[str] = ("tcp", "udp"),
             families: Iterable[int] = (socket.AF_INET, socket.AF_INET6)) -> dict[int, Sock]:
        """inode -> Sock for every inet socket of these protocols and families; empty on
        a netlink error (logged once per failure, counted)."""
        out: dict[int, Sock] = {}
        try:
            sock = self._open()
            for proto in protos:
                for family in families:
                    for msg in sock.get_sock_stats(family=family, protocol=PROTOS[proto]):
                        s = parse(msg, proto)
                        if s is not None and s.inode:
                            out[s.inode] = s
            self.dumps += 1
        except Exception as err:  # pyroute2 raises NetlinkError, OSError and its own kinds
            self.errors += 1
            log.warning("sock_diag dump failed: %s", err)
            self.close()
        return out

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except Exception:  # closing a broken netlink socket: nothing left to do
                log.debug("closing the sock_diag socket failed", exc_info=True)
            self._sock = None
