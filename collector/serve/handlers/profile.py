"""The streaming handler of profile: sample the on-CPU stacks of the allowed targets on a
worker thread, tell the client how far it is, and end with the profile and why it ended.

Wire: the reply {"ok": true, "result": {profile, targets, pids, duration_s, freq,
narrowed}}, then {"event": {"progress": {phase, elapsed_s, duration_s}}} about every
second, then {"end": {profile, reason, result}} where result is
collector.profile.profile_to_wire's object and reason one of done, target_exited (every
target is gone: what was sampled until then), client_closed or shutdown. The end of
every allowed request, whatever happened, is audited as profile.end with its samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector import protocol
from collector.access.gate import Scope
from collector.errors import AuditFailed, BadRequest, NotFound, PeriscopeError
from collector.profile import DEFAULT_FREQ, MAX_DURATION_S, MAX_FREQ, profile_to_wire
from collector.serve.handlers.trace import Conn
from collector.serve.profiles import Run
from collector.serve.services import Services, int_arg

DEFAULT_DURATION_S = 10.0
MAX_PIDS = 1024      # the kernel's target table (PROFILE_MAX_TARGETS in probes/profile.h)
POLL_S = 0.25        # how often the targets are checked for having exited
PROGRESS_EVERY_S = 1.0


def _pids(svc: Services, targets: tuple[str, ...]) -> list[int]:
    """The processes the allowed targets name now (on an executor thread)."""
    return sorted({pid for t in targets for pid in svc.gate.resolver.pids(t)})


def alive(procfs: Path, pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has no stacks left to sample).
    Read from procfs: we never signal a target, not even with signal 0."""
    try:
        stat = (procfs / str(pid) / "stat").read_bytes()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X", b"x", b"")


def _duration(scope: Scope, notes: list[str]) -> float:
    asked = scope.args.get("duration")  # a positive number: build_request checked it
    allowed = scope.decision.duration or DEFAULT_DURATION_S
    duration = min(DEFAULT_DURATION_S if asked is None else float(asked), allowed)
    if duration > MAX_DURATION_S:
        notes.append(f"duration cut from {duration:g} s to {MAX_DURATION_S:g} s: the "
                     "longest profile")
        duration = MAX_DURATION_S
    return duration


@dataclass
class _Outcome:
    """What the end record says: filled in as the profile goes."""

    reason: str = "refused"
    pids: list[int] = field(default_factory=list)
    samples: int = 0
    sampled_s: float = 0.0
    sent: int = 0


async def profile(svc: Services, conn: Conn, scope: Scope) -> None:
    loop = asyncio.get_running_loop()
    d = scope.decision
    run: Run | None = None
    submitted = False
    out = _Outcome()
    try:
        freq = int_arg(scope.args, "freq", DEFAULT_FREQ, 1, MAX_FREQ) or DEFAULT_FREQ
        notes = list(d.narrowed)
        duration = _duration(scope, notes)
        out.pids = await loop.run_in_executor(None, _pids, svc, d.targets)
        if not out.pids:
            raise NotFound(f"no running process for {', '.join(d.targets)}")
        if len(out.pids) > MAX_PIDS:
            raise BadRequest(f"{len(out.pids)} processes: a profile takes at most {MAX_PIDS}")
        run = svc.profiles.begin(conn.who.user)
        writer = conn.writer
        writer.write(protocol.ok({"profile": run.id, "targets": list(d.targets),
                                  "pids": out.pids, "duration_s": duration, "freq": freq,
                                  "narrowed": notes}))
        await writer.drain()
        job = loop.run_in_executor(svc.profiles.pool, svc.profiles.sample, run, out.pids,
                                   duration, freq, svc.redactor.redact_text)
        submitted = True
        svc.counters["profiles"] += 1
        watcher = asyncio.create_task(_watch_client(run, conn.reader))
        try:
            await _progress(svc, run, job, out.pids, duration, writer)
            prof = await job
        finally:
            watcher.cancel()
        out.reason = run.reason or "done"
        out.samples, out.sampled_s = prof.samples, prof.duration_s
        svc.counters["profile_samples"] += prof.samples
        line = protocol.end({"profile": run.id, "reason": out.reason,
                             "result": profile_to_wire(prof, svc.max_reply_bytes)})
        # Sent even when the client closed its side: `periscope profile` stops a profile
        # early (Ctrl-C) that way and still reads what was sampled.
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            writer.write(line)
            await asyncio.wait_for(writer.drain(), 10.0)
            out.sent = len(line)
    except PeriscopeError as err:
        out.reason = f"failed: {protocol.fault_of(err).name}"
        raise  # the server tells the client {code, name, message}
    except BaseException:  # cancelled at daemon exit, or a bug (logged by the server)
        out.reason = "failed: internal" if run is None or run.reason is None else run.reason
        raise
    finally:
        if run is not None:
            run.stop(out.reason)  # a handler that ends early never leaves sampling behind
            if not submitted:
                svc.profiles.release(run)
            elif not out.sampled_s:
                out.sampled_s = round(run.elapsed(), 3)
        await _audit_end(svc, conn, run, out)


async def _progress(svc: Services, run: Run, job: asyncio.Future[Any], pids: list[int],
                    duration: float, writer: asyncio.StreamWriter) -> None:
    """Until sampling ends: check the targets, and send progress about every second."""
    procfs = Path(svc.gate.resolver.procfs)
    last = 0.0
    while not job.done():
        await asyncio.wait({job}, timeout=POLL_S)
        if job.done():
            return
        if run.started is not None and not any(alive(procfs, p) for p in pids):
            run.stop("target_exited")  # sampling ends now, with what it has
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S and run.reason != "client_closed":
            last = now
            phase = "loading" if run.started is None else "sampling"
            # A client that stops reading is not waited for: its profile goes on, and the
            # end is written (or not) when sampling is done.
            with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                writer.write(protocol.event({"progress": {
                    "phase": phase, "elapsed_s": round(run.elapsed(), 1),
                    "duration_s": duration}}))
                await asyncio.wait_for(writer.drain(), POLL_S)


async def _watch_client(run: Run, reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(4096):
            pass  # clients send nothing during a profile; EOF means they left
    run.stop("client_closed")


async def _audit_end(svc: Services, conn: Conn, run: Run | None, out: _Outcome) -> None:
    args = {"profile": run.id if run else None, "pids": out.pids[:64],
            "sampled_s": out.sampled_s}
    with contextlib.suppress(AuditFailed):  # what was sent is sent; the failure is logged
        await asyncio.get_running_loop().run_in_executor(None, lambda: svc.gate.record(
            conn.who, "profile.end", args, allowed=True, reason=out.reason,
            session=run.id if run else None, events=out.samples, nbytes=out.sent,
            kind="session_end"))
