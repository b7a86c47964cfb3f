"""DNS over UDP (one message per datagram) and TCP (2-byte length prefix), paired by id.

`qname`, `qtype` (name, or TYPE<n>), `rcode` (name, or RCODE<n>), `answers` (A/AAAA
addresses, CNAME/NS/PTR names, MX "pref host", TXT text, other types as TYPE<n>; at
most ANSWERS_MAX). A message cut by the capture cap gives what its captured part holds
and the record is partial. Queries never answered are flushed partial at close (and
the oldest when more than PENDING_MAX are in flight).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter, OrderedDict

from collector.l7.base import Parser, Side
from collector.l7.detect import dns_message
from collector.l7.record import Emitter, Pending, printable

ANSWERS_MAX = 16
PENDING_MAX = 256
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
          47: "NSEC", 48: "DNSKEY", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF",
          252: "AXFR", 255: "ANY", 257: "CAA"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}
_HDR = struct.Struct(">HHHHHH")
_RR = struct.Struct(">HHIH")


class _Cut(Exception):
    """The message ends before the field being read (capture cap, or malformed)."""


def _name(msg: bytes, pos: int) -> tuple[str, int]:
    """(dotted name, position after it), following compression pointers (bounded)."""
    labels: list[str] = []
    end = -1
    for _ in range(128):
        if pos >= len(msg):
            raise _Cut
        n = msg[pos]
        if n == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise _Cut
            if end < 0:
                end = pos + 2
            pos = (n & 0x3F) << 8 | msg[pos + 1]
            continue
        if n > 63 or pos + 1 + n > len(msg):
            raise _Cut
        labels.append(printable(msg[pos + 1:pos + 1 + n]))
        pos += 1 + n
    raise _Cut


def _rdata(msg: bytes, rtype: int, pos: int, size: int) -> str:
    rd = msg[pos:pos + size]
    if rtype == 1 and size == 4:
        return str(ipaddress.IPv4Address(rd))
    if rtype == 28 and size == 16:
        return str(ipaddress.IPv6Address(rd))
    if rtype in (2, 5, 12, 39):
        return _name(msg, pos)[0]
    if rtype == 15 and size >= 3:
        return f"{struct.unpack_from('>H', msg, pos)[0]} {_name(msg, pos + 2)[0]}"
    if rtype == 16:
        parts, i = [], 0
        while i < len(rd):
            parts.append(printable(rd[i + 1:i + 1 + rd[i]]))
            i += 1 + rd[i]
        return " ".join(parts)
    return QTYPES.get(rtype, f"TYPE{rtype}")


class DnsParser(Parser):
    proto = "dns"

    def __init__(self, out: Emitter, stats: Counter[str]) -> None:
        super().__init__(out, stats)
        self.queries: OrderedDict[int, Pending] = OrderedDict()

    def datagram(self, data: bytes, ts: float, truncated: bool) -> None:
        self._message(data, ts, ts, len(data), truncated)

    def step(self, side: Side) -> bool:
        buf = side.buf
        if len(buf) < 2:
            return False
        n = 2 + (buf[0] << 8 | buf[1])
        if len(buf) < n and not self.cutting:
            return False
        end = min(n, len(buf))
        self._message(bytes(buf[2:end]), side.ts_at(0), side.ts_at(end - 1), n - 2, end < n)
        side.consume(n)
        return True

    def _message(self, msg: bytes, ts: float, end_ts: float, size: int, cut: bool) -> None:
        if len(msg) < 12:
            self.stats["malformed"] += 1
            return
        qid, flags, qd, an, _ns, _ar = _HDR.unpack_from(msg)
        query = not flags & 0x8000
        qname = qtype = None
        answers: list[str] = []
        partial = cut
        try:
            pos = 12
            if qd:
                qname, pos = _name(msg, pos)
                if pos + 4 > len(msg):
                    raise _Cut
                (t,) = struct.unpack_from(">H", msg, pos)
                qtype = QTYPES.get(t, f"TYPE{t}")
                pos += 4
            if not query:
                for _ in range(min(an, ANSWERS_MAX)):
                    _, pos = _name(msg, pos)
                    if pos + 10 > len(msg):
                        raise _Cut
                    rtype, _cls, _ttl, rdlen = _RR.unpack_from(msg, pos)
                    pos += 10
                    if pos + rdlen > len(msg):
                        raise _Cut
                    answers.append(_rdata(msg, rtype, pos, rdlen))
                    pos += rdlen
        except (_Cut, struct.error, IndexError, ValueError):
            partial = True
        if query:
            p = Pending(ts=ts, req_bytes=size, partial=partial)
            if qname is not None:
                p.text["qname"] = qname
            if qtype is not None:
                p.text["qtype"] = qtype
            if qid in self.queries:  # a retransmission: the first one is answered once
                self.stats["dns_retransmit"] += 1
                p = self.queries.pop(qid)
            self.queries[qid] = p
            self.requests += 1
            if len(self.queries) > PENDING_MAX:
                _, old = self.queries.popitem(last=False)
                old.partial = True
                self.stats["unanswered"] += 1
                self.out.emit(old, None)
            return
        got = self.queries.pop(qid) if qid in self.queries else None
        if got is None:
            self.stats["unpaired_responses"] += 1
            got = Pending(ts=ts, partial=True, orphan=True)
            if qname is not None:
                got.text["qname"] = qname
            if qtype is not None:
                got.text["qtype"] = qtype
        p = got
        rcode = flags & 0xF
        p.text["rcode"] = RCODES.get(rcode, f"RCODE{rcode}")
        p.error = rcode != 0
        p.resp_bytes = size
        p.partial = p.partial or partial
        p.answers = answers
        self.out.emit(p, end_ts)

    def sync(self, side: Side, data: bytes) -> int | None:
        if len(data) < 2:
            return None
        n = data[0] << 8 | data[1]
        return 0 if dns_message(data[2:2 + n]) is not None else None

    def lost(self, side: Side) -> None:
        """Pairing is by id, so a loss on one side leaves the other's records intact."""

    def close(self, ts: float) -> None:
        super().close(ts)
        for p in self.queries.values():
            p.partial = True
            self.stats["unanswered"] += 1
            self.out.emit(p, None)
        self.queries.clear()
