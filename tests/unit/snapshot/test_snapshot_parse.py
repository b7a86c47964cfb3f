"""Table tests for the pure procfs parsers behind snapshots (stat, limits, maps, fdinfo,
namespaces, socket tables)."""

from __future__ import annotations

import os

import pytest

from collector.snapshot.net import _ip_port, parse_inet, parse_netlink, parse_unix
from collector.snapshot.parse import (
    Mapping,
    kb,
    ns_inode,
    open_mode,
    parse_fdinfo,
    parse_io,
    parse_limits,
    parse_maps,
    parse_smaps_rollup,
    parse_stat,
    parse_status,
    split_nul,
)
from tests.unit.snapshot.fakeproc import PROC

# fields 4.. after the state: ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
# utime stime cutime cstime priority nice num_threads itrealvalue starttime ... processor (39)
TAIL = "100 0 0 0 0 0 0 0 0 0 7 3 0 0 20 0 4 0 999 " + "0 " * 16 + "2"


@pytest.mark.parametrize(("line", "comm", "state", "ppid"), [
    (f"42 (nginx) S {TAIL}", "nginx", "S", 100),
    (f"42 (a b) R {TAIL}", "a b", "R", 100),
    # comm is set by the process: parentheses and a fake state in it must not shift fields
    (f"42 (x) Z 1 (y) D {TAIL}", "x) Z 1 (y", "D", 100),
    (f"42 () S {TAIL}", "", "S", 100),
])
def test_stat_fields_come_after_the_last_paren(line: str, comm: str, state: str,
                                              ppid: int) -> None:
    st = parse_stat(line)
    assert (st.pid, st.comm, st.state, st.ppid) == (42, comm, state, ppid)
    assert (st.utime, st.stime, st.num_threads, st.starttime, st.processor) == (7, 3, 4, 999, 2)


@pytest.mark.parametrize("line", ["", "42 nginx S 1", "42 (x) S 1 2 3", "x (y) S " + TAIL])
def test_malformed_stat_is_a_value_error(line: str) -> None:
    with pytest.raises(ValueError):
        parse_stat(line)


def test_stat_without_processor_field() -> None:
    assert parse_stat("1 (a) S " + " ".join(["0"] * 25)).processor is None


def test_status_and_kb() -> None:
    s = parse_status("Name:\tx\nVmRSS:\t   12 kB\nUid:\t1\t2\t3\t4\nbroken line\n")
    assert s == {"Name": "x", "VmRSS": "12 kB", "Uid": "1\t2\t3\t4"}
    assert (kb(s["VmRSS"]), kb(None), kb("7")) == (12288, None, 7)


def test_limits_by_fixed_columns() -> None:
    lim = parse_limits((PROC / "5150" / "limits").read_text())
    assert lim["max_open_files"] == {"soft": 1024, "hard": 524288, "units": "files"}
    assert lim["max_cpu_time"] == {"soft": None, "hard": None, "units": "seconds"}
    assert lim["max_stack_size"] == {"soft": 8388608, "hard": None, "units": "bytes"}
    assert lim["max_nice_priority"] == {"soft": 0, "hard": 0, "units": None}
    assert len(lim) == 16


def test_smaps_rollup_and_io() -> None:
    r = parse_smaps_rollup("0-1 ---p 00000000 00:00 0 [rollup]\nRss:  4 kB\nPss: 2 kB\nX: y\n")
    assert r == {"rss": 4096, "pss": 2048}
    assert parse_io("rchar: 5\nwchar: 6\nbad\nx: -1\n") == {"rchar": 5, "wchar": 6}


@pytest.mark.parametrize(("line", "want"), [
    ("7f00-7f10 r-xp 00000000 08:01 12 /usr/lib/libc.so.6",
     Mapping(0x7f00, 0x7f10, "r-xp", "/usr/lib/libc.so.6")),
    ("1000-2000 rw-p 00000000 00:00 0 ", Mapping(0x1000, 0x2000, "rw-p", "")),
    ("1000-2000 rw-p 00000000 00:00 0", Mapping(0x1000, 0x2000, "rw-p", "")),
    ("1000-3000 r--p 00000000 08:01 9 /srv/my data/a b.db (deleted)",
     Mapping(0x1000, 0x3000, "r--p", "/srv/my data/a b.db (deleted)")),
    ("1000-2000 rw-p 00000000 00:00 0 [heap]", Mapping(0x1000, 0x2000, "rw-p", "[heap]")),
])
def test_maps_lines(line: str, want: Mapping) -> None:
    assert parse_maps(line + "\n") == [want]


@pytest.mark.parametrize(("flags", "mode", "names"), [
    (0o100000, "r", []),                      # O_LARGEFILE alone is not shown
    (0o1, "w", []),
    (0o2004002, "rw", ["O_NONBLOCK", "O_CLOEXEC"]),
    (0o102001, "w", ["O_APPEND"]),
    (os.O_SYNC | os.O_WRONLY, "w", ["O_SYNC"]),   # O_SYNC contains the O_DSYNC bit
    (os.O_DSYNC, "r", ["O_DSYNC"]),
    (os.O_TMPFILE | os.O_RDWR, "rw", ["O_TMPFILE"]),  # O_TMPFILE contains O_DIRECTORY
    (os.O_DIRECTORY, "r", ["O_DIRECTORY"]),
    (os.O_PATH | os.O_CLOEXEC, "r", ["O_PATH", "O_CLOEXEC"]),
])
def test_open_flags(flags: int, mode: str, names: list[str]) -> None:
    assert open_mode(flags) == (mode, names)


def test_fdinfo() -> None:
    text = "pos:\t12345\nflags:\t0102001\nmnt_id:\t27\nino:\t777\ntfd: 4 events: 19\npos:\tx\n"
    assert parse_fdinfo(text) == {"pos": 12345, "flags": 0o102001, "mnt_id": 27, "ino": 777}


@pytest.mark.parametrize(("link", "want"), [
    ("net:[4026531833]", 4026531833), ("pid_for_children:[4]", 4), ("net:[]", None),
    ("net:4026531833", None), ("", None),
])
def test_ns_inode(link: str, want: int | None) -> None:
    assert ns_inode(link) == want


@pytest.mark.parametrize(("data", "want"), [
    (b"", []), (b"a\0", [b"a"]), (b"a\0b", [b"a", b"b"]), (b"a\0\0b\0", [b"a", b"", b"b"]),
])
def test_split_nul(data: bytes, want: list[bytes]) -> None:
    assert split_nul(data) == want


@pytest.mark.parametrize(("text", "want"), [
    ("0100007F:1F90", ("127.0.0.1", 8080)),
    ("0500000A:D431", ("10.0.0.5", 54321)),
    ("00000000:0000", ("0.0.0.0", 0)),
    ("00000000000000000000000001000000:01BB", ("::1", 443)),
    ("0000000000000000FFFF00000500000A:0050", ("::ffff:10.0.0.5", 80)),
    ("B80D0120000000000000000001000000:0016", ("2001:db8::1", 22)),
])
def test_inet_addresses_in_host_byte_order(text: str, want: tuple[str, int]) -> None:
    assert _ip_port(text) == want


def test_inet_table_rows_by_inode() -> None:
    text = (PROC / "5150" / "net" / "tcp").read_text()
    got = parse_inet(text, "AF_INET", "SOCK_STREAM", {7001, 7002, 5})
    assert set(got) == {7001, 7002}  # inode 123 is another process's socket
    listen, conn = got[7001], got[7002]
    assert (listen.laddr, listen.raddr, listen.state, listen.rx_queue) == (
        ("127.0.0.1", 8080), None, "LISTEN", 3)
    assert (conn.raddr, conn.state, conn.tx_queue) == (("10.0.0.5", 54321), "ESTABLISHED", 16)
    udp = parse_inet((PROC / "5150" / "net" / "udp").read_text(), "AF_INET", "SOCK_DGRAM",
                     {7004})
    assert udp[7004].state == "NONE" and udp[7004].raddr is None


def test_unix_table() -> None:
    header = "Num       RefCount Protocol Flags    Type St Inode Path\n"
    rows = ("0: 00000002 00000000 00010000 0001 01 11 /run/a b.sock\n"
            "0: 00000003 00000000 00000000 0002 03 12 @abstract\n"
            "0: 00000003 00000000 00000000 0005 01 13\n"
            # the tail of a path holding a newline: looks like a row but does not parse
            "zz ZZ 0 nothex 0001 01 14 /x\n")
    got = parse_unix(header + rows, {11, 12, 13, 14})
    assert got[11].state == "LISTEN" and got[11].laddr == "/run/a b.sock"
    assert (got[12].type, got[12].state, got[12].laddr) == ("SOCK_DGRAM", "CONNECTED",
                                                           "@abstract")
    assert (got[13].type, got[13].laddr) == ("SOCK_SEQPACKET", None)
    assert 14 not in got


def test_netlink_table() -> None:
    text = ("sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode\n"
            "0000000031704c65 4   0          00000000 0        0        0     2        0  1514\n")
    assert parse_netlink(text, {1514})[1514].laddr == "protocol 4"
    assert parse_netlink(text, {1}) == {}
