"""Which Prometheus family and label each counter of the daemon is shown as: the tables.

One row per counter name (the kernel's stats, the pipeline's, the server's and router's
Counters, the L7 stage's and its store's, the exporters' Counts), read by
collector/serve/metrics.py at scrape time. A renamed or new counter is a one-line change
here; a name no table knows is still shown, under *_other_total with its name as the
label, rather than vanishing.
"""

from __future__ import annotations

Route = tuple[str, tuple[str, ...]]  # (family, its label values)

# Counter families read from the daemon's counters: name -> (help, label names).
COUNTER_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "periscope_kernel_records_emitted": (
        "Records the probes wrote into the ring buffer", ()),
    "periscope_events_skipped": (
        "Syscalls of a target deliberately not recorded, by reason: rate "
        "(capture.rate_limit) or sample (capture.sample_every)", ("reason",)),
    "periscope_events_dropped": (
        "Records or events lost, by reason: ringbuf (ring buffer full), inflight (in-flight "
        "slot taken by another thread), shed (I/O syscalls the kernel skipped while the "
        "pipeline was overloaded), overload (pipeline queue full), decode_* "
        "(malformed records)",
        ("reason",)),
    "periscope_kernel_target_full": (
        "Processes not traced because the kernel's target table was full", ()),
    "periscope_kernel_exits_unmatched": (
        "Syscall exits whose entry the probes did not see (in flight at attach)", ()),
    "periscope_events_received": (
        "Records the pipeline took from the ring buffer reader", ()),
    "periscope_events_decoded": (
        "Events the pipeline built (from records, and from its L7 and connection stages)",
        ()),
    "periscope_payloads_shed": (
        "Payloads shed under load; their events kept the metadata", ()),
    "periscope_payloads_unexpected": (
        "Payload bytes on a record that should carry none (not shown)", ()),
    "periscope_pipeline_errors": (
        "Record batches the pipeline failed on (a bug: see the log)", ()),
    "periscope_sink_errors": (
        "Event batches a sink (store, sessions, metrics, export) failed to take", ()),
    "periscope_sink_waits": (
        "Times the pipeline waited for its sinks (they were the bottleneck)", ()),
    "periscope_streams_evicted": (
        "Redaction streams evicted from the full stream table", ()),
    "periscope_requests": ("Client requests, by operation", ("op",)),
    "periscope_request_faults": ("Requests answered with an error, by fault", ("fault",)),
    "periscope_connections": ("Client connections accepted", ()),
    "periscope_connections_refused": (
        "Client connections refused, by reason: auth_failed (no peer credentials), "
        "conn_limit", ("reason",)),
    "periscope_connections_closed": (
        "Client connections the daemon closed or lost, by reason", ("reason",)),
    "periscope_bad_frames": ("Request frames that were not valid requests", ()),
    "periscope_break_glass": (
        "Break-glass self-grants (periscope request break-glass; each is audited, logged at "
        "warning and sent to the [notify] hook)", ()),
    "periscope_notify_hook_runs": (
        "Runs of the [notify] command (break-glass alerts), by outcome: sent, failed",
        ("outcome",)),
    "periscope_idp_tokens": (
        "Identity-provider ID tokens presented (periscope login, --id-token-file), by "
        "outcome: verified, refused", ("outcome",)),
    "periscope_snapshots": ("Process snapshots taken", ()),
    "periscope_snapshots_partial": (
        "Snapshots with a section that could not be read (marked partial)", ()),
    "periscope_snapshots_exited": (
        "Snapshots whose process exited while it was read (marked exited)", ()),
    "periscope_snapshots_truncated": (
        "Snapshot replies cut to server.max_reply_bytes (marked truncated)", ()),
    "periscope_profiles": ("CPU profiles started", ()),
    "periscope_profile_samples": ("Stack samples the CPU profiles took", ()),
    "periscope_l7_records": (
        "L7 request records (HTTP, SQL, Redis, DNS) the connection stage built", ()),
    "periscope_l7_protocols_detected": (
        "Connections on which a protocol was detected, by protocol", ("protocol",)),
    "periscope_l7_parser_drops": (
        "Bytes or messages the L7 parsers could not turn into records, by reason: gaps "
        "(bytes not captured), gaps_lost_sync, malformed, unanswered, unpaired_responses, "
        "oversize_frames, skipped_after_error, detect_gave_up, tls (encrypted), "
        "dns_retransmit", ("reason",)),
    "periscope_l7_resyncs": ("Times an L7 parser found its place again after a gap", ()),
    "periscope_l7_unsynced_bytes": (
        "Bytes skipped by L7 parsers while out of sync", ()),
    "periscope_l7_losses": (
        "Times the L7 stage heard that records were lost under load (shed or dropped): "
        "the connections it parses go out of sync until a message starts again", ()),
    "periscope_l7_connections_adopted": (
        "Sockets open before tracing saw them, adopted as connections", ()),
    "periscope_l7_connections_evicted": (
        "Connections evicted from the full connection table", ()),
    "periscope_l7_capture_cap_raises": (
        "Requests for a connection's larger payload cap, by outcome: raised, refused (the "
        "tracer was busy; asked again)", ("outcome",)),
    "periscope_l7_store_rows_written": ("Connection and L7 rows written to the store", ()),
    "periscope_l7_store_rows_pruned": (
        "Connection and L7 rows removed from the store by retention (age or size)", ()),
    "periscope_l7_store_rows_lost": (
        "Connection and L7 rows lost to a failed store write (see the log)", ()),
    "periscope_kernel_other": ("Kernel counters no family names yet", ("counter",)),
    "periscope_pipeline_other": ("Pipeline counters no family names yet", ("counter",)),
    "periscope_server_other": ("Server counters no family names yet", ("counter",)),
    "periscope_l7_other": ("Connection and L7 counters no family names yet", ("counter",)),
}
_DROPPED = "periscope_events_dropped"
_CLOSED = "periscope_connections_closed"

# Counter name -> its series; None: shown elsewhere (a gauge or an instrument).
KERNEL: dict[str, Route | None] = {
    "emitted": ("periscope_kernel_records_emitted", ()),
    "skipped_rate": ("periscope_events_skipped", ("rate",)),
    "skipped_sample": ("periscope_events_skipped", ("sample",)),
    "drop_ringbuf": (_DROPPED, ("ringbuf",)),
    "drop_inflight": (_DROPPED, ("inflight",)),
    "shed_overload": (_DROPPED, ("shed",)),
    "target_full": ("periscope_kernel_target_full", ()),
    "missing_enter": ("periscope_kernel_exits_unmatched", ()),
}
PIPELINE: dict[str, Route | None] = {
    "received": ("periscope_events_received", ()),
    "events": ("periscope_events_decoded", ()),
    "dropped_overload": (_DROPPED, ("overload",)),
    "payload_shed": ("periscope_payloads_shed", ()),
    "payload_unexpected": ("periscope_payloads_unexpected", ()),
    "pipeline_errors": ("periscope_pipeline_errors", ()),
    "sink_errors": ("periscope_sink_errors", ()),
    "sink_waits": ("periscope_sink_waits", ()),
    "streams_evicted": ("periscope_streams_evicted", ()),
}
SERVER: dict[str, Route | None] = {
    "ready_ms": None,              # periscope_ready_seconds (a gauge)
    "slow_reader_dropped": None,   # periscope_sessions_ended_total{reason="slow_reader"}
    "connections": ("periscope_connections", ()),
    "auth_failed": ("periscope_connections_refused", ("auth_failed",)),
    "conn_limit": ("periscope_connections_refused", ("conn_limit",)),
    "client_gone": (_CLOSED, ("client_gone",)),
    "idle_closed": (_CLOSED, ("idle",)),
    "read_timeout": (_CLOSED, ("read_timeout",)),
    "internal_errors": (_CLOSED, ("internal_error",)),
    "stream_aborted": (_CLOSED, ("stream_aborted",)),
    "bad_frame": ("periscope_bad_frames", ()),
    "break_glass": ("periscope_break_glass", ()),
    "notify_sent": ("periscope_notify_hook_runs", ("sent",)),
    "notify_failed": ("periscope_notify_hook_runs", ("failed",)),
    "idp_verified": ("periscope_idp_tokens", ("verified",)),
    "idp_refused": ("periscope_idp_tokens", ("refused",)),
    "snapshots": ("periscope_snapshots", ()),
    "snapshots_partial": ("periscope_snapshots_partial", ()),
    "snapshots_exited": ("periscope_snapshots_exited", ()),
    "snapshots_truncated": ("periscope_snapshots_truncated", ()),
    "profiles": ("periscope_profiles", ()),
    "profile_samples": ("periscope_profile_samples", ()),
}
_L7_DROPS = "periscope_l7_parser_drops"
L7: dict[str, Route | None] = {
    "l7_records": ("periscope_l7_records", ()),
    "l7_resyncs": ("periscope_l7_resyncs", ()),
    "l7_bytes_unsynced": ("periscope_l7_unsynced_bytes", ()),
    "l7_losses": ("periscope_l7_losses", ()),
    **{f"l7_{reason}": (_L7_DROPS, (reason,)) for reason in (
        "gaps", "gaps_lost_sync", "malformed", "unanswered", "unpaired_responses",
        "oversize_frames", "skipped_after_error", "detect_gave_up", "tls", "dns_retransmit")},
    "conns_adopted": ("periscope_l7_connections_adopted", ()),
    "conns_evicted": ("periscope_l7_connections_evicted", ()),
    "fd_caps_raised": ("periscope_l7_capture_cap_raises", ("raised",)),
    "fd_caps_failed": ("periscope_l7_capture_cap_raises", ("refused",)),
    "store_written": ("periscope_l7_store_rows_written", ()),
    "store_pruned": ("periscope_l7_store_rows_pruned", ()),
    "store_write_errors": ("periscope_l7_store_rows_lost", ()),
}
# Names that carry their label value: prefix -> family; the value is the rest of the name
# (decode_short -> reason "decode_short": the reason names the stage that lost it).
PREFIXES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "pipeline": (("decode_", _DROPPED, True),),
    "server": (("op_", "periscope_requests", False),
               ("fault_", "periscope_request_faults", False)),
    "l7": (("l7_detected_", "periscope_l7_protocols_detected", False),),
}
OTHER = {"kernel": "periscope_kernel_other", "pipeline": "periscope_pipeline_other",
         "server": "periscope_server_other", "l7": "periscope_l7_other"}
TABLES = {"kernel": KERNEL, "pipeline": PIPELINE, "server": SERVER, "l7": L7}

# Exporter counters: (exporter, counter) -> series of the export families.
EXPORT_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "periscope_export_sent": (
        "Items the exporters delivered (OTLP logs and spans, JSON lines)",
        ("exporter", "signal")),
    "periscope_export_failed": (
        "Export requests (OTLP, metrics included) or writes (JSON lines) that failed",
        ("exporter",)),
    "periscope_export_dropped": (
        "Items never delivered, by reason: queue_full, retries, shutdown, write_error, "
        "rejected (not redacted, JSON-ready data)", ("exporter", "reason")),
    "periscope_export_metric_exports": ("OTLP metric exports that succeeded", ()),
    "periscope_export_l7_metrics_only": (
        "L7 records counted in OTLP RED metrics while spans are off", ()),
    "periscope_export_errors": ("Times an OTLP exporter raised (a bug: see the log)", ()),
    "periscope_export_offered": (
        "Events the export policy passed to the exporters, by kind (event, l7)", ("kind",)),
}
EXPORT: dict[tuple[str, str], Route] = {
    ("otlp", "export_sent_logs"): ("periscope_export_sent", ("otlp", "logs")),
    ("otlp", "export_sent_spans"): ("periscope_export_sent", ("otlp", "spans")),
    ("otlp", "export_failed"): ("periscope_export_failed", ("otlp",)),
    ("otlp", "export_dropped_queue_full"): ("periscope_export_dropped", ("otlp", "queue_full")),
    ("otlp", "export_dropped_retries"): ("periscope_export_dropped", ("otlp", "retries")),
    ("otlp", "export_dropped_shutdown"): ("periscope_export_dropped", ("otlp", "shutdown")),
    ("otlp", "export_rejected"): ("periscope_export_dropped", ("otlp", "rejected")),
    ("otlp", "export_sent_metrics"): ("periscope_export_metric_exports", ()),
    ("otlp", "export_metrics_only"): ("periscope_export_l7_metrics_only", ()),
    ("otlp", "export_errors"): ("periscope_export_errors", ()),
    ("jsonlog", "jsonlog_written"): ("periscope_export_sent", ("jsonlog", "logs")),
    ("jsonlog", "jsonlog_failed"): ("periscope_export_failed", ("jsonlog",)),
    ("jsonlog", "jsonlog_dropped_queue_full"): ("periscope_export_dropped",
                                                ("jsonlog", "queue_full")),
    ("jsonlog", "jsonlog_dropped_write_error"): ("periscope_export_dropped",
                                                 ("jsonlog", "write_error")),
    ("jsonlog", "jsonlog_dropped_shutdown"): ("periscope_export_dropped",
                                              ("jsonlog", "shutdown")),
    ("route", "export_offered_events"): ("periscope_export_offered", ("event",)),
    ("route", "export_offered_l7"): ("periscope_export_offered", ("l7",)),
}

def route(source: str, name: str) -> Route | None:
    """The series a counter of `source` ("kernel", "pipeline", "server", "l7") is shown
    as."""
    table = TABLES[source]
    if name in table:
        return table[name]
    for prefix, family, keep in PREFIXES.get(source, ()):
        if name.startswith(prefix):
            return family, (name if keep else name.removeprefix(prefix),)
    return OTHER[source], (name,)
