"""The observer hook: stages such as the L7 parsers see raw captured bytes, their records
join the batch enriched like events, and shedding reaches them as a gap."""

from __future__ import annotations

from typing import Any

from collector.capture.events import Event, printable
from collector.capture.pipeline import Pipeline
from collector.proc.facts import Enricher
from probes.layout import F_DATA_OUT, F_PAYLOAD, F_TRUNCATED, Sc
from redact import Redactor
from tests.unit.capture.test_pipeline import FAKE_PROC, rec


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[Event, bytes | None, int]] = []
        self.pending: list[Event] = []
        self.ignored_fds: dict[int, set[int]] = {}

    def observe(self, ev: Event, data: bytes | None, missing: int) -> None:
        self.seen.append((dict(ev), data, missing))
        if data:
            self.pending.append({"kind": "l7", "pid": ev["pid"], "ts": ev["ts"],
                                 "proto": "test", "req_bytes": len(data)})

    def collect(self, now: float) -> list[Event]:
        out, self.pending = self.pending, []
        return out


def make(observer: Any) -> Pipeline:
    return Pipeline(Redactor.default(), [], Enricher(procfs=FAKE_PROC),
                    observers=[observer])


def test_observers_see_raw_bytes_and_every_event_in_order() -> None:
    o = Recorder()
    secret = b"Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123456789\n"
    batch = [rec(Sc.WRITE, 5, len(secret), secret, F_PAYLOAD | F_DATA_OUT),
             rec(Sc.CLOSE, 5, 0),
             rec(Sc.READ, 6, 300, b"x" * 256, F_PAYLOAD | F_TRUNCATED)]
    events = make(o).process(batch)
    assert [ev["syscall"] for ev, _d, _m in o.seen] == ["write", "close", "read"]
    # the observer gets the raw bytes (it frames on them); the event holds them redacted
    assert o.seen[0][1] == secret and o.seen[0][2] == 0
    assert "abcdefghijklmnop" not in str(events[0])
    assert o.seen[1][1] is None and o.seen[1][2] == 0
    assert o.seen[2][1] == b"x" * 256 and o.seen[2][2] == 44
    # its records follow the batch's events, enriched from the fake procfs
    extra = [e for e in events if e["kind"] == "l7"]
    assert [e["req_bytes"] for e in extra] == [len(secret), 256]
    assert all(e["comm"] == events[0]["comm"] for e in extra)


def test_io_on_the_fds_an_observer_ignores_does_not_reach_it() -> None:
    """Reads and writes of an ignored fd (a file the L7 stage saw is no socket) are not
    handed to it; that fd's close, another fd's I/O and another process's are."""
    o = Recorder()
    p = make(o)
    o.ignored_fds[4242] = {5}
    o.ignored_fds[4243] = {6}
    events = p.process([rec(Sc.WRITE, 5, 3, b"abc", F_PAYLOAD | F_DATA_OUT),
                        rec(Sc.READ, 6, 3, b"def", F_PAYLOAD),
                        rec(Sc.READ, 5, 3, b"ghi", F_PAYLOAD),
                        rec(Sc.WRITE, 5, 3, b"jkl", F_PAYLOAD | F_DATA_OUT, pid=4243),
                        rec(Sc.CLOSE, 5, 0)])
    assert [(ev["syscall"], ev["pid"], ev["fd"]) for ev, _d, _m in o.seen] == \
        [("read", 4242, 6), ("write", 4243, 5), ("close", 4242, 5)]
    # the events themselves are all there, their bytes captured
    assert [(ev["syscall"], ev["captured"]) for ev in events if "captured" in ev] == \
        [("write", 3), ("read", 3), ("read", 3), ("write", 3)]


def test_procs_stay_in_step_with_observer_records() -> None:
    o = Recorder()
    procs: list[Any] = []
    events = make(o).process([rec(Sc.WRITE, 5, 3, b"abc", F_PAYLOAD | F_DATA_OUT)],
                             procs=procs)
    assert len(events) == len(procs) == 2
    assert procs[1] is procs[0]


def test_shed_payload_reaches_observers_as_a_gap() -> None:
    o = Recorder()
    make(o).process([rec(Sc.READ, 6, 40, b"y" * 40, F_PAYLOAD)], shed_payload=True)
    (_ev, data, missing), = o.seen
    assert data is None and missing == 40


def test_events_show_the_targets_cap_observers_get_all_the_kernel_copied() -> None:
    """A connection with a raised cap: the kernel copied 38 of 60 bytes, events show 16 of
    them (the targets' cap) and a gap, the L7 observer parses all 38."""
    o = Recorder()
    p = Pipeline(Redactor.default(), [], Enricher(procfs=FAKE_PROC), observers=[o],
                 event_cap=16)
    data = b"GET /a HTTP/1.1\r\nHost: example.org\r\n\r\n"
    (ev, *_rest) = p.process([rec(Sc.READ, 6, 60, data, F_PAYLOAD | F_TRUNCATED)])
    assert ev["captured"] == 16 and ev["truncated"] is True
    assert o.seen[0][1] == data and len(data) == 38 and o.seen[0][2] == 60 - 38


def test_bytes_past_the_event_cap_are_redacted_not_a_gap() -> None:
    """Heads longer than the targets' cap on a connection the kernel copies whole: each
    event shows the first event_cap bytes of the redacted head. Fed as a gap, the next
    head's first line would be dropped (the stream cannot know where the gap ended)."""
    p = Pipeline(Redactor.default(), [], Enricher(procfs=FAKE_PROC), event_cap=48)
    head = b"GET /a HTTP/1.1\r\nCookie: sid=Zq9hunter2Xv\r\nHost: example.org\r\n\r\n"
    evs = p.process([rec(Sc.READ, 6, len(head), head, F_PAYLOAD) for _ in range(3)])
    assert len(head) > 48 and len(evs) == 3
    shown = printable(Redactor.default().redact(head)[:48])
    assert shown.startswith("GET /a HTTP/1.1\\r\\nCookie: [REDACTED:cookie]")
    for ev in evs:
        assert ev["payload"] == shown
        assert ev["captured"] == 48 and ev["truncated"] is True
