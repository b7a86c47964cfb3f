"""The C build of I/O events (capture/_iobuild.c) equals its Python definition
(iobuild.io_event) on every record: same result, same keys in the same order."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.capture import iobuild
from probes.layout import F_CIPHERTEXT, F_DATA_OUT, F_PAYLOAD, LAYOUT_VERSION, SYS_HDR_SIZE, Op, Sc
from tests.unit.pipeline_corpus import batches, sys_rec

c_build = getattr(iobuild, "_iobuild", None)
pytestmark = pytest.mark.skipif(c_build is None, reason="C build not compiled (no compiler)")


def same(raw: bytes, offset_us: int = 1_700_000_000_123_456) -> Any:
    want = iobuild.io_event(raw, offset_us)
    got = iobuild.build(raw, offset_us)
    if want is None:
        assert got is None
        return None
    assert got is not None
    assert list(got[0].items()) == list(want[0].items())
    assert [type(v) for v in got[0].values()] == [type(v) for v in want[0].values()]
    assert got[1:] == want[1:]
    return got


def test_the_c_build_is_the_one_in_use() -> None:
    assert iobuild.IMPL == "c" and iobuild.build is not iobuild.io_event


def test_equal_on_the_golden_corpus() -> None:
    built = [same(raw) for records, _shed in batches() for raw in records]
    assert sum(b is not None for b in built) > 50


U16, U32, U64 = (st.integers(0, 2**b - 1) for b in (16, 32, 64))


@settings(max_examples=2000, deadline=None)
@given(nr=st.one_of(st.sampled_from(list(Sc)), U16), fd=st.integers(-2**31, 2**31 - 1),
       ret=st.one_of(st.integers(-5000, 5000), st.integers(-2**63, 2**63 - 1)),
       flags=st.one_of(st.sampled_from([0, F_DATA_OUT, F_PAYLOAD | F_DATA_OUT, F_CIPHERTEXT]),
                       U16),
       lat=st.one_of(st.integers(0, 10**7), U64), arg=U64,
       ktime=st.one_of(st.integers(0, 10**15), U64), cookie=U32, pid=U32, tid=U32,
       op=st.one_of(st.sampled_from([Op.SYSCALL, Op.TLS, Op.EXEC]), st.integers(0, 255)),
       version=st.sampled_from([LAYOUT_VERSION, LAYOUT_VERSION + 1]),
       data=st.binary(max_size=40), data_len=st.one_of(st.none(), st.integers(0, 60)),
       offset_us=st.one_of(st.integers(0, 2 * 10**15), st.integers(-2**62, 2**62)),
       cut=st.integers(0, 8))
def test_equal_on_random_records(nr: int, fd: int, ret: int, flags: int, lat: int, arg: int,
                                 ktime: int, cookie: int, pid: int, tid: int, op: int,
                                 version: int, data: bytes, data_len: int | None,
                                 offset_us: int, cut: int) -> None:
    raw = sys_rec(nr, fd, ret, data, flags, pid=pid, tid=tid, arg=arg, lat=lat, ktime=ktime,
                  cookie=cookie, op=op, version=version, data_len=data_len)
    if cut:  # short records: the header cut, or the data shorter than data_len says
        raw = raw[:max(0, SYS_HDR_SIZE - cut)] if cut > 4 else raw[:len(raw) - cut]
    same(raw, offset_us)


def test_errno_names_and_the_fallback_for_values_past_2_53() -> None:
    got = same(sys_rec(Sc.READ, 3, -11, b""))
    assert got[0]["errno"] == "EAGAIN"
    assert same(sys_rec(Sc.READ, 3, -4000, b""))[0]["errno"] == "E4000"
    assert "errno" not in same(sys_rec(Sc.SSL_READ, 3, -1, b"", op=Op.TLS))[0]
    big = same(sys_rec(Sc.WRITE, 3, 5, b"", lat=2**60 + 1, ktime=2**64 - 1))
    assert big[0]["latency_us"] == (2**60 + 1) / 1000


def test_bad_arguments_are_errors_not_crashes() -> None:
    with pytest.raises(TypeError):
        iobuild.build(bytearray(100), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        iobuild.build(b"", "x")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        iobuild.build(b"", 2**70)
    assert iobuild.build(struct.pack("<Q", 0), 0) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([7, 4242, 2**31 + 5]),
                          st.sampled_from([None, 7, 4243, 2**32 - 1])), min_size=1, max_size=12))
def test_runs_of_one_process_and_switches_between_processes(procs: list[tuple[int, int | None]]
                                                            ) -> None:
    """The C build keeps the last process's pid object for the next record: each record
    still gets its own pid and tid, whether the process or the thread changes or not."""
    for pid, tid in procs:
        got = same(sys_rec(Sc.WRITE, 5, 3, b"abc", F_PAYLOAD | F_DATA_OUT, pid=pid,
                           tid=pid if tid is None else tid))
        assert (got[0]["pid"], got[0]["tid"], got[1]) == (pid, pid if tid is None else tid, pid)
