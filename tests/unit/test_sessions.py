"""Router: one delivery per session per batch; meta-level sessions never see payload."""

from __future__ import annotations

import asyncio
import time

import orjson

from collector.sessions import Frame, Router, Session


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
    return Session(sid, "u", 0, {7}, payload, time.time() + 60, ("role admin",), loop,
                   asyncio.Queue(maxsize=maxsize))


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
        got = [_events([s.queue.get_nowait() for _ in range(s.queue.qsize())])
               for s in (full, meta, other)]
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
