"""/metrics values, read with get_sample_value from a fresh registry over a real daemon's
parts (fake probe): each equals the counter or state it reports."""

from __future__ import annotations

from collector.serve.metrics import registry
from probes.layout import F_DATA_OUT, F_PAYLOAD, Sc
from tests.unit.pipeline_corpus import sys_rec
from tests.unit.serve.conftest import Host, capture


def test_metrics_report_the_daemons_counters(host: Host) -> None:
    svc = host.svc
    reg = registry(svc)
    value = reg.get_sample_value
    assert value("periscope_probes_attached") == 0
    assert value("periscope_sessions") == 0
    assert value("periscope_stored_events") == 0
    assert value("periscope_kernel_records_total", {"outcome": "emitted"}) is None  # no probe

    capture(host, [sys_rec(Sc.WRITE, 3, 4, b"ab\n!", F_PAYLOAD | F_DATA_OUT, arg=4)] * 3
            + [b"\x01" * 10])
    svc.counters["op_events"] += 2
    svc.tracer.acquire("s1", "pid", "4242", 0)
    host.probes[0].counts["emitted"] = 41
    host.probes[0].counts["skipped_rate"] = 7

    assert value("periscope_probes_attached") == 1
    assert value("periscope_stored_events") == 3 == svc.store.count()
    assert value("periscope_pipeline_total", {"counter": "events"}) == 3
    assert value("periscope_pipeline_total", {"counter": "decode_short"}) == 1
    assert value("periscope_server_total", {"counter": "op_events"}) == 2
    assert value("periscope_kernel_records_total", {"outcome": "emitted"}) == 41
    assert value("periscope_kernel_records_total", {"outcome": "skipped_rate"}) == 7
    assert value("periscope_pipeline_backlog") == 0
    assert value("periscope_l7_total", {"counter": "store_write_errors"}) == 0
    assert value("periscope_tls_attach_failed") == 0
    # where the daemon's CPU goes: this thread has used some
    cpu = value("periscope_thread_cpu_seconds_total", {"thread": "MainThread"})
    assert cpu is not None and cpu > 0
    svc.tracer.release("s1")
    assert value("periscope_probes_attached") == 0
    # after detach the kernel counters stay readable (as of the last detach)
    assert value("periscope_kernel_records_total", {"outcome": "emitted"}) == 41
