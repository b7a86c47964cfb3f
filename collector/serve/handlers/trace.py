"""The streaming handler of trace: open a session on its targets, stream what the router
queues for it until it ends (deadline, revoke, slow reader, client gone), then say why.

A trace owns its connection. Nothing here blocks the loop: probe attach and audit
writes run on executor threads, and a client that stops reading is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from collector import protocol
from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.errors import AuditFailed, BadRequest, NotFound, PeriscopeError
from collector.selectors import Level
from collector.serve.services import Services, desk_of
from collector.serve.sessions import Session, new_session_id

log = logging.getLogger("periscope.trace")


@dataclass(frozen=True)
class Conn:
    """The client connection a streaming handler owns."""

    who: Principal
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


def loss_counters(svc: Services) -> dict[str, int]:
    """Counters of records skipped, shed or dropped anywhere on the way to a session."""
    kernel = svc.tracer.stats()
    pipe = svc.pipeline.counters
    return {name: (kernel if where == "kernel" else pipe).get(name, 0)
            for name, where, _text in protocol.LOSSES if where in ("kernel", "pipeline")}


def _open(svc: Services, sid: str, scope: Scope) -> set[int]:
    """Attach the session's targets (on an executor thread); their cookies."""
    d = scope.decision
    cap = svc.max_payload if d.level == Level.PAYLOAD else 0
    cookies: set[int] = set()
    try:
        for kind, value in svc.tracer.plan(d.targets):
            cookies.add(svc.tracer.acquire(sid, kind, value, cap).cookie)
        if svc.stage is not None:  # connections already open are not invisible
            for cookie in cookies:
                svc.stage.seed(cookie, svc.tracer.pids_of(cookie))
    except PeriscopeError as err:  # NotFound, CaptureError...: the client is told why
        svc.tracer.release(sid)
        if not isinstance(err, NotFound):
            log.error("trace %s: %s", sid, err)
        raise
    except BaseException:
        svc.tracer.release(sid)
        raise
    return cookies


def _use_request(svc: Services, conn: Conn, scope: Scope, sid: str) -> None:
    """`trace --request ID`: the session must be allowed by that request's grant; recorded
    as the request's use."""
    rid = scope.args.get("request")
    if rid is None:
        return
    if not isinstance(rid, str):
        raise BadRequest('"request" must be a request id')
    desk_of(svc).use(conn.who, rid, scope.decision.sources, sid)


def _record_end(svc: Services, conn: Conn, sid: str, reason: str, events: int = 0,
                nbytes: int = 0, exported: dict[str, Any] | None = None) -> None:
    """The session_end record; `exported` (Gate.export_record) when its events also left
    the host, so the record says where, like the one that allowed it."""
    with contextlib.suppress(AuditFailed):  # the stream already disclosed; log it
        svc.gate.record(conn.who, "trace.end", {"session": sid}, allowed=True, reason=reason,
                        session=sid, events=events, nbytes=nbytes, kind="session_end",
                        extra=None if exported is None else {"export": exported})


async def trace(svc: Services, conn: Conn, scope: Scope) -> None:
    loop = asyncio.get_running_loop()
    d = scope.decision
    frames = scope.args.get("frames", "event")
    if frames not in protocol.FRAMES:
        raise BadRequest(f'"frames" must be {" or ".join(protocol.FRAMES)}')
    sid = scope.session or new_session_id()
    assert d.deadline is not None and d.duration is not None
    try:  # every allowed trace gets its session_end, even one that never started
        await loop.run_in_executor(None, _use_request, svc, conn, scope, sid)
        cookies = await loop.run_in_executor(None, _open, svc, sid, scope)
    except PeriscopeError as err:
        await loop.run_in_executor(None, _record_end, svc, conn, sid,
                                   f"not started: {type(err).__name__}")
        raise
    counted_before = await loop.run_in_executor(None, loss_counters, svc)
    # Session lengths count from when probes are live, so a compile does not eat the
    # session; but a grant's expiry is absolute and is never extended.
    used = {src[len("grant "):] for src in d.sources if src.startswith("grant ")}
    ends = [g.expires for g in svc.grants.list(include_expired=True) if g.id in used]
    # A grant revoked since the decision is gone from the store: no extension then.
    cap = min(ends, default=float("inf")) if len(ends) == len(used) else \
        min([d.deadline, *ends])
    deadline = min(max(d.deadline, time.time() + d.duration), cap)
    s = Session(sid, conn.who.user, conn.who.uid, cookies, d.level == Level.PAYLOAD, deadline,
                d.sources, loop, svc.session_queue, batched=frames == "batch",
                export=d.export)
    svc.router.add(s)
    svc.metrics.session_started(str(d.level), None if d.export is None else str(d.export))
    exported = svc.gate.export_record(d.export)
    head = {"session": sid, "targets": list(d.targets), "level": str(d.level),
            "deadline": deadline, "narrowed": list(d.narrowed),
            "probe_load_s": round(svc.tracer.last_load_seconds, 3)}
    if exported is not None:
        head["export"] = exported
    writer = conn.writer
    writer.write(protocol.ok(head))
    watcher = asyncio.create_task(_watch_client(s, conn.reader))
    try:
        await writer.drain()
        await _pump(svc, s, writer)
    finally:
        watcher.cancel()
        svc.router.remove(s)
        reason = s.ended or "client_closed"
        svc.metrics.session_ended(reason, time.time() - s.started)
        if reason != "client_closed":
            # Tell the client first: releasing may detach probes, which takes a while.
            now = await loop.run_in_executor(None, loss_counters, svc)
            # Host-wide (the kernel counts per CPU, not per target): what the session's
            # stream may be missing, so a client is told rather than left to guess.
            losses = {k: v - counted_before.get(k, 0) for k, v in now.items()
                      if v > counted_before.get(k, 0)}
            with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                writer.write(protocol.end({"session": sid, "reason": reason,
                                           "events": s.events, "bytes": s.bytes,
                                           "losses": losses}))
                await asyncio.wait_for(writer.drain(), 2.0)
        await loop.run_in_executor(None, svc.tracer.release, sid)
        await loop.run_in_executor(None, _record_end, svc, conn, sid, reason, s.events,
                                   s.bytes, exported)


async def _pump(svc: Services, s: Session, writer: asyncio.StreamWriter) -> None:
    """Send what the router queued, one socket write per wakeup.

    A send per event gave up the GIL per event, and the pipeline threads then kept this
    loop waiting to get it back: sessions fell behind at 50k events/s. The deadline is a
    timer that ends the session, so a wakeup is a bare wait (a timed wait made a task
    and a timer per delivery).
    """
    loop = asyncio.get_running_loop()
    timer = loop.call_later(max(0.0, s.deadline - time.time()), _expire, s)
    try:
        while True:
            if s.ended is None and time.time() >= s.deadline:
                s.end("deadline")
            if s.ended is None and not s.outbox:
                s.wakeup.clear()  # nothing runs between the test and here: no lost wakeup
                await s.wakeup.wait()
                continue
            data, n, nbytes = s.take()
            if data:
                s.events += n
                s.bytes += nbytes
                writer.write(data)
            if s.ended is not None or not await _drain(svc, s, writer):
                return
    finally:
        timer.cancel()


def _expire(s: Session) -> None:
    if s.ended is None:
        s.end("deadline")


async def _drain(svc: Services, s: Session, writer: asyncio.StreamWriter) -> bool:
    """Wait until the client takes what we wrote. False if it was cut off.

    A client that stops reading blocks drain() forever; its session still ends
    (slow_reader when its queue overflows, or its deadline, or a revoke), and then
    we abort the connection so the session is released and its end audited.
    """
    transport = writer.transport
    if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[0]:
        await writer.drain()  # at or below the low-water mark: never paused, no wait
        return True
    while True:
        try:
            await asyncio.wait_for(writer.drain(), 1.0)
            return True
        except asyncio.TimeoutError:
            if s.ended is None and time.time() >= s.deadline:
                s.end("deadline")
            if s.ended is not None:
                svc.counters["stream_aborted"] += 1
                writer.transport.abort()
                return False


async def _watch_client(s: Session, reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(4096):
            pass  # clients send nothing during a stream; EOF means they left
    s.end("client_closed")
