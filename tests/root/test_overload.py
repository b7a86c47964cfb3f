"""Overload: the kernel sheds a target's I/O syscalls while the pipeline is behind, counts
each one, and still records what keeps the daemon's view of processes and fds right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.root.conftest import TraceStream, wait_for

# Flat out for 1 s: a Python write loop makes several times what the pipeline takes, so
# its queue passes half full. Every 256 writes, an open and a close (never shed).
WRITER = """
import os, time
fd = os.open('/dev/null', os.O_WRONLY)
n = opens = 0
end = time.monotonic() + 1.0
while time.monotonic() < end:
    os.write(fd, b'x' * 64)
    n += 1
    if n % 256 == 0:
        os.close(os.open('/dev/null', os.O_RDONLY))
        opens += 1
print(fd, n, opens)
"""


def test_overload_sheds_io_at_the_source_counted_and_keeps_opens_and_closes(
        daemon_factory: Any, workload: Any, tmp_path: Path) -> None:
    # The client reads slower than the pipeline delivers: a deep send buffer keeps it on.
    d = daemon_factory(config_text="[capture]\nrate_limit = 0\n"
                       "[server]\nsend_buffer_events = 1048576\n")
    w = workload(WRITER)
    t = TraceStream(d, "-p", str(w.pid), "-d", "20s", "--level", "meta", "--reason",
                    "overload test", out=tmp_path / "events.jsonl")
    t.wait_started()
    rc, res, err = w.go()
    assert rc == 0, err
    fd, n, opens = (int(x) for x in res.split())

    def drained() -> bool:
        st = d.request("status")["result"]
        k, p = st["kernel"], st["pipeline"]
        return (p.get("received", 0) + p.get("dropped_overload", 0) == k["emitted"]
                and p.get("backlog", 0) == 0)

    wait_for(drained, 60, interval=0.2, what="the pipeline to drain")
    # The session's deadline: by then the client has read everything queued for it
    # (~250k events; a deadline ends the stream where it is).
    _rc, events, client_err = t.finish()
    st = d.request("status")["result"]
    k, p = st["kernel"], st["pipeline"]
    mine = [e for e in events if e.get("pid") == w.pid and e["kind"] == "syscall"]
    writes = sum(1 for e in mine if e["syscall"] == "write" and e.get("fd") == fd)
    assert "slow" not in client_err, client_err
    # The pipeline fell behind and the kernel shed: the writer's writes are recorded or
    # counted as shed (the interpreter's other reads and writes add to both).
    assert k["shed_overload"] > 0 and 0 < writes < n, (k, writes, n)
    assert writes + k["shed_overload"] + p.get("dropped_overload", 0) + k["drop_ringbuf"] >= n
    # emitted = received + dropped_overload: nothing vanished between kernel and pipeline
    assert p["received"] + p.get("dropped_overload", 0) == k["emitted"]
    # Opens and closes are never shed: every one is there unless records were dropped
    # (a full ring or queue: counted, of any kind). got: the loop's and the first one.
    got = sum(1 for e in mine if e["syscall"] == "openat" and e.get("path") == "/dev/null")
    closes = sum(1 for e in mine if e["syscall"] == "close" and e.get("fd") != fd)
    if not p.get("dropped_overload", 0) and not k["drop_ringbuf"]:
        assert got > opens and closes >= opens, (got, closes, opens, k, p)
    # Shedding stopped once the pipeline caught up: the next syscalls are recorded again.
    before = k["shed_overload"]
    w2 = workload("import os\nfd = os.open('/dev/null', os.O_WRONLY)\n"
                  "for _ in range(100): os.write(fd, b'y')\nprint(fd)\n")
    t2 = TraceStream(d, "-p", str(w2.pid), "-d", "3s", "--level", "meta", "--reason",
                     "overload test")
    t2.wait_started()
    rc, res2, err = w2.go()
    assert rc == 0, err
    fd2 = int(res2)
    _rc, after, _err = t2.finish()
    assert sum(1 for e in after if e.get("pid") == w2.pid and e.get("syscall") == "write"
               and e.get("fd") == fd2) == 100
    assert d.request("status")["result"]["kernel"]["shed_overload"] == before
