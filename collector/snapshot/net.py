"""Socket tables of a process's network namespace (/proc/PID/net/*), keyed by socket inode."""

from __future__ import annotations

import ipaddress
import sys
from typing import Any, NamedTuple

TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK",
    "0A": "LISTEN", "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}
UNIX_TYPES = {"0001": "SOCK_STREAM", "0002": "SOCK_DGRAM", "0005": "SOCK_SEQPACKET"}
UNIX_STATES = {"01": "UNCONNECTED", "02": "CONNECTING", "03": "CONNECTED",
               "04": "DISCONNECTING"}
SO_ACCEPTCON = 0x10000  # unix "Flags": a listening socket

# /proc/PID/net file -> (family, type)
INET_TABLES = (
    ("tcp", "AF_INET", "SOCK_STREAM"), ("tcp6", "AF_INET6", "SOCK_STREAM"),
    ("udp", "AF_INET", "SOCK_DGRAM"), ("udp6", "AF_INET6", "SOCK_DGRAM"),
)


class Sock(NamedTuple):
    """One socket as the kernel's table shows it. Addresses: (ip, port) for inet, the
    (unredacted) path or None for unix; the caller redacts unix paths."""

    family: str
    type: str
    laddr: tuple[str, int] | str | None
    raddr: tuple[str, int] | str | None
    state: str
    tx_queue: int | None = None
    rx_queue: int | None = None


def _ip_port(text: str) -> tuple[str, int]:
    """"0100007F:1F90" -> ("127.0.0.1", 8080). The kernel prints each 32-bit word of the
    address in host byte order."""
    hexaddr, _, hexport = text.partition(":")
    raw = b"".join(int(hexaddr[i:i + 8], 16).to_bytes(4, sys.byteorder)
                   for i in range(0, len(hexaddr), 8))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # a dual-stack socket's IPv4 peer; spelled the same on every Python version
        return f"::ffff:{ip.ipv4_mapped}", int(hexport, 16)
    return str(ip), int(hexport, 16)


def parse_inet(text: str, family: str, type_: str, want: set[int]) -> dict[int, Sock]:
    """Rows of /proc/net/{tcp,tcp6,udp,udp6} whose inode is in want."""
    out: dict[int, Sock] = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10 or not f[9].isdigit() or int(f[9]) not in want:
            continue
        laddr, raddr = _ip_port(f[1]), _ip_port(f[2])
        tx, _, rx = f[4].partition(":")
        # UDP has no connection state; a connected one shows a remote address
        state = TCP_STATES.get(f[3], f[3]) if type_ == "SOCK_STREAM" else "NONE"
        unconnected = raddr[1] == 0 and ipaddress.ip_address(raddr[0]).is_unspecified
        out[int(f[9])] = Sock(family, type_, laddr, None if unconnected else raddr, state,
                              int(tx, 16), int(rx, 16))
    return out


def parse_unix(text: str, want: set[int]) -> dict[int, Sock]:
    """Rows of /proc/net/unix whose inode is in want. The path is the rest of the line
    (it may hold spaces); abstract names start with '@'."""
    out: dict[int, Sock] = {}
    for line in text.splitlines()[1:]:
        f = line.split(None, 7)
        if len(f) < 7 or not f[6].isdigit() or int(f[6]) not in want:
            continue
        try:
            listening = int(f[3], 16) & SO_ACCEPTCON
        except ValueError:
            # The kernel prints unix paths raw, newlines included: a path can end a line
            # early and start a fake one. Lines that do not parse are skipped.
            continue
        state = "LISTEN" if listening else UNIX_STATES.get(f[5], f[5])
        path = f[7] if len(f) > 7 else None
        out[int(f[6])] = Sock("AF_UNIX", UNIX_TYPES.get(f[4], f[4]), path, None, state)
    return out


def parse_netlink(text: str, want: set[int]) -> dict[int, Sock]:
    """Rows of /proc/net/netlink (sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode)."""
    out: dict[int, Sock] = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10 or not f[9].isdigit() or int(f[9]) not in want:
            continue
        out[int(f[9])] = Sock("AF_NETLINK", "SOCK_RAW", f"protocol {f[1]}", None, "NONE")
    return out


def addr_json(addr: tuple[str, int] | str | None) -> Any:
    """JSON form: [ip, port] for inet, the path for unix (redacted by the caller)."""
    if isinstance(addr, tuple):
        return [addr[0], addr[1]]
    return addr
