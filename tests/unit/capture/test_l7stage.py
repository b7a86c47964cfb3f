"""The L7 stage on the events the pipeline builds: connections from connect/accept (or seeded,
or adopted) to close, one L7Conn each, TLS plaintext on its socket, conn and l7 records."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from collector.capture.l7stage import L7Stage, StageOptions
from collector.capture.sockets import SocketBook
from collector.proc.sockdiag import SockDiag
from redact import Redactor

PID, FD = 4242, 7
REQ = (b"GET /orders?id=7&token=s3cr3tt0ken0123 HTTP/1.1\r\nHost: shop\r\n"
       b"Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123456789\r\n\r\n")
RESP = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno"
R = Redactor.default()


class Diag:
    """sock_diag answers: inode -> pyroute2-style message, per protocol."""

    def __init__(self) -> None:
        self.msgs: dict[int, list[dict[str, Any]]] = {socket.IPPROTO_TCP: [],
                                                      socket.IPPROTO_UDP: []}
        self.calls = 0

    def add(self, proto: int, inode: int, src: tuple[str, int], dst: tuple[str, int],
            state: int, rq: int = 0, wq: int = 0) -> None:
        self.msgs[proto].append({"idiag_family": socket.AF_INET, "idiag_state": state,
                                 "idiag_src": src[0], "idiag_sport": src[1],
                                 "idiag_dst": dst[0], "idiag_dport": dst[1],
                                 "idiag_inode": inode, "idiag_rqueue": rq, "idiag_wqueue": wq})

    def get_sock_stats(self, family: int = 0, protocol: int = 0, **_kw: Any) -> list[Any]:
        self.calls += 1
        return self.msgs[protocol] if family == socket.AF_INET else []

    def close(self) -> None:
        pass


class World:
    def __init__(self, tmp: Path, **opts: Any) -> None:
        self.proc = tmp / "proc"
        self.diag = Diag()
        self.caps: list[tuple[int, int, int]] = []
        self.tls: list[tuple[int, int]] = []
        book = SocketBook(self.proc, diag=SockDiag(lambda: self.diag),
                          seed_diag=SockDiag(lambda: self.diag), lookup_s=0.0)
        self.stage = L7Stage(R.redact_text, StageOptions(l7_cap=1024, **opts), procfs=self.proc,
                             book=book, fd_cap=self.cap,
                             tls_candidate=lambda pid, cookie: self.tls.append((pid, cookie)))
        self.ts = 1000.0

    def cap(self, pid: int, fd: int, cap: int) -> bool:
        self.caps.append((pid, fd, cap))
        return True

    def socket_fd(self, fd: int, inode: int, pid: int = PID) -> None:
        d = self.proc / str(pid) / "fd"
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(f"socket:[{inode}]", d / str(fd))

    def ev(self, syscall: str, ret: int, data: bytes | None = None, missing: int = 0,
           dt: float = 0.001, pid: int = PID, **kw: Any) -> None:
        self.ts = round(self.ts + dt, 6)
        kind = "tls" if syscall.startswith("ssl_") else "syscall"
        e: dict[str, Any] = {"ts": self.ts, "kind": kind, "pid": pid, "tid": pid,
                             "target": 3, "syscall": syscall, "ret": ret, **kw}
        if syscall in ("read", "recvmsg", "recvfrom", "ssl_read"):
            e["direction"] = "in"
        elif syscall in ("write", "writev", "sendmsg", "sendto", "sendfile", "ssl_write"):
            e["direction"] = "out"
        if -4096 < ret < 0 and kind == "syscall":
            e["errno"] = {-111: "ECONNREFUSED", -104: "ECONNRESET", -11: "EAGAIN",
                          -115: "EINPROGRESS"}[ret]
        self.stage.observe(e, data, missing)

    def out(self) -> list[dict[str, Any]]:
        return self.stage.collect(self.ts)


def conn_states(recs: list[dict[str, Any]]) -> list[str]:
    return [r["state"] for r in recs if r["kind"] == "conn"]


def l7(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in recs if r["kind"] == "l7"]


def test_a_client_connection_from_connect_to_close(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.ev("connect", 0, fd=FD, family="AF_INET", peer="10.0.0.5:80")
    w.ev("write", len(REQ), REQ, fd=FD)
    w.ev("read", len(RESP), RESP, fd=FD, dt=0.3)
    w.ev("close", 0, fd=FD)
    recs = w.out()
    assert conn_states(recs) == ["open", "closed"]
    (req,) = l7(recs)
    assert (req["method"], req["status"], req["role"], req["peer"], req["fd"], req["pid"]) == (
        "GET", 503, "client", "10.0.0.5:80", FD, PID)
    assert req["path"] == "/orders?id=7&token=[REDACTED:secret]" and req["error"] is True
    assert req["latency_ms"] >= 300 and req["conn"] == recs[0]["conn"] == recs[-1]["conn"]
    closed = recs[-1]
    assert (closed["bytes_out"], closed["bytes_in"], closed["calls_out"], closed["calls_in"],
            closed["proto"], closed["role"]) == (len(REQ), len(RESP), 1, 1, "http", "client")
    assert closed["duration_ms"] == pytest.approx(302, abs=0.01)
    assert w.caps == [(PID, FD, 1024)]  # the larger cap, asked once the protocol was seen
    assert "s3cr3tt0ken0123" not in str(recs) and "abcdefghijklmnop" not in str(recs)


def test_a_request_split_across_writes_and_a_cut_one(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.ev("accept4", 9, fd=3, family="AF_INET", peer="127.0.0.1:40000")
    for part in (REQ[:10], REQ[10:50], REQ[50:]):
        w.ev("read", len(part), part, fd=9)
    w.ev("write", len(RESP), RESP, fd=9)
    # the next request's head was cut by the capture cap: what it holds still frames
    w.ev("read", 700, REQ[:40], missing=700 - 40, fd=9)
    w.ev("close", 0, fd=9)
    reqs = l7(w.out())
    assert [(r["role"], r["path"].split("?")[0], r.get("status"), r["partial"])
            for r in reqs] == [("server", "/orders", 503, False), ("server", "/orders", None,
                                                                   True)]


def test_connection_errors_are_counted_by_kind(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.ev("connect", -111, fd=5, family="AF_INET", peer="10.0.0.9:5432")
    w.ev("connect", -115, fd=6, family="AF_INET", peer="10.0.0.9:6379")  # non-blocking
    w.ev("read", -11, fd=6)  # EAGAIN is flow control, not an error
    w.ev("read", -104, fd=6)
    w.ev("close", 0, fd=6)
    recs = [r for r in w.out() if r["kind"] == "conn"]
    assert [(r["state"], r["peer"], r.get("errors")) for r in recs] == [
        ("failed", "10.0.0.9:5432", {"refused": 1}), ("open", "10.0.0.9:6379", None),
        ("closed", "10.0.0.9:6379", {"reset": 1})]


def test_tls_plaintext_feeds_the_connection_of_its_fd(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.ev("accept4", 9, fd=3, family="AF_INET", peer="127.0.0.1:40001")
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100)
    w.ev("read", len(hello), hello, fd=9)  # the handshake, before any SSL_read
    w.ev("read", 120, None, fd=9, ciphertext=True)  # inside SSL_read: no bytes
    w.ev("ssl_read", len(REQ), REQ, fd=9, conn="ssl:55aa")
    w.ev("ssl_write", len(RESP), RESP, fd=9, conn="ssl:55aa")
    w.ev("write", 90, None, fd=9, ciphertext=True)
    w.ev("ssl_read", len(REQ), REQ, conn="ssl:77bb")  # its socket not known: a conn of its own
    w.ev("close", 0, fd=9)
    recs = w.out()
    reqs = l7(recs)
    assert [(r["status"], r.get("fd"), r["tls"], r.get("role")) for r in reqs[:1]] == [
        (503, 9, True, "server")]
    assert reqs[0]["conn"] == recs[0]["conn"]
    closed = recs[-1]
    assert closed["tls"] is True and closed["proto"] == "http"
    # wire bytes: the handshake and the ciphertext, never the plaintext's
    assert (closed["bytes_in"], closed["bytes_out"]) == (len(hello) + 120, 90)
    assert w.stage._ssl  # the unknown-fd connection is followed on its own


def test_dns_over_a_connected_udp_socket(tmp_path: Path) -> None:
    w = World(tmp_path)
    q = bytes.fromhex("abcd01000001000000000000") + b"\x03web\x04test\x00\x00\x01\x00\x01"
    a = (bytes.fromhex("abcd81800001000100000000") + b"\x03web\x04test\x00\x00\x01\x00\x01"
         + bytes.fromhex("c00c000100010000003c00040a010203"))
    w.ev("connect", 0, fd=5, family="AF_INET", peer="127.0.0.1:53")
    w.ev("sendmsg", len(q), q, fd=5)
    w.ev("recvmsg", len(a), a, fd=5)
    w.ev("close", 0, fd=5)
    recs = w.out()
    (r,) = l7(recs)
    assert (r["proto"], r["qname"], r["qtype"], r["rcode"], r["answers"]) == (
        "dns", "web.test", "A", "NOERROR", ["10.1.2.3"])
    assert recs[-1]["transport"] == "udp"


def test_exit_closes_connections_and_unanswered_requests_are_partial(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.ev("connect", 0, fd=FD, family="AF_INET", peer="10.0.0.5:80")
    w.ev("write", len(REQ), REQ, fd=FD)
    w.stage.observe({"ts": w.ts + 1, "kind": "exit", "pid": PID, "tid": PID, "target": 3,
                     "code": 0}, None, 0)
    recs = w.out()
    assert conn_states(recs) == ["open", "closed"]
    (req,) = l7(recs)
    assert req["partial"] is True and "status" not in req


def test_an_unseen_socket_is_adopted_quietly_until_it_proves_a_connection(
        tmp_path: Path) -> None:
    w = World(tmp_path)
    w.socket_fd(11, 5551)  # a socket opened before we traced: no connect seen
    w.socket_fd(12, 5552)  # a netlink socket, say: never shown
    (w.proc / str(PID) / "fd" / "13").symlink_to("/var/log/app.log")
    w.ev("write", 5, b"hello", fd=13)  # a file: looked up once, never a connection
    w.ev("write", 6, b"\x10\x00\x00\x00\x00\x00", fd=12)
    w.ev("write", len(REQ), REQ, fd=11)
    w.ev("read", len(RESP), RESP, fd=11)
    w.ev("close", 0, fd=11)
    w.ev("close", 0, fd=12)
    recs = w.out()
    conns = [r for r in recs if r["kind"] == "conn"]
    assert [(r["fd"], r["state"], r.get("preexisting")) for r in conns] == [
        (11, "open", True), (11, "closed", True)]
    assert l7(recs)[0]["status"] == 503 and w.stage.counters["conns_adopted"] == 2


def test_meta_level_io_on_unknown_fds_costs_no_lookup(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.socket_fd(11, 5551)
    for _ in range(3):
        w.ev("write", 100, None, fd=11)  # meta: no bytes, nothing to parse
    assert w.out() == [] and w.stage.counters["conns_adopted"] == 0


def test_seeded_connections_are_preexisting_with_state_and_role(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.socket_fd(3, 100)  # listening on :8080
    w.socket_fd(4, 101)  # accepted from a client
    w.socket_fd(5, 102)  # our connection to a database
    w.socket_fd(6, 103)  # a UDP socket, not connected
    tcp, udp = socket.IPPROTO_TCP, socket.IPPROTO_UDP
    w.diag.add(tcp, 100, ("0.0.0.0", 8080), ("0.0.0.0", 0), 10)
    w.diag.add(tcp, 101, ("127.0.0.1", 8080), ("127.0.0.1", 50000), 1, rq=7)
    w.diag.add(tcp, 102, ("127.0.0.1", 41000), ("127.0.0.1", 5432), 8, wq=3)
    w.diag.add(udp, 103, ("127.0.0.1", 5353), ("0.0.0.0", 0), 7)
    assert w.stage.seed(3, [PID]) == 3
    w.ev("read", len(REQ), REQ, fd=4)  # the seeded server connection carries a request
    w.ev("write", len(RESP), RESP, fd=4)
    recs = w.out()
    opened = [r for r in recs if r["kind"] == "conn"]
    assert [(r["fd"], r.get("role"), r["local"], r.get("peer"), r["tcp_state"],
             r["rx_queue"], r["tx_queue"], r.get("transport")) for r in opened] == [
        (4, "server", "127.0.0.1:8080", "127.0.0.1:50000", "ESTABLISHED", 7, 0, None),
        (5, "client", "127.0.0.1:41000", "127.0.0.1:5432", "CLOSE_WAIT", 0, 3, None),
        (6, None, "127.0.0.1:5353", None, "UNCONN", 0, 0, "udp")]
    assert all(r["preexisting"] for r in opened)
    (req,) = l7(recs)
    assert req["conn"] == opened[0]["conn"] and req["role"] == "server"


def test_local_addresses_come_from_sock_diag_by_inode(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.socket_fd(FD, 777)
    w.diag.add(socket.IPPROTO_TCP, 777, ("127.0.0.1", 41234), ("10.0.0.5", 80), 1)
    w.ev("connect", 0, fd=FD, family="AF_INET", peer="10.0.0.5:80")
    w.out()  # the lookup runs on collect (rate-limited; 0 here)
    w.stage._last_sweep = 0.0
    w.out()
    w.ev("close", 0, fd=FD)
    assert [r.get("local") for r in w.out() if r["kind"] == "conn"] == ["127.0.0.1:41234"]


def test_a_process_loading_libssl_is_offered_to_the_tls_probes_once(tmp_path: Path) -> None:
    w = World(tmp_path)
    for _ in range(2):
        w.ev("openat", 3, path="/usr/lib/x86_64-linux-gnu/libssl.so.3", dirfd=-100)
    w.ev("openat", 4, path="/etc/hosts", dirfd=-100)
    assert w.tls == [(PID, 3)]


def test_a_connection_forked_into_a_child_is_one_connection(tmp_path: Path) -> None:
    """accept, fork, the parent closes its copy, the child serves it (PostgreSQL, sshd)."""
    w = World(tmp_path)
    child = PID + 1
    w.ev("accept", 9, fd=3, family="AF_INET", peer="127.0.0.1:40002")
    w.stage.observe({"ts": w.ts, "kind": "fork", "pid": PID, "tid": PID, "target": 3,
                     "child": child}, None, 0)
    w.ev("close", 0, fd=9)  # the parent's copy: the child still holds it, no record yet
    w.ev("read", len(REQ), REQ, fd=9, pid=child)
    w.ev("write", len(RESP), RESP, fd=9, pid=child)
    w.ev("close", 0, fd=9, pid=child)
    recs = w.out()
    conns = [(r["pid"], r["state"], r["role"], r["peer"]) for r in recs if r["kind"] == "conn"]
    assert conns == [(PID, "open", "server", "127.0.0.1:40002"),
                     (child, "closed", "server", "127.0.0.1:40002")]
    assert len({r["conn"] for r in recs}) == 1
    (req,) = l7(recs)
    assert (req["pid"], req["role"], req["status"]) == (child, "server", 503)


def test_a_body_sent_with_sendfile_keeps_the_parser_in_sync(tmp_path: Path) -> None:
    """nginx serving a file: the head by writev, the body by sendfile (never copied)."""
    w = World(tmp_path)
    w.ev("accept4", 9, fd=3, family="AF_INET", peer="127.0.0.1:40003")
    for i in range(3):
        req = f"GET /static/{i}.css HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
        w.ev("read", len(req), req, fd=9)
        w.ev("writev", len(head), head, fd=9)
        w.ev("sendfile", 5000, None, fd=9)
    w.ev("close", 0, fd=9)
    reqs = l7(w.out())
    assert [(r["path"], r["status"], r["resp_bytes"], r["partial"]) for r in reqs] == [
        (f"/static/{i}.css", 200, 5000 + len(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"),
         False) for i in range(3)]


def test_exec_ends_the_connections_it_closed(tmp_path: Path) -> None:
    """close-on-exec sockets go with the old image, without a close() call."""
    w = World(tmp_path)
    w.socket_fd(5, 501)  # still open after the exec
    w.ev("connect", 0, fd=5, family="AF_INET", peer="10.0.0.5:80")
    w.ev("connect", 0, fd=6, family="AF_INET", peer="10.0.0.6:80")  # CLOEXEC: gone
    w.ev("execve", 0, fd=-1)
    w.ev("write", 5, b"hello", fd=5)
    recs = [r for r in w.out() if r["kind"] == "conn"]
    assert [(r["fd"], r["state"]) for r in recs] == [(5, "open"), (6, "open"), (6, "closed")]


def test_a_loss_under_load_puts_every_parsed_connection_out_of_sync(tmp_path: Path) -> None:
    """The pipeline lost records (shed or dropped): the request in flight comes out partial
    at once, the rest of its reply is not taken for another, and the next request pairs."""
    w = World(tmp_path)
    w.ev("connect", 0, fd=FD, family="AF_INET", peer="10.0.0.5:80")
    w.ev("write", len(REQ), REQ, fd=FD)
    w.stage.lost()
    (cut,) = l7(w.out())
    assert cut["partial"] is True and "status" not in cut
    w.ev("read", 2, b"no", fd=FD)  # the lost reply's last bytes
    w.ev("write", len(REQ), REQ, fd=FD)
    w.ev("read", len(RESP), RESP, fd=FD)
    (req,) = l7(w.out())
    assert req["status"] == 503 and req["partial"] is False
    assert w.stage.counters["l7_losses"] == 1
