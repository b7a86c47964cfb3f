"""MySQL/MariaDB: handshake, COM_QUERY, COM_STMT_PREPARE/EXECUTE; OK, ERR, result sets.

One record per COM_QUERY and per COM_STMT_EXECUTE (its query is the prepared text, mapped
by statement id from the COM_STMT_PREPARE response). `status`: "OK" for an OK packet,
"ROWS <n>" for a result set (EOF- or OK-terminated, text or binary rows), the error code
("1146") for an ERR packet. A PREPARE (or another command: PING, INIT_DB, ...) becomes a
record only when it fails. Multi-result responses (SERVER_MORE_RESULTS_EXISTS) stay one
record. The handshake is framed, never read (it carries the scrambled password); a client
that asks for TLS stops the parser.
"""

from __future__ import annotations

from collections import Counter

from collector.l7.base import Parser, Side
from collector.l7.record import Emitter, Pending, clip, printable
from collector.l7.sqlnorm import normalize

COM_QUIT, COM_INIT_DB, COM_QUERY, COM_CHANGE_USER = 0x01, 0x02, 0x03, 0x11
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE = (
    0x16, 0x17, 0x18, 0x19)
_NO_REPLY = frozenset({COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE})
_COMMANDS = frozenset({*range(0x00, 0x20)} - {0x05, 0x06, 0x0a, 0x0b, 0x0c, 0x0d, 0x0f, 0x10})
_CLIENT_SSL = 0x800
_MORE_RESULTS = 0x0008
_MAX_PACKET = 0xFFFFFF
_STMTS_MAX = 1024
# server states
_FIRST, _DEFS, _AFTER_COLS, _ROWS, _MAYBE_EOF = range(5)


def _lenenc(b: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(value, next position) of a length-encoded integer; (0, len) when cut."""
    if pos >= len(b):
        return 0, len(b)
    c = b[pos]
    if c < 0xFB:
        return c, pos + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(c, 0)
    if pos + 1 + width > len(b):
        return 0, len(b)
    return int.from_bytes(b[pos + 1:pos + 1 + width], "little"), pos + 1 + width


class _Req(Pending):
    __slots__ = ("cmd", "sql")

    def __init__(self, ts: float, cmd: int) -> None:
        super().__init__(ts=ts)
        self.cmd = cmd
        self.sql: str | None = None  # raw text of a PREPARE, mapped to the statement id


class MysqlParser(Parser):
    proto = "mysql"

    def __init__(self, out: Emitter, stats: Counter[str]) -> None:
        super().__init__(out, stats)
        self.phase = "unknown"  # "auth" while the handshake runs, then "cmd"
        self.stmts: dict[int, str] = {}
        self.state = _FIRST
        self.defs = 0  # column/param definitions left to skip
        self.after_defs = _AFTER_COLS
        self.sections: list[int] = []  # PREPARE response: definition blocks still to come
        self.rows = 0  # rows of the result set being framed

    def step(self, side: Side) -> bool:
        buf = side.buf
        if len(buf) < 4:
            return False
        length = buf[0] | buf[1] << 8 | buf[2] << 16
        seq = buf[3]
        n = 4 + length
        # a command is read whole; of other packets only the head matters (rows are skipped)
        need = n if side.req and seq == 0 and self.phase != "auth" else min(n, 28)
        if len(buf) < need and not self.cutting:
            return False
        if side.req:
            return self._client(side, seq, length, n)
        return self._server(side, seq, length, n)

    # -- client -------------------------------------------------------------------------
    def _client(self, side: Side, seq: int, length: int, n: int) -> bool:
        buf = side.buf
        if self.phase == "unknown":
            self.phase = "cmd" if seq == 0 else "auth"
        if self.phase == "auth" or seq != 0:
            if self.phase == "auth" and seq == 1 and length == 32 and len(buf) >= 8:
                caps = int.from_bytes(buf[4:8], "little")
                if caps & _CLIENT_SSL:  # SSL request: TLS follows
                    self.stats["tls"] += 1
                    self.dormant = True
                    return False
            side.consume(n)
            return True
        if length < 1:
            side.consume(n)
            return True
        if len(buf) < 5:
            return False
        cmd = buf[4]
        if cmd == COM_STMT_CLOSE and len(buf) >= 9:
            self.stmts.pop(int.from_bytes(buf[5:9], "little"), None)
        if cmd == COM_CHANGE_USER:
            self.phase = "auth"
        if cmd in _NO_REPLY or cmd == COM_CHANGE_USER:
            side.consume(n)
            return True
        r = _Req(side.ts_at(0), cmd)
        r.req_bytes = n
        end = min(n, len(buf))
        if cmd in (COM_QUERY, COM_STMT_PREPARE):
            text = clip(printable(buf[5:end]), cut=end < n)
            if cmd == COM_QUERY:
                r.text["query"] = normalize(text, "mysql")
            else:
                r.sql = text
        elif cmd == COM_STMT_EXECUTE and len(buf) >= 9:
            text2 = self.stmts.get(int.from_bytes(buf[5:9], "little"))
            if text2 is not None:
                r.text["query"] = normalize(text2, "mysql")
        elif cmd == COM_INIT_DB:
            r.text["query"] = "USE " + clip(printable(buf[5:end]), cut=end < n)
        self.pending.append(r)
        self.requests += 1
        side.consume(n)
        return True

    # -- server ---------------------------------------------------------------------------
    def _server(self, side: Side, seq: int, length: int, n: int) -> bool:
        buf = side.buf
        if len(buf) < 5 and length:
            return False
        first = buf[4] if length else -1
        if self.phase != "cmd":
            if seq == 0 and first == 10:  # greeting
                self.phase = "auth"
            elif first == 0x00 and self.phase == "auth":
                self.phase = "cmd"
            elif first == 0xFF and self.phase == "auth":  # e.g. access denied
                p = Pending(ts=side.ts_at(0), partial=True, orphan=True, error=True,
                            resp_bytes=n)
                p.status = str(int.from_bytes(buf[5:7], "little"))
                side.consume(n, lambda ts: self.out.emit(p, ts))
                return True
            elif self.phase == "unknown":
                self.phase = "cmd"
                return self._server(side, seq, length, n)
            side.consume(n)
            return True
        state = self.state
        if state == _MAYBE_EOF:  # an EOF ends a definition block unless CLIENT_DEPRECATE_EOF
            if first == 0xFE and length < 9:
                side.consume(n)
                return self._next_section()
            self._next_section()
            if self.sections or self.state == _DEFS:
                return True  # this packet is the next block's first definition
            state = _FIRST
        if state == _DEFS:
            side.consume(n)
            self.defs -= 1
            if not self.defs:
                self.state = self.after_defs
            return True
        if not self.pending and state == _FIRST:
            self.stats["unpaired_responses"] += 1
        r = self.head(side.ts_at(0))
        r.resp_bytes += n
        if state == _FIRST:
            return self._first(side, r, first, length, n)
        if state == _AFTER_COLS:
            if first == 0xFE and length == 5:  # EOF after the column definitions
                self.state = _ROWS
                side.consume(n)
                return True
            self.state = _ROWS
        if first == 0xFF:
            return self._err(side, r, n)
        if first == 0xFE and length < _MAX_PACKET:  # EOF or OK: the result set ends
            flags_at = 7 if length == 5 else _lenenc(buf, _lenenc(buf, 5)[1])[1]
            status = int.from_bytes(buf[flags_at:flags_at + 2], "little")
            return self._done(side, r, f"ROWS {self.rows}", n, status)
        self.rows += 1
        side.consume(n)
        return True

    def _first(self, side: Side, r: Pending, first: int, length: int, n: int) -> bool:
        buf = side.buf
        if first == 0xFF:
            return self._err(side, r, n)
        if first == 0x00 and isinstance(r, _Req) and r.cmd == COM_STMT_PREPARE \
                and len(buf) >= 12:
            stmt = int.from_bytes(buf[5:9], "little")
            cols = int.from_bytes(buf[9:11], "little")
            params = int.from_bytes(buf[11:13], "little")
            if r.sql is not None:
                if len(self.stmts) >= _STMTS_MAX:
                    self.stmts.clear()
                self.stmts[stmt] = r.sql
            self.pending.popleft()  # a successful PREPARE is not a record
            self.sections = [c for c in (params, cols) if c]
            side.consume(n)
            self._next_section()
            return True
        if first == 0x00 and length >= 7:
            pos = _lenenc(buf, _lenenc(buf, 5)[1])[1]
            status = int.from_bytes(buf[pos:pos + 2], "little")
            return self._done(side, r, "OK", n, status)
        if first == 0xFB:  # LOCAL INFILE: the client sends a file, then the server answers
            side.consume(n)
            return True
        cols, _ = _lenenc(buf, 4)
        if cols <= 0:
            self.stats["malformed"] += 1
            self.desync(side)
            return False
        self.defs, self.after_defs, self.state = cols, _AFTER_COLS, _DEFS
        self.rows = 0
        side.consume(n)
        return True

    def _next_section(self) -> bool:
        if self.sections:
            self.defs = self.sections.pop(0)
            self.after_defs, self.state = _MAYBE_EOF, _DEFS
        else:
            self.state = _FIRST
        return True

    def _err(self, side: Side, r: Pending, n: int) -> bool:
        r.status = str(int.from_bytes(side.buf[5:7], "little"))
        r.error = True
        self.state = _FIRST
        side.consume(n, self.finish)
        return True

    def _done(self, side: Side, r: Pending, status: str, n: int, flags: int) -> bool:
        self.state = _FIRST
        if not r.error:
            r.status = status
        if flags & _MORE_RESULTS:  # another result of the same command follows
            side.consume(n)
            return True
        if isinstance(r, _Req) and r.cmd not in (COM_QUERY, COM_STMT_EXECUTE, COM_INIT_DB) \
                and not r.error:
            self.pending.popleft()  # PING, STMT_RESET, ...: a record only when they fail
            side.consume(n)
            return True
        side.consume(n, self.finish)
        return True

    # -- loss ---------------------------------------------------------------------------------
    def lost(self, side: Side) -> None:
        if side.req:
            return
        self.state, self.sections = _FIRST, []
        self.drop_response()

    def sync(self, side: Side, data: bytes) -> int | None:
        if len(data) < 5:
            return None
        length = data[0] | data[1] << 8 | data[2] << 16
        if side.req:
            return 0 if data[3] == 0 and length >= 1 and data[4] in _COMMANDS else None
        return 0 if data[3] == 1 and ((data[4] in (0x00, 0xFF) and length >= 3)
                                      or (1 <= length <= 9 and 0 < data[4] < 0xFB)) else None
