"""Per-target rate limit: excess syscalls are skipped in the kernel and every skip counted."""

from __future__ import annotations

from typing import Any

from tests.root.conftest import TraceStream

LIMIT = 1000          # syscalls/s -> a budget of 100 per 100 ms kernel slice
SLICE_BUDGET = LIMIT // 10

WRITER = """
import os, time
fd = os.open('/dev/null', os.O_WRONLY)
n = 0
end = time.monotonic() + 1.5
while time.monotonic() < end:
    os.write(fd, b'x' * 64)
    n += 1
print(fd, n)
"""


def test_rate_limit_bounds_records_and_counts_every_skip(daemon_factory: Any,
                                                         workload: Any) -> None:
    d = daemon_factory(config_text=f"[capture]\nrate_limit = {LIMIT}\n")
    w = workload(WRITER)
    t = TraceStream(d, "-p", str(w.pid), "-d", "8s", "--level", "payload", "--reason", "test")
    t.wait_started()
    rc, out, err = w.go()
    assert rc == 0, err
    fd, n = (int(x) for x in out.split())
    _rc, events, trace_err = t.finish()
    status = d.request("status")["result"]
    skipped = status["kernel"]["skipped_rate"]

    writes = [e for e in events if e.get("syscall") == "write" and e.get("fd") == fd]
    assert n > 10 * LIMIT, "the writer was too slow to exceed the limit"
    assert 0 < len(writes) < n
    # Every write was either recorded or skipped and counted (other syscalls add skips).
    assert len(writes) + skipped >= n, (len(writes), skipped, n)
    # A single-threaded target cannot overshoot: any 100 ms window spans at most two
    # kernel slices, so it holds at most two budgets of records.
    stamps = sorted(e["ts"] for e in events if e["kind"] == "syscall")
    lo = 0
    for hi, ts in enumerate(stamps):
        while ts - stamps[lo] >= 0.1:
            lo += 1
        assert hi - lo + 1 <= 2 * SLICE_BUDGET, f"{hi - lo + 1} records within 100 ms"
    # The client is told what its stream is missing when the session ends.
    assert "syscalls skipped by the rate limit (capture.rate_limit)" in trace_err, trace_err
    # Lifecycle records are never limited: the exit is still reported.
    assert any(e["kind"] == "exit" and e["pid"] == w.pid for e in events)
