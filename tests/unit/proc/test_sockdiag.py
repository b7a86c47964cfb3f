"""sock_diag through pyroute2: messages to Socks (as events spell addresses), socket inodes
from /proc/PID/fd, and a dump that fails is an empty answer, counted, never an exception."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from collector.proc.sockdiag import SockDiag, parse, socket_inodes


def msg(family: int, src: str, sport: int, dst: str, dport: int, state: int,
        inode: int = 9, rq: int = 0, wq: int = 0) -> dict[str, Any]:
    return {"idiag_family": family, "idiag_src": src, "idiag_sport": sport, "idiag_dst": dst,
            "idiag_dport": dport, "idiag_state": state, "idiag_inode": inode,
            "idiag_rqueue": rq, "idiag_wqueue": wq}


def test_messages_become_socks_spelled_like_events() -> None:
    s = parse(msg(socket.AF_INET, "127.0.0.1", 8080, "127.0.0.1", 50000, 1, 5, 7, 3), "tcp")
    assert s is not None
    assert (s.inode, s.family, s.proto, s.local, s.peer, s.state, s.rx_queue, s.tx_queue) == (
        5, "AF_INET", "tcp", "127.0.0.1:8080", "127.0.0.1:50000", "ESTABLISHED", 7, 3)
    six = parse(msg(socket.AF_INET6, "::1", 443, "::ffff:10.0.0.1", 40000, 10), "tcp")
    assert six is not None and (six.local, six.peer, six.state) == (
        "[::1]:443", "[::ffff:10.0.0.1]:40000", "LISTEN")
    udp = parse(msg(socket.AF_INET, "0.0.0.0", 53, "0.0.0.0", 0, 7), "udp")
    assert udp is not None and (udp.peer, udp.state) == (None, "UNCONN")
    assert parse(msg(socket.AF_UNIX, "", 0, "", 0, 1), "tcp") is None


def test_socket_inodes_reads_only_sockets(tmp_path: Path) -> None:
    fd = tmp_path / "77" / "fd"
    fd.mkdir(parents=True)
    os.symlink("socket:[1234]", fd / "3")
    os.symlink("pipe:[99]", fd / "4")
    os.symlink("/var/log/x", fd / "5")
    os.symlink("socket:[5678]", fd / "6")
    assert socket_inodes(77, tmp_path) == {3: 1234, 6: 5678}
    assert socket_inodes(77, tmp_path, [6, 9]) == {6: 5678}  # 9: closed meanwhile
    assert socket_inodes(78, tmp_path) == {}  # the process is gone


class Flaky:
    def __init__(self) -> None:
        self.calls = 0
        self.closed = 0

    def get_sock_stats(self, family: int = 0, protocol: int = 0, **_kw: Any) -> list[Any]:
        self.calls += 1
        if self.calls == 1:
            raise OSError(105, "No buffer space available")
        if family != socket.AF_INET:
            return []
        return [msg(family, "127.0.0.1", 1, "127.0.0.1", 2, 1, inode=protocol)]

    def close(self) -> None:
        self.closed += 1


def test_a_failed_dump_is_empty_counted_and_the_socket_reopened() -> None:
    made: list[Flaky] = []

    def opener() -> Flaky:
        made.append(Flaky() if not made else made[0])
        return made[-1]

    d = SockDiag(opener)
    assert d.dump() == {} and d.errors == 1 and made[0].closed == 1
    got = d.dump()
    assert sorted(got) == [socket.IPPROTO_TCP, socket.IPPROTO_UDP] and d.dumps == 1
    assert {s.proto for s in got.values()} == {"tcp", "udp"}
