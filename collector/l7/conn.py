"""L7Conn: one connection, both directions: detect the protocol, frame, pair, emit records.

    conn = L7Conn(redactor.redact_text, role="client")
    records = conn.feed("out", captured_bytes, ts)   # bytes the syscall moved, as captured
    records += conn.gap("out", n_not_captured, ts)   # moved but not captured
    records += conn.close(ts)                         # unanswered requests become partial

Pure: no I/O, no threads. The request direction is "out" for a client and "in" for a
server; with role=None it is inferred from content (a request line vs a status line).
"""

from __future__ import annotations

from collections import Counter

from collector.l7.base import Parser
from collector.l7.detect import MORE, NEVER, NO, SNIFF_BYTES, dns_message, sniff
from collector.l7.dns import DnsParser
from collector.l7.http import HttpParser
from collector.l7.mysql import MysqlParser
from collector.l7.postgres import PgParser
from collector.l7.record import Emitter, Record, Redact
from collector.l7.redis import RedisParser

DETECT_BUDGET = 4096  # unrecognised bytes after which a connection is left alone
PARSERS: dict[str, type[Parser]] = {"http": HttpParser, "pgsql": PgParser,
                                    "mysql": MysqlParser, "redis": RedisParser,
                                    "dns": DnsParser}
_REQ_DIR = {"client": "out", "server": "in", None: None}
_OTHER = {"in": "out", "out": "in"}


class L7Conn:
    """One connection's L7 state. `proto` is the detected protocol or None."""

    def __init__(self, redact: Redact, role: str | None = None,
                 clean: set[tuple[str, str]] | None = None) -> None:
        if role not in _REQ_DIR:
            raise ValueError(f"role must be 'client', 'server' or None, not {role!r}")
        self.redact = redact
        self.role = role
        self.proto: str | None = None
        self.stats: Counter[str] = Counter()  # drops and losses, for the pipeline's metrics
        self._clean = clean if clean is not None else set()  # share one per Redactor
        self._req_dir = _REQ_DIR[role]
        self._parser: Parser | None = None
        self._held: list[tuple[str, bytes | int, float]] = []  # undetected: (dir, data|gap, ts)
        self._prefix = {"in": b"", "out": b""}
        self._seen = 0
        self.gave_up = False

    # -- input ---------------------------------------------------------------------------
    def feed(self, direction: str, data: bytes, ts: float) -> list[Record]:
        p = self._parser
        if p is not None:
            p.feed(p.req if direction == self._req_dir else p.resp, data, ts)
            return self._take(p)
        if self.gave_up or not data:
            return []
        return self._sniff(direction, data, ts)

    def gap(self, direction: str, n: int, ts: float) -> list[Record]:
        p = self._parser
        if p is not None:
            p.gap(p.req if direction == self._req_dir else p.resp, n, ts)
            return self._take(p)
        if not self.gave_up and n > 0:
            self._forget(direction)  # a prefix cut by a gap tells us nothing
            self._spend(n)
        return []

    def datagram(self, direction: str, data: bytes, ts: float,
                 moved: int | None = None) -> list[Record]:
        """One UDP datagram (DNS); `moved` > len(data) when the capture cap cut it."""
        p = self._parser
        if p is None:
            if self.gave_up:
                return []
            if dns_message(data) is None:
                self._spend(len(data))
                return []
            p = self._start("dns")
        if not isinstance(p, DnsParser):
            return []
        p.datagram(data, ts, moved is not None and moved > len(data))
        return self._take(p)

    def lost(self) -> list[Record]:
        """Bytes of this connection may have been lost, of unknown size (records shed or
        dropped under load): both directions wait for a message to plausibly start again.
        Datagrams stand alone, so a DNS conversation stays in sync."""
        p = self._parser
        if p is None:
            self._forget("in")
            self._forget("out")
            return []
        if isinstance(p, DnsParser) or p.dormant:
            return []
        for side in (p.req, p.resp):
            if not side.lost and not side.eat:
                self.stats["gaps_lost_sync"] += 1
                p.desync(side)
        return self._take(p)

    def close(self, ts: float) -> list[Record]:
        p = self._parser
        if p is None:
            return []
        p.close(ts)
        return self._take(p)

    # -- detection -----------------------------------------------------------------------
    def _sniff(self, direction: str, data: bytes, ts: float) -> list[Record]:
        pre = (self._prefix[direction] + data)[:SNIFF_BYTES]
        v = sniff(pre)
        if v == NEVER:
            self._give_up()
            return []
        if v in (MORE, NO):
            if v == MORE:
                self._prefix[direction] = pre
                self._held.append((direction, data, ts))
            else:
                self._forget(direction)
            self._spend(len(data))
            return []
        assert isinstance(v, tuple)
        proto, is_req = v
        if self._req_dir is None:
            self._req_dir = direction if is_req else _OTHER[direction]
        p = self._start(proto)
        held, self._held = self._held, []
        for d, item, t in [*held, (direction, data, ts)]:
            side = p.req if d == self._req_dir else p.resp
            if isinstance(item, int):
                p.gap(side, item, t)
            else:
                p.feed(side, item, t)
        return self._take(p)

    def _start(self, proto: str) -> Parser:
        self.proto = proto
        self.stats[f"detected_{proto}"] += 1
        p = self._parser = PARSERS[proto](Emitter(self.redact, proto, self._clean), self.stats)
        self._prefix = {"in": b"", "out": b""}
        return p

    def _forget(self, direction: str) -> None:
        self._prefix[direction] = b""
        self._held = [h for h in self._held if h[0] != direction]

    def _spend(self, n: int) -> None:
        self._seen += n
        if self._seen > DETECT_BUDGET:
            self._give_up()

    def _give_up(self) -> None:
        self.gave_up = True
        self.stats["detect_gave_up"] += 1
        self._held = []
        self._prefix = {"in": b"", "out": b""}

    @staticmethod
    def _take(p: Parser) -> list[Record]:
        out = p.out.out
        if not out:
            return []
        p.out.out = []
        return out
