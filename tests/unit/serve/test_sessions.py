"""Router: one delivery per session per batch; meta-level sessions never see payload."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from collector.capture.events import Batch
from collector.protocol import events_frame
from collector.serve.sessions import Router, Session


def _events(taken: tuple[bytes, int, int]) -> list[object]:
    """Decode what a session queued back to events: {"event"} lines or {"events"} frames;
    the counts it reports are the events' and their payload bytes."""
    data, n, nbytes = taken
    out: list[object] = []
    for line in data.splitlines():
        msg = orjson.loads(line)
        if "events" in msg:
            assert msg["n"] == len(msg["events"])
            out += msg["events"]
        else:
            out.append(msg["event"])
    assert n == len(out)
    assert nbytes == sum(len(ev.get("payload", "")) for ev in out)  # type: ignore[attr-defined]
    return out


def _session(loop: asyncio.AbstractEventLoop, sid: str, payload: bool, maxsize: int = 100,
             batched: bool = False) -> Session:
    return Session(sid, "u", 0, {7}, payload, time.time() + 60, ("role admin",), loop, maxsize,
                   batched=batched)


@pytest.mark.parametrize("batched", [False, True])
def test_fan_out_by_cookie_and_level(batched: bool) -> None:
    async def main() -> tuple[list[object], list[object], list[object], Router]:
        loop = asyncio.get_running_loop()
        full, meta, other = (_session(loop, "a", True, batched=batched),
                             _session(loop, "b", False, batched=batched),
                             _session(loop, "c", True, batched=batched))
        other.cookies = {8}
        r = Router()
        for s in (full, meta, other):
            r.add(s)
        evs = [{"kind": "syscall", "target": 7, "payload": "x", "captured": 1, "ret": 1},
               {"kind": "data", "target": 7, "payload": "y"},
               {"kind": "exit", "target": 7, "code": 0},
               {"kind": "exit", "target": 9, "code": 0}]
        await loop.run_in_executor(None, r, Batch(evs))  # the pipeline's sink thread
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
        await loop.run_in_executor(None, r, Batch([{"kind": "exit", "target": 7}] * 5))
        await asyncio.sleep(0.05)
        return s, r

    s, r = asyncio.run(main())
    assert s.ended == "slow_reader"
    assert r.counters["slow_reader_dropped"] == 1


def test_outbox_keeps_order_bounds_events_and_wakes_on_end() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        s = _session(loop, "a", True, maxsize=4)
        assert s.offer(b"1\n2\n", 2) and s.offer(b"3\n", 1, 7)
        assert s.wakeup.is_set() and s.queued == 3
        assert not s.offer(b"4\n5\n", 2)  # over the limit: nothing queued
        assert s.queued == 3
        assert s.take() == (b"1\n2\n3\n", 3, 7)
        assert s.queued == 0 and not s.wakeup.is_set()
        s.end("deadline")
        assert s.wakeup.is_set()  # the pump wakes to send the rest and stop
        assert s.take() == (b"", 0, 0) and s.wakeup.is_set()

    asyncio.run(main())


def test_a_payload_session_seeing_the_whole_batch_gets_its_json_as_is() -> None:
    """Serialized once: the session's frame embeds the very bytes the store gets."""
    evs = [{"kind": "syscall", "target": 7, "payload": "ab", "ret": 2}] * 3
    batch = Batch(evs)

    async def main() -> tuple[bytes, int, int]:
        loop = asyncio.get_running_loop()
        s = _session(loop, "a", True, batched=True)
        r = Router()
        r.add(s)
        await loop.run_in_executor(None, r, batch)
        await asyncio.sleep(0.05)
        return s.take()

    assert asyncio.run(main()) == (b'{"n":3,"events":' + bytes(batch.json()) + b"}\n", 3, 6)
    assert batch.json() == orjson.dumps(evs)
    assert batch.frame() == events_frame(orjson.dumps(evs), 3)
    assert batch.json().obj is batch.frame()  # the store's array is the frame's, not a copy
