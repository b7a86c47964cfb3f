"""PostgreSQL v3: startup/SSLRequest, simple query (Q), extended (Parse/Bind/Execute/Sync).

One record per simple query (status: the last CommandComplete tag, or the SQLSTATE of
an ErrorResponse) and one per Execute (its tag or SQLSTATE). A Parse/Bind that fails
before any Execute becomes a record with the Parse's query and the error. Named and
unnamed statements and portals are tracked, so an Execute of a statement prepared
earlier on the connection carries its query. Queries are normalized (literals out).
An SSLRequest answered 'S' means TLS follows: parsing stops (the plaintext, if any, comes
from the TLS probes). Authentication messages are framed and never read.
"""

from __future__ import annotations

import re
import struct
from collections import Counter, deque
from functools import partial

from collector.l7.base import Parser, Side
from collector.l7.record import Emitter, Pending, clip, printable
from collector.l7.sqlnorm import normalize

_SSL, _GSS, _CANCEL, _V3 = 80877103, 80877104, 80877102, 196608
_CLIENT_TYPES = frozenset(b"QPBDESCHFXdcfp")
_SERVER_TYPES = frozenset(b"123CDEIKNRSTZnstAGHWcdv")
_CLIENT_READ = frozenset(b"QPBEC")
_SERVER_READ = frozenset(b"CE")
_READY = re.compile(rb"Z\x00\x00\x00\x05[IET]")
_MSG_MAX = 1 << 30
_STATEMENTS_MAX = 1024
_INT = struct.Struct(">I")


class _Unit:
    """What one ReadyForQuery answers: a simple query, or the extended messages to a Sync."""

    __slots__ = ("error", "parse", "recs", "simple", "synced")

    def __init__(self, simple: bool) -> None:
        self.simple = simple
        self.recs: deque[Pending] = deque()  # records awaiting their CommandComplete/Error
        self.parse: str | None = None  # the last Parse's query (for a Parse that fails)
        self.synced = simple
        self.error = False


def _cstr(body: bytes | bytearray, pos: int = 0) -> tuple[bytes, int, bool]:
    """(string, position after its NUL, complete) for a NUL-terminated string at pos."""
    end = body.find(b"\x00", pos)
    if end < 0:
        return bytes(body[pos:]), len(body), False
    return bytes(body[pos:end]), end + 1, True


def _query(raw: bytes, complete: bool) -> str:
    return normalize(clip(printable(raw), cut=not complete), "pgsql")


class PgParser(Parser):
    proto = "pgsql"

    def __init__(self, out: Emitter, stats: Counter[str]) -> None:
        super().__init__(out, stats)
        self.startup = True  # untyped messages (startup, SSLRequest) may come from the client
        self.ssl_wait = False  # the server answers an SSLRequest with one untyped byte
        self.units: deque[_Unit] = deque()
        self.building: _Unit | None = None  # extended messages since the last Sync
        self.statements: dict[bytes, str] = {}  # statement name -> raw query text
        self.portals: dict[bytes, bytes] = {}  # portal -> statement name
        self.acc = 0  # request bytes not yet attributed to a record
        self.mark: float | None = None  # ts of the first request byte not yet attributed

    def step(self, side: Side) -> bool:
        buf = side.buf
        if not side.req and self.ssl_wait:
            answer = buf[0]
            side.consume(1)
            self.ssl_wait = False
            if answer == ord("S"):  # TLS from here on: nothing more to read in clear
                self.stats["tls"] += 1
                self.dormant = True
                return False
            return True
        if side.req and self.startup and buf[0] == 0:
            return self._untyped(side)
        if len(buf) < 5:
            return False
        t = buf[0]
        (length,) = _INT.unpack_from(buf, 1)
        if length < 4 or length > _MSG_MAX \
                or t not in (_CLIENT_TYPES if side.req else _SERVER_TYPES):
            self.stats["malformed"] += 1
            self.desync(side)
            return False
        n = 1 + length
        # wait for the messages we read (a gap or a huge size frames them cut); skip the rest
        need = n if t in (_CLIENT_READ if side.req else _SERVER_READ) else 5
        if len(buf) < need and not self.cutting:
            return False
        if side.req:
            self.startup = False
            return self._client(side, t, n)
        return self._server(side, t, n)

    def _untyped(self, side: Side) -> bool:
        buf = side.buf
        if len(buf) < 8:
            return False
        length, code = struct.unpack_from(">II", buf)
        if length == 8 and code in (_SSL, _GSS):
            self.ssl_wait = True
        elif code == _V3 and 8 < length < 10000:
            self.startup = False
        elif not (length == 16 and code == _CANCEL):
            self.stats["malformed"] += 1
            self.desync(side)
            return False
        side.consume(length)
        return True

    # -- client -> server ------------------------------------------------------------------
    def _client(self, side: Side, t: int, n: int) -> bool:
        buf = side.buf
        if self.mark is None:
            self.mark = side.ts_at(0)
        self.acc += n
        body = buf[5:n]
        if t == ord("Q"):
            raw, _, done = _cstr(body)
            unit = _Unit(simple=True)
            p = Pending(ts=self.mark, req_bytes=self.acc, partial=not done)
            p.text["query"] = _query(raw, done)
            unit.recs.append(p)
            self.units.append(unit)
            self.requests += 1
            self.acc, self.mark = 0, None
        elif t in b"PBESH":
            ext = self.building
            if ext is None:
                ext = self.building = _Unit(simple=False)
                self.units.append(ext)
                self.requests += 1
            if t == ord("P"):
                name, pos, _ = _cstr(body)
                raw, _, done = _cstr(body, pos)
                text = printable(raw) if done else clip(printable(raw), cut=True)
                if len(self.statements) >= _STATEMENTS_MAX and name not in self.statements:
                    self.statements.clear()  # a leak guard: statements are re-prepared
                self.statements[name] = text
                ext.parse = text
            elif t == ord("B"):
                portal, pos, _ = _cstr(body)
                stmt, _, _ = _cstr(body, pos)
                self.portals[portal] = stmt
            elif t == ord("E"):
                portal, _, _ = _cstr(body)
                p = Pending(ts=self.mark, req_bytes=self.acc)
                prepared = self.statements.get(self.portals.get(portal, b"\x00"))
                if prepared is not None:
                    p.text["query"] = normalize(prepared, "pgsql")
                ext.recs.append(p)
                self.acc, self.mark = 0, None
            elif t == ord("S"):
                ext.synced = True
                if ext.recs:
                    ext.recs[-1].req_bytes += self.acc
                self.building = None
                self.acc, self.mark = 0, None
        elif t == ord("C") and body[:1] == b"S":  # Close statement
            name, _, _ = _cstr(body, 1)
            self.statements.pop(name, None)
        side.consume(n)
        return True

    # -- server -> client ------------------------------------------------------------------
    def _server(self, side: Side, t: int, n: int) -> bool:
        buf = side.buf
        unit = self.units[0] if self.units else None
        rec = unit.recs[0] if unit is not None and unit.recs else None
        if rec is not None:
            rec.resp_bytes += n
        if t == ord("Z"):
            side.consume(n, self._ready if unit is not None and unit.synced else None)
            return True
        if t in b"CEIs" and unit is not None:
            if t == ord("C"):
                tag, _, _ = _cstr(buf, 5)
                status: str = printable(tag[:64])
            elif t == ord("E"):
                status = self._sqlstate(bytes(buf[5:min(n, len(buf))]))
            else:
                status = "EMPTY" if t == ord("I") else "SUSPENDED"
            if rec is None and t == ord("E") and not unit.error:
                rec = Pending(ts=side.ts_at(0), resp_bytes=n)  # Parse/Bind failed
                if unit.parse is not None:
                    rec.text["query"] = normalize(unit.parse, "pgsql")
                unit.recs.appendleft(rec)
            if rec is not None:
                rec.status = status
                rec.error = rec.error or t == ord("E")
                if not unit.simple:
                    unit.recs.popleft()
                    side.consume(n, partial(self.out.emit, rec))
                    unit.error = unit.error or t == ord("E")
                    return True
        elif t == ord("E") and unit is None:  # e.g. authentication failed
            p = Pending(ts=side.ts_at(0), partial=True, orphan=True, error=True, resp_bytes=n)
            p.status = self._sqlstate(bytes(buf[5:min(n, len(buf))]))
            side.consume(n, lambda ts: self.out.emit(p, ts))
            return True
        side.consume(n)
        return True

    @staticmethod
    def _sqlstate(fields: bytes) -> str:
        for f in fields.split(b"\x00"):
            if f[:1] == b"C":
                return printable(f[1:6])
        return "ERROR"

    def _ready(self, ts: float) -> None:
        unit = self.units.popleft()
        if unit.simple:
            for rec in unit.recs:
                self.out.emit(rec, ts)
        elif unit.recs:  # executes after an error are skipped by the server
            self.stats["skipped_after_error"] += len(unit.recs)

    # -- loss, close ------------------------------------------------------------------------
    def lost(self, side: Side) -> None:
        if side.req:
            buf = side.buf
            if buf[:1] == b"Q" and len(buf) > 5:
                raw, _, done = _cstr(buf, 5)
                unit = _Unit(simple=True)
                p = Pending(ts=side.ts_at(0), partial=True, req_bytes=len(buf))
                p.text["query"] = _query(raw, done)
                unit.recs.append(p)
                self.units.append(unit)
                self.requests += 1
            if self.building is not None:  # its Sync may be lost: do not wait for it
                self.building.synced = True
                self.building = None
            self.acc, self.mark = 0, None
            return
        if self.units:
            self._flush(self.units.popleft())

    def _flush(self, unit: _Unit) -> None:
        for rec in unit.recs:
            rec.partial = True
            self.out.emit(rec, None)

    def sync(self, side: Side, data: bytes) -> int | None:
        if len(data) >= 5:
            (length,) = _INT.unpack_from(data, 1)
            if 4 <= length < _MSG_MAX and data[0] in (_CLIENT_TYPES if side.req
                                                       else _SERVER_TYPES):
                return 0
        if not side.req:
            m = _READY.search(data)
            if m is not None:
                return m.end() if m.end() < len(data) else None
        return None

    def close(self, ts: float) -> None:
        while self.units:
            unit = self.units.popleft()
            self.stats["unanswered"] += len(unit.recs)
            self._flush(unit)
