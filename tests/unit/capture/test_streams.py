"""StreamTable: one stream per (pid, fd|conn, direction), LRU-bounded with counted
evictions, the target cookie kept current, and what closing streams still held."""

from __future__ import annotations

import time
from collections import Counter

from collector.capture.streams import StreamTable
from tests.unit.pipeline_corpus import FakeStream


def table(capacity: int = 3) -> tuple[StreamTable, list[FakeStream], Counter[str]]:
    opened: list[FakeStream] = []

    def open_stream() -> FakeStream:
        opened.append(FakeStream())
        return opened[-1]

    counters: Counter[str] = Counter()
    return StreamTable(open_stream, capacity, counters), opened, counters


def test_one_stream_per_key_and_the_cookie_follows() -> None:
    t, opened, _c = table()
    t.tick()
    a = t.get((1, 3, "out"), 7)
    assert t.get((1, 3, "out"), 8) is a and a.cookie == 8  # same key: same stream
    b = t.get((1, 3, "in"), 8)
    c = t.get((1, "ssl:7f", "out"), 8)
    assert len({id(a.stream), id(b.stream), id(c.stream)}) == 3 == len(opened) == len(t)


def test_lru_eviction_is_counted_and_closes_the_evicted_stream() -> None:
    t, opened, counters = table(capacity=2)
    t.tick()
    t.get((1, 3, "out"), 1)
    t.get((1, 4, "out"), 1)
    t.tick()
    t.get((1, 3, "out"), 1)  # used again in a later batch: (1, 4) is now the oldest
    t.get((1, 5, "out"), 1)
    assert counters["streams_evicted"] == 1
    assert opened[1].closed and not opened[0].closed
    assert [k for k, _c, _t in t.close(lambda _k: True)] == [(1, 3, "out"), (1, 5, "out")]


def test_close_returns_what_streams_held_and_forgets_them() -> None:
    t, _opened, _c = table()
    t.tick()
    t.get((1, 3, "out"), 5).stream.feed(b"partial")
    t.get((2, 3, "out"), 6).stream.feed(b"done\n")
    assert t.close(lambda k: k[0] == 1) == [((1, 3, "out"), 5, b"partial")]
    assert len(t) == 1
    again = t.get((1, 3, "out"), 5)  # a new stream: nothing carried over
    assert again.stream.held == b""


def test_idle_streams_close_after_the_idle_time_only() -> None:
    t, _opened, _c = table()
    t.tick()
    t.get((1, 3, "out"), 1).stream.feed(b"x")
    assert t.close_idle(idle_s=60) == []
    t.tick()
    time.sleep(0.02)
    assert t.close_idle(idle_s=0.01) == [((1, 3, "out"), 1, b"x")]
