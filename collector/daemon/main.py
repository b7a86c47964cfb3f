"""periscoped: wire config, redaction, access control, probes and the server; run until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from collector import config
from collector.access import idp, lifecycle
from collector.access.alerts import Hook
from collector.access.audit import AuditLog, emit_anchor, install_journal_handler
from collector.access.desk import Desk
from collector.access.gate import Gate
from collector.access.grants import GrantStore
from collector.access.policy import Policy
from collector.access.requests import RequestStore
from collector.capture.l7stage import L7Stage, StageOptions
from collector.capture.pipeline import Pipeline, Sink
from collector.capture.tracer import Tracer
from collector.daemon import check, logs, probecache
from collector.daemon.notify import notify, watchdog_interval
from collector.errors import ConfigError, PeriscopeError
from collector.export.route import open_exporters
from collector.proc.facts import Enricher
from collector.proc.resolve import Resolver, cgroup2_root
from collector.serve.listen import listen_unix
from collector.serve.native import native
from collector.serve.profiles import Profiles
from collector.serve.red import TargetRed
from collector.serve.server import Server
from collector.serve.services import Services
from collector.serve.sessions import Router
from collector.store.l7store import L7Store
from collector.store.split import SplitSink
from collector.store.store import EventStore

log = logging.getLogger("periscope.daemon")
ANCHOR_EVERY_S = 60.0

EPILOG = """examples:
  periscoped --check                      report kernel features and a verdict
  periscoped --warm-cache                 compile the probes into the state dir's cache
                                          and exit (make install does), so the first
                                          start loads them without a compile
  periscoped                              run with /etc/periscope/periscope.toml or defaults
  periscoped --config ./p.toml --state-dir /tmp/ps --socket /tmp/ps/ps.sock
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="periscoped", description="periscope daemon: redacted, audited eBPF tracing",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="config file (default: /etc/periscope/periscope.toml "
                   "if present, else embedded defaults)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="report kernel features and exit")
    what.add_argument("--warm-cache", action="store_true",
                      help="compile the probes into STATE_DIR/probe-cache (attaching nothing) "
                      "and exit: 0 warm, 1 not (the daemon then compiles at start)")
    p.add_argument("--foreground", action="store_true",
                   help="stay in the foreground (always true; systemd supervises us)")
    p.add_argument("--socket", help="override paths.socket")
    p.add_argument("--state-dir", help="override paths.state_dir")
    p.add_argument("--policy", help="override paths.policy")
    p.add_argument("--socket-group", help="override paths.socket_group")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def build(cfg: config.Config, procfs: str = "/proc", cgroot: str | None = None
          ) -> tuple[Services, Pipeline]:
    """Every part of the daemon, wired; nothing is started. Raises PeriscopeError."""
    from probes.trace import TargetSpec, TraceProbe
    from redact import Redactor
    from redact.rules import RuleError

    paths = cfg.paths
    state = Path(paths.state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    router = Router()
    # First: an exporter that cannot start (ExportError) stops the daemon before it
    # opens anything else. Export sinks come after redaction, like the store.
    exporters = open_exporters(cfg.export, router, router.exporting_session)
    try:
        redactor = Redactor.from_file(cfg.redaction.rules) if cfg.redaction.rules \
            else Redactor.default()
    except (RuleError, OSError) as err:
        raise ConfigError(f"redaction.rules {cfg.redaction.rules!r}: {err}") from err
    policy = Policy.load(paths.policy) if Path(paths.policy).exists() else Policy.default()
    log.info("policy: %s", paths.policy if Path(paths.policy).exists() else "embedded default")
    grants = GrantStore(str(paths.grants))
    audit = AuditLog(str(paths.audit_log),
                     anchor=functools.partial(emit_anchor, anchor_file=str(paths.anchors)))
    resolver = Resolver(procfs, cgroot or cgroup2_root())
    enricher = Enricher(procfs, cgroup_path=resolver.cgroup_path)
    store = EventStore(paths.events_db, cfg.store.retention_seconds, cfg.store.max_bytes)
    # Same file, one size cap: the event store asks the L7 tables for their share over it.
    l7store = L7Store(paths.events_db, cfg.store.retention_seconds, None)
    store.tenants.append(l7store)
    capture = cfg.capture
    # Connections and L7 records (a pipeline observer). Its kernel-facing calls go to the
    # tracer, built below: a larger cap on fds with a detected protocol, never waiting on
    # the tracer's lock, and TLS probes for processes that load libssl later, off-thread.
    late_tls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tls-late")
    stage = L7Stage(redactor.redact_text, StageOptions(
        l7=capture.l7, l7_cap=capture.l7_payload_bytes if capture.l7 else 0), procfs=procfs,
        fd_cap=lambda pid, fd, cap: tracer.set_fd_cap(pid, fd, cap),
        tls_candidate=lambda pid, cookie: late_tls.submit(tracer.attach_tls_late, pid, cookie))
    # Per-target figures cost a little per event: only when /metrics is served.
    red = TargetRed(cfg.metrics.max_targets) if cfg.metrics.listen else None
    sinks: list[Sink] = [SplitSink(store, l7store), router]
    sinks += [s for s in (red, exporters) if s is not None]
    pipeline = Pipeline(redactor, sinks, enricher,
                        capture.queue_max, observers=[stage],
                        event_cap=capture.max_payload_bytes)
    # Compiled probes are cached under the state dir (root-only): a start with the same
    # kernel, sources, bcc and config loads them with bpf(2) instead of compiling (~2-25 s).
    options = probecache.trace_options(cfg)
    # The pipeline has the kernel shed targets' I/O at the source while it is overloaded.
    tracer = Tracer(lambda: TraceProbe(options, pipeline.submit, pipeline),
                    lambda cookie, cap: TargetSpec(cookie, cap, capture.sample_every,
                                                   capture.rate_limit), resolver)
    # The gate reads facts fresh for every decision: its own enricher, never the cache
    # the pipeline thread uses.
    gate = Gate(policy, paths.policy, grants, audit, Enricher(procfs), resolver, redactor=redactor,
                export_to=exporters.destinations if exporters is not None else ())
    counters: Counter[str] = Counter()  # the server's; the notify hook counts into them too
    desk = Desk(gate, RequestStore(str(state / "requests.json"), cfg.access.request_ttl_s),
                Hook(cfg.notify.command, cfg.notify.timeout_s, counters))
    svc = Services(gate=gate, tracer=tracer, pipeline=pipeline, router=router, store=store,
                   grants=grants, audit_path=str(paths.audit_log),
                   anchors_path=str(paths.anchors), max_payload=cfg.capture.max_payload_bytes,
                   redactor=redactor, profiles=Profiles(cfg.server.max_profiles,
                                                     probe_cache=probecache.cache_dir(cfg)),
                   session_queue=cfg.server.send_buffer_events,
                   max_reply_bytes=cfg.server.max_reply_bytes, counters=counters, desk=desk,
                   idp=idp.build(cfg.idp, str(state / "idp-jwks.json")),
                   exporters=exporters, red=red, l7store=l7store, stage=stage)
    return svc, pipeline


def config_digest(cfg: config.Config) -> str:
    """SHA-256 of the effective config (file, defaults and flags), as canonical JSON."""
    doc = dataclasses.asdict(cfg)
    doc.pop("source", None)
    return lifecycle.digest(json.dumps(doc, sort_keys=True, separators=(",", ":")))


def record_start(svc: Services, cfg: config.Config) -> None:
    """The audit log's account of this start: a crash of the last run first (with every
    session it left open closed as ended by crash), then `start`."""
    audit = svc.gate.audit
    crash = lifecycle.recover(audit)
    if crash is not None:
        log.warning("the previous periscoped did not stop cleanly: %d session(s) closed as "
                    "ended by crash (audit seq %s)", len(crash["sessions"]), crash["seq"])
    lifecycle.start(audit, config_digest(cfg), cfg.source, svc.gate.policy)


async def serve(cfg: config.Config, started: float) -> None:
    svc, pipeline = build(cfg)
    record_start(svc, cfg)
    if svc.exporters is not None:
        svc.exporters.start()
        log.info("export: %s", ", ".join(svc.exporters.destinations))
    pipeline.start()
    server = Server(svc, cfg.server)
    sock = listen_unix(cfg.paths.socket, cfg.paths.socket_group or None)
    await server.start(sock)
    if cfg.metrics.listen:
        from prometheus_client import start_http_server

        from collector.serve.metrics import registry

        host, _, port = cfg.metrics.listen.rpartition(":")
        try:
            start_http_server(int(port), host or "127.0.0.1", registry=registry(svc))
        except OSError as err:
            log.error("metrics listener %s failed: %s (continuing without)", cfg.metrics.listen,
                      err.strerror)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP: policy %s",
                                                            svc.gate.reload_policy()))
    ready_s = time.monotonic() - started
    log.info("ready in %.2fs: socket %s, state %s", ready_s, cfg.paths.socket, cfg.paths.state_dir)
    if "python" in native().values():
        log.warning("hot path partly in pure Python (%s): the C twins or the compiled L7 "
                    "parsers were not built at install (no gcc or python3-dev there, or mypy "
                    "could not be fetched); every event costs more CPU. Install them and run "
                    "`make install` again.",
                    ", ".join(f"{k}={v}" for k, v in native().items()))
    notify(f"READY=1\nSTATUS=serving on {cfg.paths.socket}")
    svc.counters["ready_ms"] = int(ready_s * 1000)
    svc.metrics.ready_seconds.set(ready_s)
    if cfg.capture.preload:
        svc.tracer.preload()  # after READY: the compile never delays the start
    keepalive = asyncio.create_task(_keepalive(svc, stop))
    await stop.wait()
    log.info("shutting down")
    notify("STOPPING=1")
    keepalive.cancel()
    sessions = len(svc.router.sessions)
    await server.close()
    svc.profiles.close()
    svc.tracer.close()  # detaches every probe
    pipeline.stop()
    if svc.exporters is not None:  # after the pipeline: what it redacted is flushed
        svc.exporters.close()
    svc.store.close()
    if svc.l7store is not None:
        svc.l7store.close()
    try:
        lifecycle.stop(svc.gate.audit, sessions)
    except PeriscopeError as err:  # the next start will find no stop and recover
        log.error("audit: stop record not written: %s", err)
    with contextlib.suppress(Exception):
        svc.gate.audit.anchor_now()
    svc.gate.audit.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(cfg.paths.socket)
    log.info("stopped; probes detached")


async def _keepalive(svc: Services, stop: asyncio.Event) -> None:
    interval = watchdog_interval()
    last_anchor = time.monotonic()
    while not stop.is_set():
        if interval:
            notify("WATCHDOG=1")
        # A block of events not yet full is written after a few seconds; retention runs.
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(None, svc.store.tick)
        if time.monotonic() - last_anchor > ANCHOR_EVERY_S:
            last_anchor = time.monotonic()
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, svc.gate.audit.anchor_now)
        if svc.desk is not None:
            try:  # pending requests past their time expire (each one audited)
                await asyncio.get_running_loop().run_in_executor(None, svc.desk.expire_due)
            except PeriscopeError as err:
                log.error("request expiry: %s", err)
        await asyncio.sleep(min(interval or 1.0, 1.0))


def raise_nofile_limit() -> None:
    """Best effort: soft RLIMIT_NOFILE up to the hard limit, so many clients fit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as err:  # a container may forbid it: run with what we have
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, err)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    logs.setup(args.verbose)
    if os.environ.get("JOURNAL_STREAM"):
        # Under systemd: audit anchors go to journald as structured fields (MESSAGE_ID).
        install_journal_handler()
    raise_nofile_limit()
    if args.check:
        text, ok = check.report(check.run())
        print(text)
        return 0 if ok else 1
    try:
        cfg = config.load(args.config)
        overrides = {k: v for k, v in (("socket", args.socket), ("state_dir", args.state_dir),
                                       ("policy", args.policy),
                                       ("socket_group", args.socket_group)) if v is not None}
        cfg = config.with_paths(cfg, **overrides)
        if args.warm_cache:
            return probecache.warm(cfg)
        asyncio.run(serve(cfg, started))
    except PeriscopeError as err:
        # Bad policy, grants or audit state at start: one clear line, not a traceback.
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
