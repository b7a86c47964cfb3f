"""JSON log export: rotation, 0600, reopen after logrotate, a full disk counted, journald."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector import config
from collector.export import ExportError
from collector.export.jsonlog import Journal, JsonLogSink, RotatingFile, open_sink
from tests.unit.export import samples


def feed(sink: JsonLogSink, events: list[dict[str, Any]]) -> None:
    """What the export route hands over: the events; the writer thread serializes them."""
    sink(events)


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(ln) for ln in path.read_bytes().splitlines()]


def test_lines_are_the_events_in_a_0600_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    old = os.umask(0o022)
    try:
        sink = JsonLogSink(RotatingFile(str(path), 1 << 20, 3), 1000)
    finally:
        os.umask(old)
    sink.start()
    events = [samples.event(i) for i in range(100)] + [samples.failed_open()]
    feed(sink, events)
    sink.close()
    assert lines(path) == events
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sink.counters["jsonlog_written"] == 101 and sink.counters["jsonlog_dropped"] == 0


def test_an_existing_wider_file_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    path.chmod(0o644)
    RotatingFile(str(path), 1 << 20, 1).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rotation_keeps_n_files_each_under_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    events = [samples.event(i) for i in range(400)]
    size = len(orjson.dumps(events[0])) + 1
    max_bytes = size * 50 + size // 2  # 50 lines per file
    writer = RotatingFile(str(path), max_bytes, 3)
    sink = JsonLogSink(writer, 1000)
    sink.start()
    for i in range(0, 400, 7):  # many small batches, as the pipeline hands them over
        feed(sink, events[i:i + 7])
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= max_bytes
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    # Oldest first: .3 .2 .1 then the live file hold the newest events, contiguous; each
    # rotated file is full (the next line would not have fit).
    kept = [*lines(Path(f"{path}.3")), *lines(Path(f"{path}.2")), *lines(Path(f"{path}.1")),
            *lines(path)]
    assert kept == events[-len(kept):]
    for n in (1, 2, 3):
        assert Path(f"{path}.{n}").stat().st_size > max_bytes - size - 8
    assert writer.rotations >= 7
    assert sink.counters["jsonlog_written"] == 400


def test_keep_zero_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    events = [samples.event(i) for i in range(20)]
    size = len(orjson.dumps(events[0])) + 1
    writer = RotatingFile(str(path), size * 10, 0)
    writer.write([orjson.dumps(ev) for ev in events])
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]
    got = lines(path)
    assert 0 < len(got) <= 10 and got == events[-len(got):]


def test_reopens_after_logrotate_moved_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = RotatingFile(str(path), 1 << 20, 2)
    writer.write([orjson.dumps(samples.event(0))])
    path.rename(tmp_path / "events.jsonl-20261201")  # what logrotate does
    writer.write([orjson.dumps(samples.event(1))])
    writer.close()
    assert lines(path) == [samples.event(1)]
    assert lines(tmp_path / "events.jsonl-20261201") == [samples.event(0)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_full_disk_is_counted_and_capture_goes_on() -> None:
    """/dev/full fails every write with ENOSPC, like a full file system."""
    sink = JsonLogSink(RotatingFile("/dev/full", 4096, 2), 1000)
    sink.start()
    for i in range(10):
        feed(sink, [samples.event(i * 10 + j) for j in range(10)])  # never raises
    sink.close()
    assert sink.counters["jsonlog_written"] == 0
    assert sink.counters["jsonlog_dropped"] == sink.counters["jsonlog_dropped_write_error"] == 100
    assert sink.counters["jsonlog_failed"] >= 1


class FlakyFile(RotatingFile):
    """A file whose disk fills after `room` bytes: a short write, then ENOSPC, then space
    again (files were removed)."""

    def __init__(self, path: str, room: int) -> None:
        super().__init__(path, 1 << 20, 1)
        self.room = room

    def _write_some(self, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = super()._write_some(data[:self.room])
        self.room -= n
        return n


def test_a_short_write_leaves_no_merged_line_behind(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = FlakyFile(str(path), 0)
    body = [orjson.dumps(samples.event(i)) for i in range(3)]
    writer.room = len(body[0]) + 1 + 10  # one line and 10 bytes of the next fit
    with pytest.raises(OSError) as err:
        writer.write(body)
    assert getattr(err.value, "done", None) == 1
    writer.room = 1 << 20
    writer.write([orjson.dumps(samples.event(9))])
    writer.close()
    got = path.read_bytes().splitlines()
    assert orjson.loads(got[0]) == samples.event(0)
    assert got[1] == body[1][:10]  # the cut line stands alone...
    assert orjson.loads(got[2]) == samples.event(9)  # ...and the next one is whole


def test_a_full_queue_drops_new_lines_and_counts_them(tmp_path: Path) -> None:
    sink = JsonLogSink(RotatingFile(str(tmp_path / "e.jsonl"), 1 << 20, 1), 50)
    feed(sink, [samples.event(i) for i in range(80)])  # not started: nothing drains
    assert sink.backlog() == 50
    assert sink.counters["jsonlog_dropped_queue_full"] == 30
    sink.start()
    sink.close()
    assert lines(tmp_path / "e.jsonl") == [samples.event(i) for i in range(50)]
    feed(sink, [samples.event(0)])  # after close: counted, not written
    assert sink.counters["jsonlog_dropped_shutdown"] == 1
    c = sink.counters
    assert c["jsonlog_written"] + c["jsonlog_dropped"] == 81


def test_journald_entries_carry_structured_fields() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    def fake_send(message: str, **fields: Any) -> None:
        sent.append((message, fields))

    sink = JsonLogSink(Journal(send=fake_send), 100)
    sink.start()
    events = [samples.event(0), samples.failed_open()]
    feed(sink, events)
    sink.close()
    assert [orjson.loads(m) for m, _ in sent] == events
    _msg, f = sent[0]
    assert f["SYSLOG_IDENTIFIER"] == "periscope-events" and f["PRIORITY"] == 6
    assert f["PERISCOPE_KIND"] == "syscall" and f["PERISCOPE_PID"] == "100"
    assert f["PERISCOPE_UNIT"] == "checkout.service"
    assert "PERISCOPE_PAYLOAD" not in f  # payload only in MESSAGE, not twice
    assert all(k.isupper() or "_" in k for k in f)
    assert sent[1][1]["PRIORITY"] == 4 and sent[1][1]["PERISCOPE_ERRNO"] == "ENOENT"
    assert sink.counters["jsonlog_written"] == 2


def test_journald_failures_are_counted() -> None:
    calls = 0

    def send(message: str, **fields: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise OSError(errno.EAGAIN, "journal socket full")

    sink = JsonLogSink(Journal(send=send), 100)
    sink.start()
    feed(sink, [samples.event(i) for i in range(10)])
    sink.close()
    assert sink.counters["jsonlog_written"] == 3
    assert sink.counters["jsonlog_dropped_write_error"] == 7


def test_journald_without_python_systemd_is_a_clear_error(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    import sys
    monkeypatch.setitem(sys.modules, "systemd", None)  # import systemd -> ImportError
    with pytest.raises(ExportError, match="needs python3-systemd"):
        Journal()


def test_open_sink_follows_the_config(tmp_path: Path) -> None:
    cfg = config.load(text="").export.jsonlog
    assert open_sink(cfg) is None  # off by default
    on = config.load(text=f'[export.jsonlog]\npath = "{tmp_path}/e.jsonl"\nkeep = 2\n')
    sink = open_sink(on.export.jsonlog)
    assert isinstance(sink, JsonLogSink) and isinstance(sink.writer, RotatingFile)
    assert sink.writer.keep == 2
    sink.close()
    missing = config.load(text='[export.jsonlog]\npath = "/nonexistent/dir/e.jsonl"\n')
    with pytest.raises(ExportError, match=r"export\.jsonlog\.path=.*cannot open"):
        open_sink(missing.export.jsonlog)
