"""Pipeline on synthetic kernel records: decode errors counted, payload redacted via streams."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson

from collector.capture.events import Batch
from collector.capture.pipeline import Pipeline
from collector.proc.facts import Enricher, ProcFacts
from collector.proc.resolve import Resolver
from probes.layout import F_DATA_OUT, F_PAYLOAD, F_TRUNCATED, HDR, LAYOUT_VERSION, SYS, Op, Sc
from redact import Redactor

FAKE_PROC = Path(__file__).parents[2] / "data" / "proc"


def rec(nr: Sc, fd: int, ret: int, data: bytes = b"", flags: int = 0, pid: int = 4242,
        arg: int = 0, comm: bytes = b"", cgroup_id: int = 0) -> bytes:
    body = SYS.pack(nr, flags, fd, ret, 1500, arg, len(data), 0)
    return HDR.pack(Op.SYSCALL, LAYOUT_VERSION, HDR.size + len(body) + len(data), 9, 10**9, pid,
                    pid, cgroup_id, comm) + body + data


def make() -> Pipeline:
    return Pipeline(Redactor.default(), [], Enricher(procfs=FAKE_PROC))


def test_secret_split_across_writes_never_appears() -> None:
    p = make()
    part1 = b"POST /login HTTP/1.1\r\nAuthorization: Bearer abcdefghij"
    part2 = b"klmnopqrstuvwxyz0123456789\r\nHost: x\r\n\r\n"
    out = p.process([rec(Sc.WRITE, 5, len(part1), part1, F_PAYLOAD | F_DATA_OUT, arg=len(part1)),
                     rec(Sc.WRITE, 5, len(part2), part2, F_PAYLOAD | F_DATA_OUT, arg=len(part2)),
                     rec(Sc.CLOSE, 5, 0)])
    text = "".join(str(e.get("payload", "")) for e in out)
    assert "abcdefghijklmnop" not in text and "klmnopqrstuvwxyz" not in text
    assert "[REDACTED:" in text
    assert "POST /login HTTP/1.1" in text
    assert out[0]["comm"] == "fakesrv" and out[0]["unit"] == "shop.service"


def test_truncated_payload_fails_closed() -> None:
    p = make()
    data = b"password=hunter2hunter2"[:12]  # "password=hun" then the rest was not captured
    out = p.process([rec(Sc.WRITE, 3, 500, data, F_PAYLOAD | F_DATA_OUT | F_TRUNCATED, arg=500),
                     rec(Sc.CLOSE, 3, 0)])
    text = "".join(str(e.get("payload", "")) for e in out)
    assert "hun" not in text.replace("[REDACTED", "")
    assert out[0]["truncated"] is True


def test_decode_errors_are_counted_not_raised() -> None:
    p = make()
    bad_op = HDR.pack(77, LAYOUT_VERSION, HDR.size, 0, 0, 1, 1, 0, b"")
    assert p.process([b"", b"\x01" * 30, bad_op]) == []
    assert p.counters["decode_short"] == 2
    assert p.counters["decode_unknown_op"] == 1


def test_enrichment_miss_gives_partial_record() -> None:
    p = make()
    out = p.process([rec(Sc.CLOSE, 3, -9, pid=99999)])
    assert out[0]["errno"] == "EBADF" and "comm" not in out[0]
    assert p.enricher.misses == 1


def test_overload_sheds_and_counts() -> None:
    p = Pipeline(Redactor.default(), [], Enricher(procfs=FAKE_PROC), queue_max=1024)
    batch = [rec(Sc.CLOSE, 3, 0)] * 600
    p.submit(batch)
    p.submit(batch)  # exceeds the cap: dropped whole, counted
    assert p.counters["received"] == 600
    assert p.counters["dropped_overload"] == 600


def test_the_kernel_sheds_from_half_the_queue_until_an_eighth() -> None:
    p = Pipeline(Redactor.default(), [], Enricher(procfs=FAKE_PROC), queue_max=1000)
    answers = []
    for queued in (0, 500, 501, 300, 126, 125, 400, 500, 501):
        p._queued = queued  # what the worker's pops leave; the rule alone is tested here
        answers.append(p.overloaded())
    assert answers == [False, False, True, True, True, False, False, False, True]


def test_a_loss_reaches_the_observers_once_between_the_batches_around_it() -> None:
    seen: list[object] = []

    class Observer:
        ignored_fds: dict[int, set[int]] = {}

        def observe(self, ev: dict[str, object], data: bytes | None, missing: int) -> None:
            seen.append(ev["ret"])

        def collect(self, now: float) -> list[dict[str, object]]:
            return []

        def lost(self) -> None:
            seen.append("lost")

    p = Pipeline(Redactor.default(), [], Enricher(procfs=FAKE_PROC), queue_max=1024,
                 observers=[Observer()])
    p.submit([rec(Sc.CLOSE, 3, -1)] * 600)
    p.submit([rec(Sc.CLOSE, 3, -2)] * 600)  # dropped: a loss here ...
    p.shed_ended()  # ... and the kernel's shedding ended at the same point: one loss
    p.submit([rec(Sc.CLOSE, 3, -3)] * 400)
    p.start()
    p.stop()
    assert seen == [-1] * 600 + ["lost"] + [-3] * 400
    assert p.counters["received"] == 1000 and p.counters["dropped_overload"] == 600
    assert p.counters["pipeline_errors"] == 0


def test_sinks_get_every_event_in_order_on_their_own_thread() -> None:
    got: list[int] = []
    threads: set[str] = set()

    def sink(batch: Batch) -> None:
        threads.add(threading.current_thread().name)
        evs, procs = batch.events, batch.procs
        got.extend(int(str(e["ret"])) for e in evs)
        # serialized once for every sink: the batch's JSON is exactly its events
        assert batch.json() is batch.json() and orjson.loads(batch.json()) == evs
        # and each event comes with the facts of its process, as read at capture
        assert [(f.pid, f.comm, f.exe, f.cgroup) if f else None for f in procs] == [
            (4242, "fakesrv", None, "/system.slice/shop.service")] * len(evs)

    p = Pipeline(Redactor.default(), [sink], Enricher(procfs=FAKE_PROC))
    p.start()
    for i in range(50):
        p.submit([rec(Sc.CLOSE, 3, -(i * 10 + j) - 1) for j in range(10)])
    p.stop()
    assert got == [-(k + 1) for k in range(500)]
    assert threads == {"pipeline-sinks"}
    assert p.backlog() == 0


def test_slow_sinks_back_up_into_counted_overload_never_silent_loss() -> None:
    gate = threading.Event()
    delivered: list[dict[str, object]] = []

    def slow(batch: Batch) -> None:
        gate.wait(10)
        delivered.extend(batch.events)

    p = Pipeline(Redactor.default(), [slow], Enricher(procfs=FAKE_PROC), queue_max=1024)
    p.start()
    sent = 0
    deadline = time.monotonic() + 10
    while not p.counters["dropped_overload"] and time.monotonic() < deadline:
        p.submit([rec(Sc.CLOSE, 3, -9)] * 100)
        sent += 100
        time.sleep(0.001)
    assert p.counters["sink_waits"] >= 1  # the worker waited for the sinks ...
    assert p.counters["dropped_overload"] > 0  # ... so the input queue filled: counted drops
    assert p.backlog() > 0
    gate.set()
    p.stop()
    assert p.counters["received"] + p.counters["dropped_overload"] == sent
    assert len(delivered) == p.counters["received"] == p.counters["events"]


def test_a_process_gone_from_proc_is_named_by_the_kernel(tmp_path: Path) -> None:
    """pid 99999 is not in the fake procfs (it exited before enrichment): its comm and unit
    come from the record header (the comm, and the cgroup id found in cgroupfs); a live
    process keeps its /proc comm (the header's is the thread's name)."""
    unit_dir = tmp_path / "cg" / "system.slice" / "batch.service"
    unit_dir.mkdir(parents=True)
    resolver = Resolver(FAKE_PROC, tmp_path / "cg")
    enricher = Enricher(procfs=FAKE_PROC, cgroup_path=resolver.cgroup_path)
    p = Pipeline(Redactor.default(), [], enricher)
    procs: list[ProcFacts | None] = []
    gone = rec(Sc.WRITE, 1, 5, pid=99999, comm=b"cronjob", cgroup_id=unit_dir.stat().st_ino)
    live = rec(Sc.WRITE, 1, 5, pid=4242, comm=b"worker-thread-3")
    out = p.process([gone, rec(Sc.CLOSE, 1, 0, pid=99999, comm=b"cronjob"), live], procs=procs)
    assert [(e["pid"], e.get("comm"), e.get("unit")) for e in out] == [
        (99999, "cronjob", "batch.service"), (99999, "cronjob", "batch.service"),
        (4242, "fakesrv", "shop.service")]
    facts = procs[0]
    assert facts is not None and facts.comm == "cronjob"
    assert facts.cgroup == "/system.slice/batch.service" and facts.unit == "batch.service"
    assert enricher.kernel_named == 1
    # the next batch still knows it (cached), a record without a comm leaves it unnamed
    assert p.process([rec(Sc.WRITE, 1, 5, pid=99999)])[0]["comm"] == "cronjob"
    assert "comm" not in p.process([rec(Sc.WRITE, 1, 5, pid=99998)])[0]
