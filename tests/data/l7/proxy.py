"""A recording TCP/UDP relay for the L7 golden captures: every chunk, both ways, timestamped."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Recording:
    """Chunks per connection, in arrival order: (direction, ts, bytes); "out" is client->server."""

    conns: list[list[tuple[str, float, bytes]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_conn(self) -> int:
        with self.lock:
            self.conns.append([])
            return len(self.conns) - 1

    def add(self, conn: int, direction: str, data: bytes) -> None:
        with self.lock:
            self.conns[conn].append((direction, time.time(), data))


def _pump(src: socket.socket, dst: socket.socket, rec: Recording, conn: int, d: str) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            rec.add(conn, d, data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class TcpRelay:
    """Listens on 127.0.0.1:<port>, relays to upstream, records both directions."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.rec = Recording()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = self.rec.new_conn()
            for a, b, d in ((client, server, "out"), (server, client, "in")):
                t = threading.Thread(target=_pump, args=(a, b, self.rec, conn, d), daemon=True)
                t.start()
                self._threads.append(t)

    def finish(self) -> list[list[tuple[str, float, bytes]]]:
        """Wait for every relayed connection to close, then return the recording."""
        deadline = time.time() + 10
        for t in list(self._threads):
            t.join(timeout=max(0.0, deadline - time.time()))
        self.sock.close()
        return self.rec.conns


class UdpRelay:
    """One client address <-> upstream, datagram by datagram."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.rec = Recording()
        self.rec.new_conn()
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(upstream)
        self.port: int = self.front.getsockname()[1]
        self.client: tuple[str, int] | None = None
        threading.Thread(target=self._up, daemon=True).start()
        threading.Thread(target=self._down, daemon=True).start()

    def _up(self) -> None:
        while True:
            try:
                data, self.client = self.front.recvfrom(65536)
            except OSError:
                return
            self.rec.add(0, "out", data)
            self.back.send(data)

    def _down(self) -> None:
        while True:
            try:
                data = self.back.recv(65536)
            except OSError:
                return
            self.rec.add(0, "in", data)
            if self.client is not None:
                self.front.sendto(data, self.client)

    def finish(self) -> list[list[tuple[str, float, bytes]]]:
        time.sleep(0.2)
        self.front.close()
        self.back.close()
        return self.rec.conns
