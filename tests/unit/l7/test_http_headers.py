"""The HTTP head's header scan: the C twin (_httphead.c) equals headers_py, its definition."""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector.l7 import http

C_BUILT = importlib.util.find_spec("collector.l7._httphead") is not None
needs_c = pytest.mark.skipif(not C_BUILT, reason="the C twin was not built here")

# Header lines built from the names the scan looks for (in any case, cut short, with the
# whitespace and separators its regex cares about) and from other names and bytes.
_NAMES = [n for name in http.HEADER_NAMES for n in (name, name.upper(), name.title(),
                                                    name[:-1], name + b"x")]
_NAMES += [b"accept", b"cookie", b"x-host", b"hostname", b"", b"content-lengthy"]
_WS = st.sampled_from([b"", b" ", b"\t", b"  \t", b"\x0b", b"\x0c"])
_VALUE = st.binary(max_size=24) | st.sampled_from(
    [b"12", b" 0 ", b"chunked", b"Chunked, GZIP", b"100-continue", b"caf\xc3\xa9", b"\xff\xfe",
     b"a\rb", b"a\nb", b"x \x0b\x0c", b""])
_COLON = st.sampled_from([b":"] * 6 + [b"", b";", b"::"])
_LINE = st.tuples(st.sampled_from(_NAMES), _WS, _COLON, _WS, _VALUE).map(b"".join)
_SEP = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r", b"\r\r\n", b""])


@st.composite
def heads(draw: st.DrawFn) -> tuple[bytes, int, int]:
    parts = [draw(st.sampled_from([b"GET / HTTP/1.1", b"HTTP/1.1 200 OK", b""]))]
    for line in draw(st.lists(_LINE, max_size=8)):
        parts += [draw(_SEP), line]
    parts.append(draw(st.sampled_from([b"\r\n\r\n", b"\r\n", b""])))
    buf = b"".join(parts)
    # Mostly as the parser calls it (from the first line end to the blank line), else anywhere.
    first, blank = buf.find(b"\r\n"), buf.rfind(b"\r\n\r\n") + 2
    start = draw(st.sampled_from([first, 0]) | st.integers(-2, len(buf) + 2))
    end = draw(st.sampled_from([blank, len(buf)]) | st.integers(-2, len(buf) + 2))
    return buf, start, end


@needs_c
@settings(max_examples=1500, deadline=None)
@given(heads())
@example((b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 \r\nHOST:b\r\n\r\n", 14, 60))
@example((b"x\r\ncontent-length:1\r\ncontent-length :  22\r\n", 0, 99))
@example((b"x\r\nhost\r\n: a\r\nuser-agent:\t\x0bz\x0c\r\n", 1, 40))
@example((b"\r\nhost: a", 0, 5))
def test_the_c_scan_equals_the_definition(case: tuple[bytes, int, int]) -> None:
    buf, start, end = case
    want = http.headers_py(buf, start, end)
    assert http._httphead.headers(buf, start, end) == want
    assert http._httphead.headers(bytearray(buf), start, end) == want


def test_the_definition_reads_framing_and_kept_headers() -> None:
    head = (b"POST /x HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 12\r\n"
            b"Transfer-Encoding: Chunked \r\nUser-Agent: caf\xc3\xa9\xff\r\nX: y\r\n\r\n")
    end = head.find(b"\r\n\r\n") + 2
    framing, kept = http.headers_py(head, head.find(b"\r\n"), end)
    assert framing == {b"content-length": b"12", b"transfer-encoding": b"chunked"}
    assert kept == [("host", "shop.example"), ("user-agent", "caf\u00e9\\xff")]


@needs_c
def test_the_scan_runs_in_c_where_built() -> None:
    assert http.HEADERS_IMPL == "c" and http.headers is not http.headers_py


@needs_c
def test_the_c_scan_rejects_bad_input() -> None:
    with pytest.raises(TypeError):
        http._httphead.headers("not bytes", 0, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        http._httphead.headers(b"x", 0)  # type: ignore[call-arg]
