"""Prometheus endpoint: served on the configured address, values read at scrape time.

Values are parsed from the exposition (prometheus_client's parser) and compared with
what the test did, not matched as text."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.root.conftest import TraceStream

WRITES = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    return got.get((name, tuple(sorted(labels.items()))))


def test_metrics_scrape_reflects_activity(daemon_factory: Any, workload: Any) -> None:
    port = free_port()
    d = daemon_factory(config_text=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    idle = scrape(port)
    assert value(idle, "periscope_probes_attached") == 0
    assert value(idle, "periscope_sessions") == 0
    assert value(idle, "periscope_tls_attach_failed") == 0
    w = workload(f"import os\nfor _ in range({WRITES}):\n    os.write(1, b'.')\n")
    t = TraceStream(d, "-p", str(w.pid), "-d", "3s")
    t.wait_started()
    live = scrape(port)
    assert value(live, "periscope_probes_attached") == 1, d.log_text()
    assert value(live, "periscope_sessions") == 1
    w.go()
    _rc, events, _err = t.finish()
    writes = [e for e in events if e.get("syscall") == "write" and e["pid"] == w.pid]
    assert len(writes) == WRITES
    done = scrape(port)
    # the kernel emitted at least the writes we saw; the pipeline turned every record it
    # received into an event or a counted drop; the server counted exactly one trace
    emitted = value(done, "periscope_kernel_records_total", outcome="emitted")
    assert emitted is not None and emitted >= WRITES
    events_total = value(done, "periscope_pipeline_total", counter="events")
    assert events_total is not None and events_total >= len(events)
    assert value(done, "periscope_server_total", counter="op_trace") == 1
    stored = value(done, "periscope_stored_events")
    assert stored is not None and stored >= len(events)
    assert value(done, "periscope_sessions") == 0
    # where the daemon's CPU goes, per thread (names are ours, never traced data)
    cpu = value(done, "periscope_thread_cpu_seconds_total", thread="pipeline")
    assert cpu is not None and cpu > 0
