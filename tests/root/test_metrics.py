"""Prometheus endpoint: served on the configured address, counters read at scrape time."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

from tests.root.conftest import TraceStream


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def test_metrics_scrape_reflects_activity(daemon_factory: Any, workload: Any) -> None:
    port = free_port()
    d = daemon_factory(config_text=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    text = scrape(port)
    assert "periscope_probes_attached 0.0" in text
    assert "periscope_sessions 0.0" in text
    assert "periscope_tls_attach_failed 0.0" in text
    w = workload("import os\nfor _ in range(50):\n    os.write(1, b'.')\n")
    t = TraceStream(d, "-p", str(w.pid), "-d", "3s")
    t.wait_started()
    live = scrape(port)
    assert "periscope_probes_attached 1.0" in live, d.log_text()
    w.go()
    t.finish()
    text = scrape(port)
    assert 'periscope_kernel_records_total{outcome="emitted"}' in text
    assert 'periscope_pipeline_total{counter="events"}' in text
    assert 'periscope_server_total{counter="op_trace"} 1.0' in text
    # where the daemon's CPU goes, per thread (names are ours, never traced data)
    assert 'periscope_thread_cpu_seconds_total{thread="pipeline"}' in text
