"""/metrics values, read with get_sample_value from a fresh registry over a real daemon's
parts (fake probe): each equals the counter or state it reports; the exposition follows
the conventions (one family per figure, base units, _total only on counters)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import collector
from collector.capture.events import Batch
from collector.export.jsonlog import JsonLogSink, RotatingFile
from collector.export.route import ExportRoute
from collector.protocol import LOSSES
from collector.selectors import Level
from collector.serve import metric_names
from collector.serve.metric_names import route
from collector.serve.metrics import registry, thread_label
from collector.serve.sessions import Session
from probes.layout import F_DATA_OUT, F_PAYLOAD, Sc, Stat
from tests.unit.pipeline_corpus import sys_rec
from tests.unit.serve.conftest import ROOT, Host, capture


def test_health_families_report_the_daemons_counters(host: Host) -> None:
    svc = host.svc
    reg = registry(svc)
    value = reg.get_sample_value
    assert value("periscope_probes_attached") == 0
    assert value("periscope_sessions", {"level": "meta", "export": "none"}) == 0
    assert value("periscope_store_events") == 0
    # every fixed series exists from the start, at 0 (no probe has run yet)
    assert value("periscope_kernel_records_emitted_total") == 0
    assert value("periscope_events_dropped_total", {"reason": "ringbuf"}) == 0

    capture(host, [sys_rec(Sc.WRITE, 3, 4, b"ab\n!", F_PAYLOAD | F_DATA_OUT, arg=4)] * 3
            + [b"\x01" * 10])
    svc.counters["op_events"] += 2
    svc.counters["fault_denied"] += 1
    svc.counters["idle_closed"] += 4
    svc.pipeline.counters["received"] += 4
    svc.tracer.acquire("s1", "pid", "4242", 0)
    host.probes[0].counts["emitted"] = 41
    host.probes[0].counts["skipped_rate"] = 7
    host.probes[0].counts["drop_ringbuf"] = 2
    host.probes[0].ring = (4096, 65536, 4 << 20)

    assert value("periscope_probes_attached") == 1
    assert value("periscope_probe_load_seconds") == 0.25
    assert value("periscope_probe_attaches_total") == 1
    assert value("periscope_store_events") == 3 == svc.store.count()
    assert value("periscope_store_events_written_total") == 3
    assert value("periscope_store_size_bytes") >= Path(svc.store.path).stat().st_size > 0
    assert value("periscope_events_received_total") == 4
    assert value("periscope_events_decoded_total") == 3
    assert value("periscope_events_dropped_total", {"reason": "decode_short"}) == 1
    assert value("periscope_events_dropped_total", {"reason": "ringbuf"}) == 2
    assert value("periscope_events_skipped_total", {"reason": "rate"}) == 7
    assert value("periscope_kernel_records_emitted_total") == 41
    assert value("periscope_requests_total", {"op": "events"}) == 2
    assert value("periscope_request_faults_total", {"fault": "denied"}) == 1
    assert value("periscope_connections_closed_total", {"reason": "idle"}) == 4
    assert value("periscope_ring_buffer_used_bytes") == 4096
    assert value("periscope_ring_buffer_used_max_bytes") == 65536
    assert value("periscope_ring_buffer_size_bytes") == 4 << 20
    assert value("periscope_pipeline_backlog") == 0
    # the L7 stage's and its store's counters, each in its family, there from the start
    assert value("periscope_l7_store_rows_lost_total") == 0
    assert value("periscope_l7_records_total") == 0
    svc.stage.counters["l7_detected_http"] += 2
    svc.stage.counters["l7_gaps"] += 3
    svc.stage.counters["fd_caps_raised"] += 4
    assert value("periscope_l7_protocols_detected_total", {"protocol": "http"}) == 2
    assert value("periscope_l7_parser_drops_total", {"reason": "gaps"}) == 3
    assert value("periscope_l7_capture_cap_raises_total", {"outcome": "raised"}) == 4
    assert value("periscope_tls_attach_failed") == 0
    assert value("periscope_grants") == 0
    # where the daemon's CPU goes: this thread has used some
    cpu = value("periscope_thread_cpu_seconds_total", {"thread": "MainThread"})
    assert cpu is not None and cpu > 0
    svc.tracer.release("s1")
    assert value("periscope_probes_attached") == 0
    assert value("periscope_ring_buffer_size_bytes") == 0
    # after detach the kernel counters stay readable (as of the last detach)
    assert value("periscope_kernel_records_emitted_total") == 41


def test_audit_records_and_failures(host: Host) -> None:
    value = registry(host.svc).get_sample_value
    audit = host.svc.gate.audit
    before = audit.records
    host.svc.gate.record(ROOT, "status", {}, allowed=True, reason="t")
    assert value("periscope_audit_records_total") == before + 1 == audit.records
    assert value("periscope_audit_write_failures_total") == 0


def test_sessions_and_their_instruments(host: Host) -> None:
    svc = host.svc
    value = registry(svc).get_sample_value
    loop = asyncio.new_event_loop()
    try:
        s = Session("s9", "u", 0, {1}, True, time.time() + 60, ("role admin",), loop, 10,
                    export=Level.META)
        svc.router.add(s)
        assert value("periscope_sessions", {"level": "payload", "export": "meta"}) == 1
        svc.metrics.session_started("payload", "meta")
        svc.metrics.session_ended("deadline", 42.0)
        svc.router.remove(s)
    finally:
        loop.close()
    assert value("periscope_sessions", {"level": "payload", "export": "meta"}) is None
    assert value("periscope_sessions_started_total", {"level": "payload", "export": "meta"}) == 1
    assert value("periscope_sessions_started_total", {"level": "meta", "export": "none"}) == 0
    assert value("periscope_sessions_ended_total", {"reason": "deadline"}) == 1
    assert value("periscope_sessions_ended_total", {"reason": "slow_reader"}) == 0
    assert value("periscope_session_duration_seconds_count") == 1
    assert value("periscope_session_duration_seconds_sum") == 42.0
    assert value("periscope_session_duration_seconds_bucket", {"le": "60.0"}) == 1
    assert value("periscope_session_duration_seconds_bucket", {"le": "10.0"}) == 0


def test_export_results(host: Host, tmp_path: Path) -> None:
    svc = host.svc
    sink = JsonLogSink(RotatingFile(str(tmp_path / "e.jsonl"), 1 << 20, 1), 16)

    class Exports:
        exports = {1: (Level.PAYLOAD, "s1")}

    svc.exporters = ExportRoute(Exports(), None, sink, ("jsonlog x",))
    value = registry(svc).get_sample_value
    sink.start()
    events = [{"ts": 1.0, "kind": "exit", "pid": 1, "target": 1, "code": i}
              for i in range(20)]  # 4 more than the queue holds
    svc.exporters(Batch(events))
    sink.close(5)
    assert value("periscope_export_offered_total", {"kind": "event"}) == 20
    assert value("periscope_export_sent_total", {"exporter": "jsonlog", "signal": "logs"}) == 16
    assert value("periscope_export_dropped_total",
                 {"exporter": "jsonlog", "reason": "queue_full"}) == 4
    assert value("periscope_export_failed_total", {"exporter": "jsonlog"}) == 0
    assert value("periscope_export_backlog", {"exporter": "jsonlog"}) == 0


def test_every_loss_and_kernel_stat_has_its_own_family() -> None:
    for name, where, _text in LOSSES:
        if where in ("kernel", "pipeline"):
            series = route(where, name)
            assert series is not None and series[0] in metric_names.COUNTER_FAMILIES, name
            assert not series[0].endswith("_other"), name
    for stat in Stat:
        series = route("kernel", stat.name.lower())
        assert series is not None and not series[0].endswith("_other"), stat
    for name in ("decode_short", "decode_version", "decode_unknown_op"):
        assert route("pipeline", name) == ("periscope_events_dropped", (name,))
    for table in metric_names.TABLES.values():
        for series in table.values():
            if series is not None:
                family, values = series
                assert len(values) == len(metric_names.COUNTER_FAMILIES[family][1]), family
    for family, values in metric_names.EXPORT.values():
        assert len(values) == len(metric_names.EXPORT_FAMILIES[family][1]), family


# A counter incremented by name anywhere in the daemon: counters["x"] or, in the snapshot
# collector (which counts into the server's counters), count["x"].
_COUNTED = re.compile(r'\bcount(?:ers)?\[\s*"([a-z_]+)"\s*\]')


def test_every_counter_the_daemon_increments_has_a_family() -> None:
    """Nothing lands under *_other_total by accident: each counter name written in
    collector/ (f-string names go through the prefix tables) has a row in a table."""
    root = Path(collector.__file__).parent
    named = {m.group(1): path.relative_to(root) for path in root.rglob("*.py")
             for m in _COUNTED.finditer(path.read_text())}
    assert {"break_glass", "notify_failed", "idp_refused", "snapshots_truncated",
            "profile_samples", "dropped_overload"} <= set(named)  # the scan finds them
    known = {name for table in metric_names.TABLES.values() for name in table}
    known |= {name for _exporter, name in metric_names.EXPORT}  # the exporters' own Counts
    missing = {name: str(where) for name, where in named.items() if name not in known}
    assert not missing, f"counters with no family in metric_names.py: {missing}"


def test_access_and_debug_counters_have_their_own_families(host: Host) -> None:
    svc = host.svc
    value = registry(svc).get_sample_value
    assert value("periscope_break_glass_total") == 0  # there from the start
    for name, n in (("break_glass", 2), ("notify_sent", 3), ("notify_failed", 1),
                    ("idp_verified", 4), ("idp_refused", 5), ("snapshots", 6),
                    ("snapshots_partial", 2), ("snapshots_exited", 1),
                    ("snapshots_truncated", 1), ("profiles", 7), ("profile_samples", 990)):
        svc.counters[name] += n
    assert value("periscope_break_glass_total") == 2
    assert value("periscope_notify_hook_runs_total", {"outcome": "sent"}) == 3
    assert value("periscope_notify_hook_runs_total", {"outcome": "failed"}) == 1
    assert value("periscope_idp_tokens_total", {"outcome": "verified"}) == 4
    assert value("periscope_idp_tokens_total", {"outcome": "refused"}) == 5
    assert value("periscope_snapshots_total") == 6
    assert value("periscope_snapshots_partial_total") == 2
    assert value("periscope_snapshots_exited_total") == 1
    assert value("periscope_snapshots_truncated_total") == 1
    assert value("periscope_profiles_total") == 7
    assert value("periscope_profile_samples_total") == 990
    text = generate_latest(registry(svc)).decode()
    assert "periscope_server_other_total{" not in text  # the family is declared, empty


def test_a_counter_no_table_knows_still_shows(host: Host) -> None:
    host.svc.pipeline.counters["new_thing"] += 3
    value = registry(host.svc).get_sample_value
    assert value("periscope_pipeline_other_total", {"counter": "new_thing"}) == 3


@pytest.mark.parametrize(("name", "label"), [
    ("asyncio_3", "asyncio"), ("Thread-12 (process_request_thread)",
                               "Thread (process_request_thread)"),
    ("ringbuf-reader", "ringbuf-reader"), ("otlp-convert", "otlp-convert"),
])
def test_thread_labels_drop_sequence_numbers(name: str, label: str) -> None:
    assert thread_label(name) == label


def test_exposition_follows_the_conventions(host: Host) -> None:
    capture(host, [sys_rec(Sc.WRITE, 3, 4, b"ab\n!", F_PAYLOAD | F_DATA_OUT, arg=4)])
    text = generate_latest(registry(host.svc)).decode()
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a family is emitted twice"
    for fam in families:
        assert fam.name.startswith(("periscope_", "process_")), fam.name
        assert not fam.name.endswith(("_ms", "_total")), fam.name  # base units; no *_total_total
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
        else:
            assert not any(s.name.endswith("_total") for s in fam.samples), fam.name
    # the flattened families are gone
    assert "periscope_server" not in names and "periscope_pipeline" not in names
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds"} <= {
        s.name for f in families for s in f.samples} | set(names)
    promtool = shutil.which("promtool")
    if promtool:  # the root tier runs it on a live daemon's scrape in any case
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout + r.stderr
