"""Segmenter's public state API (what a Stream uses): adopt, idle, clean, resp, push_dropped;
and its line tests' prefilters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redact import segment
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


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600), st.integers(0, 520))
def test_the_dropped_line_step_twins_agree(held: bytes, data: bytes, keep: int) -> None:
    """drop_tail (C where built) and drop_tail_py: the same answer and the same buffer."""
    got = []
    for twin in (segment.drop_tail, segment.drop_tail_py):
        buf = bytearray(held)
        got.append((twin(buf, data, keep), bytes(buf)))
    assert got[0] == got[1]
    ends = b"\n" in data or b"\x00" in data
    assert got[1] == ((False, held) if ends else (True, (held + data)[-keep:] if keep else b""))


def test_the_dropped_line_step_runs_in_c_where_built() -> None:
    import importlib.util
    if importlib.util.find_spec("redact._droptail") is None:
        pytest.skip("the C twin was not built here")
    assert segment.DROP_IMPL == "c" and segment.drop_tail is not segment.drop_tail_py
    with pytest.raises(TypeError):
        segment.drop_tail(b"not a bytearray", b"x", 1)  # type: ignore[arg-type]
    buf = bytearray(b"abc")
    with memoryview(buf), pytest.raises(BufferError):  # exported: never resized
        segment.drop_tail(buf, b"defg", 2)
    assert buf == b"abc"


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


_PIECES = [b"password", b"PassWD", b"pwd", b"secret", b"TOKEN", b"api_key", b"api-key",
           b"authorization", b"credentials", b"identified by", b"IDENTIFIED\twith x as",
           b"requirepass", b"masterauth", b"form-data; name=\"f\"", b"form-data;\xff name=\"\"",
           b"\\\"", b"'", b"\"", b":", b"=", b" ", b"\t", b"\r", b"\xff", b"\xc3\xa9", b"x",
           b"-----BEGIN RSA PRIVATE KEY-----", b"-----END", b"PRIVATE KEY", b"-----"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=8).map(b"".join),
       st.sampled_from([b"\n", b"\x00", b""]))
def test_the_line_tests_prefilters_miss_nothing(body: bytes, end: bytes) -> None:
    """_continues and _pem_opens skip `re` where their prefilter says no match can be:
    never where `re` alone finds one."""
    line = body + end
    assert segment._continues(line) == (segment._CONT.search(line) is not None)
    ends = [m.end() for m in segment._PEM_BEGIN.finditer(line)]
    assert segment._pem_opens(line) == (bool(ends) and b"-----END" not in line[ends[-1]:])
