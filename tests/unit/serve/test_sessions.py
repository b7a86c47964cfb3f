"""Router: one delivery per session per batch; meta-level sessions never see payload."""

from __future__ import annotations

import asyncio
import time

import orjson

from collector.serve.sessions import Frame, Router, Session


def _events(frames: list[Frame]) -> list[object]:
    """Decode queued wire frames back to events; each frame's length is its payload's."""
    out = []
    for line, n in frames:
        ev = orjson.loads(line)["event"]
        assert n == len(ev.get("payload", ""))
        out.append(ev)
    return out


def _session(loop: asyncio.AbstractEventLoop, sid: str, payload: bool, maxsize: int = 100
             ) -> Session:
    return Session(sid, "u", 0, {7}, payload, time.time() + 60, ("role admin",), loop, maxsize)


def test_fan_out_by_cookie_and_level() -> None:
    async def main() -> tuple[list[object], list[object], list[object], Router]:
        loop = asyncio.get_running_loop()
        full, meta, other = (_session(loop, "a", True), _session(loop, "b", False),
                             _session(loop, "c", True))
        other.cookies = {8}
        r = Router()
        for s in (full, meta, other):
            r.add(s)
        evs = [{"kind": "syscall", "target": 7, "payload": "x", "captured": 1, "ret": 1},
               {"kind": "data", "target": 7, "payload": "y"},
               {"kind": "exit", "target": 7, "code": 0},
               {"kind": "exit", "target": 9, "code": 0}]
        await loop.run_in_executor(None, r, evs)  # the pipeline's sink thread
        await asyncio.sleep(0.05)
        got = [_events(s.take()) for s in (full, meta, other)]
        return got[0], got[1], got[2], r

    full, meta, other, _r = asyncio.run(main())
    assert [e["kind"] for e in full] == ["syscall", "data", "exit"]  # type: ignore[index]
    assert meta == [{"kind": "syscall", "target": 7, "ret": 1},
                    {"kind": "exit", "target": 7, "code": 0}]
    assert other == []


def test_full_queue_ends_the_session_counted() -> None:
    async def main() -> tuple[Session, Router]:
        loop = asyncio.get_running_loop()
        s = _session(loop, "a", True, maxsize=3)
        r = Router()
        r.add(s)
        await loop.run_in_executor(None, r, [{"kind": "exit", "target": 7}] * 5)
        await asyncio.sleep(0.05)
        return s, r

    s, r = asyncio.run(main())
    assert s.ended == "slow_reader"
    assert r.counters["slow_reader_dropped"] == 1


def test_outbox_keeps_order_bounds_frames_and_wakes_on_end() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        s = _session(loop, "a", True, maxsize=4)
        assert s.offer([(b"1", 0), (b"2", 0)]) and s.offer([(b"3", 1)])
        assert s.wakeup.is_set() and s.queued == 3
        assert not s.offer([(b"4", 0), (b"5", 0)])  # over the limit: nothing queued
        assert s.queued == 3
        assert s.take() == [(b"1", 0), (b"2", 0), (b"3", 1)]
        assert s.queued == 0 and not s.wakeup.is_set()
        s.end("deadline")
        assert s.wakeup.is_set()  # the pump wakes to send the rest and stop
        assert s.take() == [] and s.wakeup.is_set()

    asyncio.run(main())
