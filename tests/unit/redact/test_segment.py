"""Segmenter's public state API (what a Stream uses): adopt, idle, clean, resp, push_dropped."""

from __future__ import annotations

import pytest

from redact.segment import EMIT, LINES, MASK, SKIP_TAIL, Segmenter


def test_push_dropped_equals_push_while_dropping_a_line() -> None:
    fast, slow = Segmenter(), Segmenter()
    for seg in (fast, slow):
        assert seg.push(b"head\npassword=Zq9") == [(LINES, b"head\n")]
        assert seg.gap() == [(MASK, b"gap")]
        assert not seg.idle
    chunks = [bytes([97 + i % 26]) * 100 for i in range(8)] + [b" token:", b"", b"x" * 300]
    for chunk in chunks:
        assert fast.push_dropped(chunk)
        assert slow.push(chunk) == []
        assert fast.held() == slow.held() <= SKIP_TAIL
        assert not fast.clean and not fast.idle
    assert not fast.push_dropped(b"x\nnext\n")  # a line end: the general loop decides
    tail = b"x\nnext\nlast"
    assert fast.push(tail) == slow.push(tail) == [(EMIT, b"\n"), (LINES, b"next\n")]
    assert fast.idle and slow.idle
    assert fast.finish() == slow.finish() == [(LINES, b"last")]


@pytest.mark.parametrize("chunk", [b"abc", b"a\nb", b"\x00"])
def test_push_dropped_takes_nothing_unless_dropping(chunk: bytes) -> None:
    seg = Segmenter()
    seg.push(b"partial")
    assert not seg.push_dropped(chunk)
    assert seg.held() == len(b"partial")


def test_adopt_shares_the_buffer_and_its_verdict() -> None:
    buf = bytearray(b"a partial line")
    seg = Segmenter()
    assert seg.idle and not seg.resp and not seg.clean
    seg.adopt(buf, clean=True, resp=False)
    buf += b", grown by its owner"  # the owner appends while the Segmenter is idle
    assert seg.held() == len(buf)
    assert seg.finish() == [(EMIT, b"a partial line, grown by its owner")]
    assert buf == b""  # the same buffer, cut by the Segmenter

    # RESP traffic: a gap drops to the next command, not only to the next line end.
    after_gap = b"hunter2\r\n$3\r\nxyz\r\n*1\r\n$4\r\nPING\r\n"
    for resp, kept in ((True, b"*1\r\n$4\r\nPING\r\n"),
                       (False, b"\n$3\r\nxyz\r\n*1\r\n$4\r\nPING\r\n")):
        seg = Segmenter()
        seg.adopt(bytearray(b"password=Zq9"), clean=False, resp=resp)
        assert seg.resp is resp and not seg.clean
        assert seg.gap() == [(MASK, b"gap")]
        assert b"".join(p[1] for p in seg.push(after_gap)) == kept


def test_adopt_keeps_resp_once_seen() -> None:
    seg = Segmenter(resp=True)
    seg.adopt(bytearray(), clean=False, resp=False)
    assert seg.resp
