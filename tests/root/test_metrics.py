"""Prometheus endpoint: served on the configured address, values read at scrape time.

A real daemon traces a workload whose syscalls the test knows; the scrape is parsed with
prometheus_client's parser and every counter and histogram is compared with what the
session streamed (never matched as text), and `promtool check metrics` passes on it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from collector.serve.red import SYSCALL_BUCKETS, SYSCALL_CLASS
from tests.root.conftest import TraceStream, wait_for

WRITES = 50
FAILED_READS = 7
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def parse(text: str) -> Samples:
    """{(sample name, sorted labels): value} of one scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def scrape(port: int) -> Samples:
    return parse(scrape_text(port))


def value(got: Samples, name: str, **labels: str) -> float | None:
    return got.get((name, tuple(sorted(labels.items()))))


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, ("promtool not found: run vagrant/provision.sh test (it extracts promtool "
                      "from Debian's prometheus package)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_metrics_move_by_what_the_workload_did(daemon_factory: Any, workload: Any) -> None:
    port = free_port()
    d = daemon_factory(config_text=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    idle_text = scrape_text(port)
    promtool_check(idle_text)
    idle = parse(idle_text)
    assert value(idle, "periscope_probes_attached") == 0
    assert value(idle, "periscope_sessions", level="meta", export="none") == 0
    ready = value(idle, "periscope_ready_seconds")
    assert ready is not None and 0 < ready < 30
    w = workload(f"import os\nfor _ in range({WRITES}):\n    os.write(1, b'.')\n"
                 f"for _ in range({FAILED_READS}):\n"
                 "    try:\n        os.read(987, 1)\n    except OSError:\n        pass\n")
    t = TraceStream(d, "-p", str(w.pid), "-d", "3s")
    t.wait_started()
    live = scrape(port)
    assert value(live, "periscope_probes_attached") == 1, d.log_text()
    assert value(live, "periscope_sessions", level="meta", export="none") == 1
    assert value(live, "periscope_sessions_started_total", level="meta", export="none") == 1
    size = value(live, "periscope_ring_buffer_size_bytes")
    assert size is not None and size >= 4096
    w.go()
    _rc, events, _err = t.finish()
    mine = [e for e in events if e["pid"] == w.pid]
    assert len([e for e in mine if e.get("syscall") == "write"]) == WRITES
    assert len([e for e in mine if e.get("errno") == "EBADF"]) == FAILED_READS

    def drained() -> Samples | None:
        got = scrape(port)
        received = value(got, "periscope_events_received_total") or 0
        emitted = value(got, "periscope_kernel_records_emitted_total") or 0
        ended = value(got, "periscope_sessions_ended_total", reason="deadline")
        settled = (received + (value(got, "periscope_events_dropped_total",
                                     reason="overload") or 0) == emitted)
        return got if ended == 1 and settled and not value(got, "periscope_pipeline_backlog") \
            else None

    wait_for(drained, 20, what="the pipeline to drain")
    done_text = scrape_text(port)
    promtool_check(done_text)
    done = parse(done_text)
    for reason in ("ringbuf", "inflight", "overload"):  # nothing lost: exact figures below
        assert value(done, "periscope_events_dropped_total", reason=reason) == 0, reason
    assert value(done, "periscope_events_skipped_total", reason="rate") == 0

    # Per target and syscall class: exactly what the session streamed (one target only).
    timed = [e for e in events if "latency_us" in e]
    assert timed and {e["pid"] for e in timed} == {w.pid}
    target = timed[0].get("unit") or timed[0]["comm"]
    classes = {SYSCALL_CLASS.get(e["syscall"], "other") for e in timed}
    assert "io" in classes
    for cls in classes:
        mine_cls = [e for e in timed if SYSCALL_CLASS.get(e["syscall"], "other") == cls]
        labels = {"target": target, "class": cls}
        assert value(done, "periscope_syscall_duration_seconds_count", **labels) == len(mine_cls)
        got_sum = value(done, "periscope_syscall_duration_seconds_sum", **labels)
        assert got_sum is not None
        assert abs(got_sum - sum(e["latency_us"] for e in mine_cls) / 1e6) < 1e-9
        for le in SYSCALL_BUCKETS:
            within = sum(1 for e in mine_cls if e["latency_us"] <= round(le * 1e6))
            assert value(done, "periscope_syscall_duration_seconds_bucket", **labels,
                         le=floatToGoString(le)) == within, (cls, le)
        errors = sum(1 for e in mine_cls if "errno" in e)
        assert (value(done, "periscope_syscall_errors_total", **labels) or 0) == errors
    io_errors = value(done, "periscope_syscall_errors_total", target=target, **{"class": "io"})
    assert io_errors is not None and io_errors >= FAILED_READS

    # The pipeline, the store and the server counted the same events.
    decoded = value(done, "periscope_events_decoded_total")
    assert decoded is not None and decoded >= len(events)
    assert value(done, "periscope_store_events_written_total") == decoded
    assert value(done, "periscope_store_events") == decoded
    size_bytes = value(done, "periscope_store_size_bytes")
    assert size_bytes is not None and size_bytes > 0
    assert value(done, "periscope_requests_total", op="trace") == 1
    assert value(done, "periscope_sessions", level="meta", export="none") == 0
    assert value(done, "periscope_session_duration_seconds_count") == 1
    audit_lines = (d.state / "audit.log").read_text().splitlines()
    assert value(done, "periscope_audit_records_total") == len(audit_lines)
    assert value(done, "periscope_audit_write_failures_total") == 0
    # The daemon process itself, from prometheus_client's ProcessCollector.
    rss = value(done, "process_resident_memory_bytes")
    assert rss is not None and rss > 10 << 20
    assert (value(done, "process_open_fds") or 0) > 3
    cpu = value(done, "periscope_thread_cpu_seconds_total", thread="pipeline")
    assert cpu is not None and cpu > 0
    # Label values: fixed names and the target table only (no pid, path or peer).
    for (name, labels), _v in done.items():
        for key, label in labels:
            assert str(w.pid) not in label or key == "le", (name, labels)
            assert "/" not in label, (name, labels)
