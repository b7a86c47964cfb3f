"""Pipeline output on a corpus of every record shape equals the golden events (same keys,
same values, same order) that the original pipeline produced: the fast path keeps semantics."""

from __future__ import annotations

from pathlib import Path

import orjson

from collector.capture.events import Clock, syscall_event
from collector.capture.pipeline import Pipeline
from collector.proc.facts import Enricher
from probes.layout import SyscallRecord, decode
from tests.unit.pipeline_corpus import IO, FakeRedactor, batches, sys_rec

DATA = Path(__file__).parents[1] / "data"
GOLDEN = DATA / "pipeline" / "events.json"


def run() -> dict[str, object]:
    p = Pipeline(FakeRedactor(), [], Enricher(procfs=DATA / "proc"), max_streams=8)
    p.clock.offset = 1_700_000_000.123456
    res = [p.process(recs, shed_payload=shed) for recs, shed in batches()]
    tail: list[dict[str, object]] = []
    p._close_streams(lambda _k: True, 1.5, tail)
    return {"batches": res, "closed": tail, "counters": dict(sorted(p.counters.items()))}


def test_events_match_golden_exactly() -> None:
    got = run()
    want = orjson.loads(GOLDEN.read_bytes())
    for i, (g, w) in enumerate(zip(got["batches"], want["batches"], strict=True)):  # type: ignore[call-overload]
        assert [list(e.items()) for e in g] == [list(e.items()) for e in w], f"batch {i}"
    assert got["closed"] == want["closed"]
    assert got["counters"] == want["counters"]
    # byte-identical bodies: what the store and clients receive is unchanged
    assert orjson.dumps(got) == orjson.dumps(want)


def test_fast_path_meta_equals_syscall_event() -> None:
    """The pipeline's inline event build for I/O syscalls == events.syscall_event."""
    clock = Clock()
    red = FakeRedactor()
    for nr in IO:
        for flags in (0, 2):
            for ret in (-4096, -4095, -11, -1, 0, 7):
                for lat in (0, 1, 999, 1234567, 2**40 + 3):
                    raw = sys_rec(nr, 5, ret, b"", flags, arg=0x7F00, lat=lat, pid=99999)
                    p = Pipeline(red, [], Enricher(procfs=DATA / "proc"))
                    p.clock = clock
                    (ev,) = p.process([raw])
                    rec = decode(raw)
                    assert isinstance(rec, SyscallRecord)
                    assert list(ev.items()) == list(syscall_event(rec, clock, red).items())
