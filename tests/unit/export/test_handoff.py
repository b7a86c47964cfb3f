"""The bounded hand-off: what fits is taken whole, the rest is refused; order kept."""

from __future__ import annotations

import threading

import pytest

from collector.export.handoff import Handoff


def test_takes_a_prefix_when_full_and_keeps_order() -> None:
    h: Handoff[int] = Handoff(5)
    assert h.offer([1, 2, 3]) == 3
    assert h.offer([4, 5, 6, 7], tag=1) == 2  # only 4 and 5 fit
    assert h.offer([8]) == 0
    assert len(h) == 5
    assert h.take(4, 0) == [(0, [1, 2, 3]), (1, [4])]  # split: 5 stays first in line
    assert h.take(10, 0) == [(1, [5])]
    assert len(h) == 0


def test_the_caller_may_reuse_its_list() -> None:
    h: Handoff[int] = Handoff(10)
    items = [1, 2]
    h.offer(items)
    items.append(3)
    assert h.take(10, 0) == [(0, [1, 2])]


def test_take_returns_empty_when_idle_and_none_when_closed_and_drained() -> None:
    h: Handoff[int] = Handoff(3)
    assert h.take(3, 0, poll_s=0.01) == []
    h.offer([1])
    h.close()
    assert h.offer([2]) == 0  # closed: refused
    assert h.take(3, 5.0) == [(0, [1])]  # no linger once closed
    assert h.take(3, 5.0) is None


def test_a_full_batch_wakes_a_lingering_worker() -> None:
    h: Handoff[int] = Handoff(100)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(h.take(10, 60.0)))
    t.start()
    h.offer([1])
    h.offer(list(range(2, 11)))  # the 10th item: the worker needs no more
    t.join(30)
    assert not t.is_alive()
    assert got == [[(0, [1]), (0, list(range(2, 11)))]]


def test_discard_returns_what_was_queued() -> None:
    h: Handoff[str] = Handoff(10)
    h.offer(["a", "b"], tag=2)
    assert h.discard() == [(2, ["a", "b"])]
    assert len(h) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Handoff(0)


def test_counts_lose_no_update_across_threads_and_never_grow() -> None:
    from collector.export.handoff import Counts
    c = Counts(("a", "b"))
    assert dict(c) == {"a": 0, "b": 0}  # a scrape sees every key from the start

    def work() -> None:
        for _ in range(20_000):
            c.add("a")
            c.add("b", 2)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c == {"a": 80_000, "b": 160_000}
