"""A tiny authoritative DNS responder (UDP and TCP) for the L7 golden captures."""

from __future__ import annotations

import socket
import struct
import threading

ZONE = {  # (name, qtype) -> rdata list
    ("example.test", 1): [bytes([10, 1, 2, 3]), bytes([10, 1, 2, 4])],
    ("example.test", 28): [socket.inet_pton(socket.AF_INET6, "fd00::1")],
}
KNOWN = {"example.test"}


def _qname(msg: bytes, pos: int) -> tuple[str, int]:
    labels = []
    while msg[pos]:
        n = msg[pos]
        labels.append(msg[pos + 1:pos + 1 + n].decode())
        pos += 1 + n
    return ".".join(labels), pos + 1


def answer(query: bytes) -> bytes:
    qid, _flags, _qd = struct.unpack_from(">HHH", query)
    name, end = _qname(query, 12)
    qtype, _qclass = struct.unpack_from(">HH", query, end)
    question = query[12:end + 4]
    rdatas = ZONE.get((name.lower(), qtype), [])
    rcode = 0 if name.lower() in KNOWN else 3
    flags = 0x8400 | 0x0100 | rcode  # QR, AA, RD echoed, rcode
    out = struct.pack(">HHHHHH", qid, flags, 1, len(rdatas), 0, 0) + question
    for rd in rdatas:
        out += struct.pack(">HHHIH", 0xC00C, qtype, 1, 300, len(rd)) + rd
    return out


class DnsServer:
    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port: int = self.udp.getsockname()[1]
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(4)
        threading.Thread(target=self._udp, daemon=True).start()
        threading.Thread(target=self._tcp, daemon=True).start()

    def _udp(self) -> None:
        while True:
            try:
                data, addr = self.udp.recvfrom(4096)
            except OSError:
                return
            self.udp.sendto(answer(data), addr)

    def _tcp(self) -> None:
        while True:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                return
            with c:
                buf = b""
                while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                if len(buf) >= 2:
                    a = answer(buf[2:])
                    c.sendall(struct.pack(">H", len(a)) + a)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()
