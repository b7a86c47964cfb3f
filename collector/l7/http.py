"""HTTP/1.x: request/response heads, Content-Length and chunked bodies, pairing in order.

Covers keep-alive and pipelining (responses pair with requests in order), chunked bodies
both ways, `Expect: 100-continue` (interim 1xx responses are skipped), HEAD/204/304
without bodies, bodies delimited by close, and 101 Switching Protocols (parsing stops:
what follows is another protocol).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from collector.l7.base import Parser, Side
from collector.l7.record import Emitter, Pending, clip, printable

METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT",
           b"TRACE", b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK",
           b"SEARCH", b"PURGE", b"REPORT")
_M = b"|".join(METHODS)
REQ_LINE = re.compile(rb"(" + _M + rb") ([^ \r\n]+) HTTP/1\.[01]\r\n")
REQ_START = re.compile(rb"(?:(?<=\n)|\A)(?:" + _M + rb") [/*a-zA-Z]")
STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5]\d\d)(?:[ \r])")
STATUS_START = re.compile(rb"(?:(?<=\n)|\A)HTTP/1\.[01] [1-5]\d\d[ \r]")
KEPT = {b"host": "host", b"user-agent": "user-agent", b"content-type": "content-type"}
_HEAD, _CHUNK, _TRAILER = 0, 1, 2
_CHUNK_LINE_MAX = 1024


class _State:
    __slots__ = ("p", "state")

    def __init__(self) -> None:
        self.state = _HEAD
        self.p: Pending | None = None  # the message whose chunked body is being framed


# The headers the parser reads; every other header is never looked at.
HEADER_NAMES = (b"content-length", b"transfer-encoding", b"expect", b"host", b"user-agent",
                b"content-type")
_HEADER = re.compile(rb"\r\n(" + b"|".join(HEADER_NAMES) + rb")[ \t]*:[ \t]*([^\r\n]*)",
                     re.I)

Headers = tuple[dict[bytes, bytes], list[tuple[str, str]]]


def headers_py(buf: bytes | bytearray, start: int, end: int) -> Headers:
    """(framing headers, kept headers) of the head in buf[start:end] (first line excluded):
    one regex scan for HEADER_NAMES. A framing value is stripped and lowercased (a later one
    wins); a kept one is stripped and shown as text, in order. The definition of `headers`."""
    framing: dict[bytes, bytes] = {}
    kept: list[tuple[str, str]] = []
    for m in _HEADER.finditer(buf, start, end):
        name = m[1].lower()
        value = m[2].rstrip()
        if name in KEPT:
            kept.append((KEPT[name], printable(value)))
        else:
            framing[name] = value.lower()
    return framing, kept


# The C twin where it was built (_httphead.c): `re` folds case one character at a time over
# the alternation, ~3 µs of a browser-sized request head, a third of the parser's time here.
headers: Callable[[bytes | bytearray, int, int], Headers] = headers_py
HEADERS_IMPL = "python"
try:
    import collector.l7._httphead as _httphead
except ImportError:  # no compiler or Python headers where it was installed
    pass
else:
    _httphead.configure(HEADER_NAMES, KEPT)
    headers = _httphead.headers
    HEADERS_IMPL = "c"


class HttpParser(Parser):
    proto = "http"

    def __init__(self, out: Emitter, stats: Counter[str]) -> None:
        super().__init__(out, stats)
        self.st = {True: _State(), False: _State()}

    def step(self, side: Side) -> bool:
        st = self.st[side.req]
        if st.state == _HEAD:
            return self._head(side, st)
        if st.state == _CHUNK:
            return self._chunk(side, st)
        return self._trailer(side, st)

    # -- heads ---------------------------------------------------------------------------
    def _head(self, side: Side, st: _State) -> bool:
        buf = side.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        framing, kept = headers(buf, buf.find(b"\r\n"), end + 2)
        hlen = end + 4
        clen = framing.get(b"content-length", b"0")
        chunked = b"chunked" in framing.get(b"transfer-encoding", b"")
        try:
            length = int(clen)
        except ValueError:
            length = -1
        if length < 0:
            self.stats["malformed"] += 1
            self.desync(side)
            return False
        if side.req:
            m = REQ_LINE.match(buf)
            if m is None:
                self.stats["malformed"] += 1
                self.desync(side)
                return False
            p = Pending(ts=side.ts_at(0))
            p.text["method"] = m[1].decode()
            p.text["path"] = printable(m[2])
            p.headers = kept
            self.pending.append(p)
            self.requests += 1
            if chunked:
                p.req_bytes = hlen
                st.state, st.p = _CHUNK, p
                side.consume(hlen)
            else:
                p.req_bytes = hlen + length
                side.consume(hlen + length)
            return True
        m = STATUS_LINE.match(buf)
        if m is None:
            self.stats["malformed"] += 1
            self.desync(side)
            return False
        code = int(m[1])
        if code < 200 and code != 101:  # interim (100 Continue): the pair is not complete
            side.consume(hlen)
            return True
        p = self.head(side.ts_at(0))
        p.status = code
        p.error = code >= 400
        p.resp_bytes = hlen
        if code == 101:  # upgraded (WebSocket, h2c): the rest is not HTTP/1
            side.consume(hlen, self.finish)
            self.dormant = True
            return False
        if p.text.get("method") == "HEAD" or code in (204, 304):
            side.consume(hlen, self.finish)
        elif chunked:
            st.state, st.p = _CHUNK, p
            side.consume(hlen)
        elif b"content-length" in framing:
            p.resp_bytes += length
            side.consume(hlen + length, self.finish)
        else:  # no length: the body ends when the server closes
            side.consume(hlen)
            st.p = p
            side.eat, side.eaten = True, len(side.buf)
            side.buf.clear()
        return True

    # -- chunked bodies -----------------------------------------------------------------
    def _chunk(self, side: Side, st: _State) -> bool:
        buf = side.buf
        eol = buf.find(b"\r\n", 0, _CHUNK_LINE_MAX)
        if eol < 0:
            if len(buf) >= _CHUNK_LINE_MAX:
                self.desync(side)
            return False
        try:
            size = int(bytes(buf[:eol]).split(b";")[0].strip(), 16)
        except ValueError:
            self.stats["malformed"] += 1
            self.desync(side)
            return False
        n = eol + 2 + (size + 2 if size else 0)
        self._count(side, st, n)
        if size == 0:
            st.state = _TRAILER
        side.consume(n)
        return True

    def _trailer(self, side: Side, st: _State) -> bool:
        buf = side.buf
        if buf[:2] == b"\r\n":
            n = 2
        else:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            n = end + 4
        self._count(side, st, n)
        st.state, p, st.p = _HEAD, st.p, None
        side.consume(n, self.finish if not side.req and p is not None else None)
        return True

    @staticmethod
    def _count(side: Side, st: _State, n: int) -> None:
        if st.p is None:
            return
        if side.req:
            st.p.req_bytes += n
        else:
            st.p.resp_bytes += n

    # -- loss -----------------------------------------------------------------------------
    def lost(self, side: Side) -> None:
        st = self.st[side.req]
        was, st.state, st.p = st.state, _HEAD, None
        buf = bytes(side.buf)
        if side.req:
            if was != _HEAD or not buf:
                return
            method, sp, rest = buf.partition(b" ")
            if not sp or method not in METHODS:
                return
            p = Pending(ts=side.ts_at(0), partial=True, req_bytes=len(buf))
            p.text["method"] = method.decode()
            target, sp, _ = rest.partition(b" ")
            if target:  # a target the gap may have cut loses its last token
                p.text["path"] = clip(printable(target), cut=not sp)
            self.pending.append(p)
            self.requests += 1
            return
        if not self.pending:
            return
        p = self.pending.popleft()
        p.partial = True
        m = STATUS_LINE.match(buf) if was == _HEAD else None
        if m is not None:
            p.status = int(m[1])
            p.error = p.status >= 400
        self.out.emit(p, None)

    def sync(self, side: Side, data: bytes) -> int | None:
        m = (REQ_START if side.req else STATUS_START).search(data)
        return m.start() if m else None

    def end(self, side: Side) -> None:
        st = self.st[side.req]
        if side.eat and st.p is not None and self.pending and self.pending[0] is st.p:
            st.p.resp_bytes += side.eaten
            self.finish(side.ts)
        side.eat, side.eaten, st.p = False, 0, None
