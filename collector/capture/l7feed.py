"""Bytes of one connection into its L7 parser, and the parser's records out as "l7" events.

The L7 stage (l7stage.py) decides which connection a call belongs to; this module does
what follows for the bytes: one L7Conn per connection (UDP datagrams one by one, TLS
plaintext instead of the ciphertext once seen), the captured prefix and a gap for the
rest, the larger capture cap asked of the kernel once a protocol is detected, and the
records with what is known of the connection (pid, conn id, fd, role, peer, comm, unit).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from collector.capture.conns import Conn
from collector.capture.events import Event
from collector.l7 import L7Conn, Record, Redact
from collector.l7.detect import dns_message

CAP_TRIES = 3  # asks for the larger cap on one fd (the tracer may be busy attaching)


class Feeder:
    """Not thread-safe: the pipeline's worker owns it (through the stage)."""

    def __init__(self, redact: Redact, l7_cap: int, out: list[Event], counters: Counter[str],
                 fd_cap: Callable[[int, int, int], bool] | None,
                 detected: Callable[[Conn], None]) -> None:
        self._redact = redact
        self._clean: set[tuple[str, str]] = set()  # values redaction left unchanged (shared)
        self._l7_cap = l7_cap
        self._out = out
        self._counters = counters
        self._fd_cap = fd_cap
        self._detected = detected  # the stage shows a connection once a protocol is seen

    def feed(self, c: Conn, ev: Event, direction: str, data: bytes | None,
             missing: int) -> None:
        """One call's bytes: `data` as captured (or None, all of it missing)."""
        l7 = c.l7
        if l7 is None:
            l7 = c.l7 = L7Conn(self._redact, c.role, self._clean)
        elif l7.gave_up:
            return
        ts = ev["ts"]
        if c.dgram is None and data:
            c.dgram = dns_message(data, cut=missing > 0) is not None
        if c.dgram:
            recs = l7.datagram(direction, data, ts, len(data) + missing) if data else []
        else:
            recs = l7.feed(direction, data, ts) if data else []
            if missing:
                recs = recs + l7.gap(direction, missing, ts)
        if l7.proto is not None and c.cap_tries < CAP_TRIES:
            self._raise_cap(c, l7.proto)
        if recs:
            self.records(c, recs)

    def plaintext(self, c: Conn, ts: float) -> None:
        """TLS on this connection: from now on its L7 input is the plaintext (what the
        parser had of the handshake is closed)."""
        c.plaintext = c.tls = True
        self.close(c, ts)
        c.l7 = None
        c.dgram = False

    def close(self, c: Conn, ts: float) -> None:
        """The connection ended: unanswered requests come out partial, counters add up."""
        if c.l7 is None:
            return
        self.records(c, c.l7.close(ts))
        for key, n in c.l7.stats.items():
            self._counters[f"l7_{key}"] += n
        c.l7.stats.clear()

    def _raise_cap(self, c: Conn, proto: str) -> None:
        """A protocol was detected: ask the kernel for the larger cap on this fd."""
        if c.proto is None:
            c.proto = proto
            c.dirty = True
            if c.fd >= 0:
                self._detected(c)
        if self._fd_cap is None or not self._l7_cap or c.fd < 0:
            c.cap_tries = CAP_TRIES
            return
        if self._fd_cap(c.pid, c.fd, self._l7_cap):
            self._counters["fd_caps_raised"] += 1
            c.cap_tries = CAP_TRIES
        else:  # the tracer is busy (a session attaching): the next call asks again
            self._counters["fd_caps_failed"] += 1
            c.cap_tries += 1

    def records(self, c: Conn, recs: list[Record]) -> None:
        """The parsers' records as "l7" events, with what is known of the connection."""
        if not recs:
            return
        tail: Event = {"kind": "l7", "pid": c.pid, "target": c.cookie, "conn": c.id}
        if c.fd >= 0:
            tail["fd"] = c.fd
        if c.role is not None:
            tail["role"] = c.role
        if c.peer is not None:
            tail["peer"] = c.peer
        if c.tls:
            tail["tls"] = True
        if c.facts:
            tail.update(c.facts)
        out = self._out
        for r in recs:
            ev = r.to_json()
            ev.update(tail)
            out.append(ev)
        self._counters["l7_records"] += len(recs)
