"""Redis: RESP2/RESP3 command arrays and inline commands, replies framed to their end.

Commands pair with replies in order (pipelining). The record's `command` is the command
with its arguments (each cut at ARG_MAX, a cut argument loses its last token), redacted
with the "redis" rules (AUTH, HELLO ... AUTH, CONFIG SET requirepass, ...). `status` is the
simple-string reply ("OK", "PONG", "QUEUED"), the error code ("ERR", "WRONGTYPE") or the
reply type ("bulk", "nil", "integer", "array", "map", "set", ...).
"""

from __future__ import annotations

import re
from collections import Counter

from collector.l7.base import Parser, Side
from collector.l7.record import Emitter, Pending, clip, printable

ARG_MAX = 128
ARGS_MAX = 32  # arguments kept in `command` (the rest counted, not shown)
_TYPES = {ord("$"): "bulk", ord("*"): "array", ord(":"): "integer", ord("_"): "nil",
          ord(","): "double", ord("#"): "boolean", ord("("): "bignum", ord("="): "verbatim",
          ord("%"): "map", ord("~"): "set", ord("|"): "attribute", ord(">"): "push",
          ord("+"): "simple", ord("-"): "error", ord("!"): "error"}
_BULKY = frozenset(b"$=!")
_AGGREGATE = frozenset(b"*~%>|")
_REQ_SYNC = re.compile(rb"(?:(?<=\n)|\A)\*\d{1,7}\r\n\$")
_LINE_MAX = 4096


class RedisParser(Parser):
    proto = "redis"

    def __init__(self, out: Emitter, stats: Counter[str]) -> None:
        super().__init__(out, stats)
        self.args: list[str] | None = None  # command being framed
        self.left = 0
        self.cmd: Pending | None = None
        self.stack: list[int] = []  # reply being framed: elements left per nesting level
        self.cur: Pending | None = None
        self.push = False  # the reply being framed is a RESP3 push (not an answer)
        self.attr = False  # ... is an attribute map that precedes the actual reply

    def step(self, side: Side) -> bool:
        return self._command(side) if side.req else self._reply(side)

    # -- commands ------------------------------------------------------------------------
    def _command(self, side: Side) -> bool:
        buf = side.buf
        eol = buf.find(b"\r\n", 0, _LINE_MAX)
        if self.args is None:
            if buf[:1] != b"*":
                return self._inline(side)
            if eol < 0:
                return self._short(side)
            try:
                count = int(buf[1:eol])
            except ValueError:
                return self._malformed(side)
            p = Pending(ts=side.ts_at(0), req_bytes=eol + 2)
            side.consume(eol + 2)
            if count <= 0:
                return True
            self.args, self.left, self.cmd = [], count, p
            self.pending.append(p)
            self.requests += 1
            return True
        if eol < 0:
            return self._short(side)
        if buf[:1] != b"$":
            return self._malformed(side)
        try:
            size = int(buf[1:eol])
        except ValueError:
            return self._malformed(side)
        start = eol + 2
        n = start + max(size, 0) + 2
        keep = min(size, ARG_MAX + 1) if len(self.args) < ARGS_MAX else 0
        if len(buf) < start + keep and not self.cutting:
            return False
        if len(self.args) < ARGS_MAX:
            got = bytes(buf[start:start + min(size, ARG_MAX + 1)])
            self.args.append(clip(printable(got), ARG_MAX, cut=len(got) < min(size, ARG_MAX)))
        assert self.cmd is not None
        self.cmd.req_bytes += n
        self.cmd.text["command"] = " ".join(self.args)
        self.left -= 1
        if not self.left:
            self.args, self.cmd = None, None
        side.consume(n)
        return True

    def _inline(self, side: Side) -> bool:
        buf = side.buf
        eol = buf.find(b"\n", 0, _LINE_MAX)
        if eol < 0:
            return self._short(side)
        line = bytes(buf[:eol]).rstrip(b"\r")
        words = line.split()
        if words:
            p = Pending(ts=side.ts_at(0), req_bytes=eol + 1)
            p.text["command"] = " ".join(clip(printable(w), ARG_MAX) for w in words[:ARGS_MAX])
            self.pending.append(p)
            self.requests += 1
        side.consume(eol + 1)
        return True

    def _short(self, side: Side) -> bool:
        if len(side.buf) >= _LINE_MAX:
            return self._malformed(side)
        return False

    def _malformed(self, side: Side) -> bool:
        self.stats["malformed"] += 1
        self.desync(side)
        return False

    # -- replies -----------------------------------------------------------------------------
    def _reply(self, side: Side) -> bool:
        buf = side.buf
        eol = buf.find(b"\r\n")
        if eol < 0:
            return False
        t = buf[0]
        kind = _TYPES.get(t)
        if kind is None:
            return self._malformed(side)
        n = eol + 2
        count = 0
        if t in _BULKY or t in _AGGREGATE:
            try:
                count = int(buf[1:eol])
            except ValueError:
                return self._malformed(side)
            if t in _BULKY:
                n += count + 2 if count >= 0 else 0
                if count < 0:
                    kind = "nil"
            elif count < 0:
                kind = "nil"
            elif t in b"%|":
                count *= 2
        if not self.stack:  # a top-level value: the reply (or a push / attribute before it)
            self.push = t == ord(">")
            if t == ord("|"):
                self.attr = True
            elif not self.push:
                if self.cur is None:
                    self.cur = self.head(side.ts_at(0))
                p = self.cur
                if t == ord("+"):
                    p.status = printable(buf[1:min(eol, 65)])
                elif t == ord("-"):
                    p.status = printable(bytes(buf[1:min(eol, 65)]).split(b" ", 1)[0])
                    p.error = True
                elif t == ord("!"):
                    p.status = printable(bytes(buf[n - count - 2:min(n - 2, eol + 66)])
                                         .split(b" ", 1)[0])
                    p.error = True
                else:
                    p.status = kind
        if self.cur is not None and not self.push:
            self.cur.resp_bytes += n
        if t in _AGGREGATE and count > 0:
            side.consume(n)
            self.stack.append(count)
        else:
            side.consume(n, self._value)
        return True

    def _value(self, ts: float) -> None:
        stack = self.stack
        while stack:
            stack[-1] -= 1
            if stack[-1]:
                return
            stack.pop()
        if self.attr:  # the attribute is complete; the reply itself follows
            self.attr = False
            return
        if self.push:
            self.push = False
            return
        if self.cur is not None:
            self.cur = None
            self.finish(ts)

    # -- loss ----------------------------------------------------------------------------------
    def lost(self, side: Side) -> None:
        if side.req:
            if self.cmd is not None:
                self.cmd.partial = True
            self.args, self.cmd = None, None
            return
        self.stack.clear()
        self.push = self.attr = False
        if self.cur is not None:
            self.cur = None
            p = self.pending.popleft()
            p.partial = True
            self.out.emit(p, None)
        else:
            self.drop_response()

    def sync(self, side: Side, data: bytes) -> int | None:
        if side.req:
            m = _REQ_SYNC.search(data)
            if m:
                return m.start()
            word = data.split(None, 1)[0].upper() if data.strip() else b""
            return 0 if word.isalpha() and data.find(b"\n") > 0 else None
        return 0 if data[:1] and data[0] in _TYPES and b"\r\n" in data[:_LINE_MAX] else None
