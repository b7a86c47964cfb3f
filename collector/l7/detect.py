"""Content detection: which L7 protocol a connection speaks, from the first bytes either way.

sniff(data) looks at the first bytes of one direction (at most SNIFF_BYTES) and answers
(proto, is_request), MORE (a prefix of something we know: wait for more bytes), NO, or
NEVER (TLS or SSH: nothing we parse will ever follow). Cheap: a few slices and compares,
no regex scan over the payload.
"""

from __future__ import annotations

import struct

from collector.l7.http import METHODS

SNIFF_BYTES = 64
MORE = "more"
NO = "no"
NEVER = "never"

_PG_SSL, _PG_GSS, _PG_CANCEL, _PG_V3 = 80877103, 80877104, 80877102, 196608
_PG_CLIENT_TYPES = b"QP"
_MY_TEXT_CMDS = (0x03, 0x16)  # COM_QUERY, COM_STMT_PREPARE
_REDIS_INLINE = frozenset(
    b"PING GET SET DEL AUTH HELLO INFO QUIT SELECT EXISTS INCR DECR EXPIRE TTL KEYS SCAN "
    b"MGET MSET HGET HSET HGETALL LPUSH RPUSH LPOP RPOP LRANGE SADD SMEMBERS ZADD ZRANGE "
    b"PUBLISH SUBSCRIBE MULTI EXEC CLIENT CONFIG COMMAND ECHO FLUSHALL FLUSHDB DBSIZE".split())
_REDIS_PREFIXES = frozenset(w[:i] for w in _REDIS_INLINE for i in range(1, len(w) + 1))
_HTTP_PREFIXES = tuple(m + b" " for m in METHODS)
_METHOD_FIRST = frozenset(m[0] for m in METHODS)


def _text_like(b: bytes) -> bool:
    return bool(b) and all(32 <= c < 127 or c in (9, 10, 13) for c in b[:32])


def _http(data: bytes) -> tuple[str, bool] | str:
    if data.startswith(b"HTTP/1."):
        if len(data) < 13:
            return MORE
        ok = data[7:8] in (b"0", b"1") and data[8:9] == b" " and data[9:12].isdigit()
        return ("http", False) if ok else NO
    if data[0] not in _METHOD_FIRST:
        return MORE if b"HTTP/1.".startswith(data) else NO
    for m in _HTTP_PREFIXES:
        if data.startswith(m):
            return ("http", True) if (len(data) > len(m) and data[len(m)] in b"/*hH") \
                or (m == b"CONNECT " and len(data) > len(m)) else (MORE if len(data) == len(m)
                                                                   else NO)
        if m.startswith(data):
            return MORE
    if b"HTTP/1.".startswith(data):
        return MORE
    return NO


def _pg(data: bytes) -> tuple[str, bool] | str:
    if len(data) < 8:
        return MORE if len(data) < 5 or data[:1] in (b"\x00", b"Q", b"P") else NO
    length, code = struct.unpack_from(">II", data)
    if data[0] == 0:
        if length == 8 and code in (_PG_SSL, _PG_GSS):
            return ("pgsql", True)
        if length == 16 and code == _PG_CANCEL:
            return ("pgsql", True)
        if code == _PG_V3 and 8 < length < 10000:
            return ("pgsql", True)
        return NO
    if data[:1] in (b"Q", b"P"):
        (length,) = struct.unpack_from(">I", data, 1)
        body = data[5:5 + length - 4]
        if 5 <= length < (1 << 24) and _text_like(body.replace(b"\x00", b" ")):
            return ("pgsql", True)
    return NO


def _mysql(data: bytes) -> tuple[str, bool] | str:
    if len(data) < 6:
        return MORE if len(data) < 4 or data[3] == 0 else NO
    length = data[0] | data[1] << 8 | data[2] << 16
    if data[3] != 0 or length < 2:
        return NO
    if data[4] == 10:  # server greeting: protocol 10, NUL-terminated version string
        nul = data.find(b"\x00", 5)
        if nul < 0:
            return MORE if len(data) < SNIFF_BYTES else NO
        return ("mysql", False) if nul > 5 and _text_like(data[5:nul]) else NO
    if data[4] in _MY_TEXT_CMDS and _text_like(data[5:4 + length]):
        return ("mysql", True)
    return NO


def _redis(data: bytes) -> tuple[str, bool] | str:
    if data[:1] == b"*":
        eol = data.find(b"\r\n")
        if eol < 0:
            return MORE if (len(data) < 8 and data[1:].isdigit()) or len(data) == 1 else NO
        if not data[1:eol].isdigit() or not 0 < int(data[1:eol]) <= 1 << 20:
            return NO
        rest = data[eol + 2:]
        if not rest:
            return MORE
        return ("redis", True) if rest[:1] == b"$" else NO
    # inline command: a whole line whose first word is a command (and not an HTTP request)
    eol = data.find(b"\r\n")
    line = data if eol < 0 else data[:eol]
    word = line.split(b" ", 1)[0].upper()
    if word in _REDIS_PREFIXES:
        if eol < 0:
            return MORE if len(data) < SNIFF_BYTES else NO
        if word in _REDIS_INLINE and not line[-9:-1].startswith(b" HTTP/1."):
            return ("redis", True)
    if data.startswith((b"-ERR ", b"-NOAUTH ", b"-WRONGTYPE ", b"+PONG\r\n")):
        return ("redis", False)
    return NO


def dns_message(data: bytes, cut: bool = False) -> bool | None:
    """None if `data` is not a plausible DNS message; else True for a query (QR = 0).
    With `cut`, data may end anywhere after the header (a prefix of the message)."""
    if len(data) < (12 if cut else 17):
        return None
    _id, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", data)
    if qd != 1 or (flags >> 11) & 0xF not in (0, 2, 4, 5) or an > 512 or ns > 512 \
            or ar > 512:
        return None
    pos = 12
    while True:
        if pos >= len(data):
            return True if cut and not flags & 0x8000 else (False if cut else None)
        n = data[pos]
        if n == 0:
            break
        if n > 63 or (pos + 1 + n > len(data) and not cut):
            return None
        label = data[pos + 1:pos + 1 + n]
        if not all(c == 45 or c == 95 or c == 42 or 48 <= c <= 57 or 65 <= c <= 90
                   or 97 <= c <= 122 for c in label):
            return None
        pos += 1 + n
    if pos + 5 > len(data):
        return (not flags & 0x8000) if cut else None
    (qclass,) = struct.unpack_from(">H", data, pos + 3)
    if qclass not in (1, 3, 4, 254, 255) and not (flags & 0x8000 == 0 and qclass >= 512):
        return None
    query = not flags & 0x8000
    if query and an:
        return None
    return query


def _dns_tcp(data: bytes) -> tuple[str, bool] | str:
    if len(data) < 14:
        return MORE if len(data) < 2 or data[0] < 2 else NO  # length < 512: typical query
    (length,) = struct.unpack_from(">H", data)
    if length < 17:
        return NO
    cut = len(data) < 2 + length
    q = dns_message(data[2:2 + length], cut)
    if q is None:
        return NO
    return MORE if cut and len(data) < SNIFF_BYTES else ("dns", q)


_SNIFFERS = (_http, _pg, _mysql, _redis, _dns_tcp)


def sniff(data: bytes) -> tuple[str, bool] | str:
    """(proto, is_request), MORE, NO or NEVER for the first bytes of one direction."""
    if not data:
        return MORE
    if data[0] == 0x16 and data[1:2] in (b"\x03", b""):
        return NEVER  # TLS handshake
    if data.startswith(b"SSH-"):
        return NEVER
    more = False
    for f in _SNIFFERS:
        v = f(data)
        if isinstance(v, tuple):
            return v
        more = more or v == MORE
    return MORE if more and len(data) < SNIFF_BYTES else NO
