"""Unix-socket server: SO_PEERCRED identity, frame/idle limits, dispatch, trace streaming."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections import Counter
from typing import Any

from collector import protocol
from collector.access.auth import AuthError, Principal, peer_principal
from collector.access.gate import Scope, resolve_pids, unit_cgroup
from collector.config import Server as ServerConfig
from collector.protocol import Fault, ProtocolError
from collector.selectors import Level
from collector.serve.handlers import HANDLERS, Services
from collector.serve.sessions import Session, new_session_id

log = logging.getLogger("periscope.server")
LOSS_KERNEL = ("skipped_rate", "skipped_sample", "drop_ringbuf", "drop_inflight")
LOSS_PIPELINE = ("payload_shed", "dropped_overload")


class Server:
    def __init__(self, svc: Services, cfg: ServerConfig) -> None:
        self.svc = svc
        self.cfg = cfg
        self.per_uid: Counter[int] = Counter()
        self.conns = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(
            self._accept, sock=sock, limit=self.cfg.max_frame_bytes)

    async def close(self) -> None:
        self.closing = True
        self.svc.router.end_where(lambda s: True, "shutdown")
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(t), 3)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sock: socket.socket = writer.get_extra_info("socket")
        counters = self.svc.counters
        try:
            who = peer_principal(sock)
        except AuthError as err:
            counters["auth_failed"] += 1
            log.warning("refusing connection: %s", err)
            writer.close()
            self._tasks.discard(task)
            return
        if self.conns >= self.cfg.max_conns or self.per_uid[who.uid] >= self.cfg.max_conns_per_uid:
            counters["conn_limit"] += 1
            writer.write(protocol.error(ProtocolError(
                Fault.LIMIT, f"too many connections for uid {who.uid}")))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            self._tasks.discard(task)
            return
        self.conns += 1
        self.per_uid[who.uid] += 1
        counters["connections"] += 1
        try:
            await self._serve(who, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            counters["client_gone"] += 1
        except Exception:
            counters["internal_errors"] += 1
            log.exception("connection handler failed")  # details stay in our log only
            with contextlib.suppress(Exception):
                writer.write(protocol.error(ProtocolError(
                    Fault.INTERNAL, "internal error; the daemon log has details")))
                await writer.drain()
        finally:
            self.conns -= 1
            self.per_uid[who.uid] -= 1
            writer.close()
            self._tasks.discard(task)

    async def _serve(self, who: Principal, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            try:  # idle_timeout_s bounds the wait for a frame to start ...
                first = await asyncio.wait_for(reader.read(1), self.cfg.idle_timeout_s)
            except asyncio.TimeoutError:
                self.svc.counters["idle_closed"] += 1
                return
            if not first:
                return
            try:  # ... read_timeout_s bounds the rest of it (a trickling client is cut off)
                line = first if first == b"\n" else first + await asyncio.wait_for(
                    reader.readline(), self.cfg.read_timeout_s)
            except (asyncio.TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
                # Too slow, or over the cap (the next frame cannot be found): reply and close.
                late = isinstance(exc, asyncio.TimeoutError)
                self.svc.counters["read_timeout" if late else "bad_frame"] += 1
                err = ProtocolError(Fault.TIMEOUT, "frame not completed within "
                                    f"{self.cfg.read_timeout_s}s") if late else ProtocolError(
                    Fault.BAD_FRAME, f"frame exceeds {self.cfg.max_frame_bytes} bytes")
                await loop.run_in_executor(None, self._audit_bad, who, err)  # audited like any
                writer.write(protocol.error(err))
                await writer.drain()
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                op, args = protocol.decode_request(line, self.cfg.max_frame_bytes)
            except ProtocolError as err:
                self.svc.counters["bad_frame"] += 1
                await loop.run_in_executor(None, self._audit_bad, who, err)
                writer.write(protocol.error(err))
                await writer.drain()
                continue
            self.svc.counters[f"op_{op}"] += 1
            try:
                if op == "hello":
                    await loop.run_in_executor(None, functools.partial(
                        self.svc.gate.record, who, op, {}, allowed=True, reason="identity query"))
                    writer.write(protocol.ok({"uid": who.uid, "user": who.user,
                                              "groups": sorted(who.group_names)}))
                elif op == "trace":
                    scope = await loop.run_in_executor(None, self.svc.gate.check, who, op, args)
                    await self._trace(who, scope, reader, writer)
                    return  # a trace owns its connection
                else:
                    scope = await loop.run_in_executor(None, self.svc.gate.check, who, op, args)
                    result = await loop.run_in_executor(None, HANDLERS[op], self.svc, who, scope)
                    writer.write(protocol.ok(result))
            except ProtocolError as err:
                self.svc.counters[f"fault_{err.fault.name.lower()}"] += 1
                writer.write(protocol.error(err))
            await writer.drain()

    def _audit_bad(self, who: Principal, err: ProtocolError) -> None:
        with contextlib.suppress(ProtocolError):
            self.svc.gate.record(who, "invalid", {}, allowed=False, reason=err.message)

    # -- trace sessions -------------------------------------------------------------
    def _tracer_targets(self, selectors: tuple[str, ...]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for sel in selectors:
            kind, _, value = sel.partition(":")
            if kind in ("pid", "comm", "cgroup"):
                out.append((kind, value))
            elif kind == "unit":
                path = unit_cgroup(value)
                if path is None:
                    raise ProtocolError(Fault.NOT_FOUND, f"no cgroup for unit {value!r}")
                out.append(("cgroup", path))
            elif kind == "exe":
                out.extend(("pid", str(p)) for p in resolve_pids(sel))
            else:
                raise ProtocolError(Fault.BAD_REQUEST,
                                    "trace needs explicit targets (-p, -n, -c or -u), not '*'")
        if not out:
            raise ProtocolError(Fault.NOT_FOUND, "no process matches the requested targets")
        return out

    def _loss_counters(self) -> dict[str, int]:
        """Counters of records skipped, shed or dropped anywhere on the way to a session."""
        kernel = self.svc.tracer.stats()
        pipe = self.svc.pipeline.counters
        got = {k: kernel.get(k, 0) for k in LOSS_KERNEL}
        got.update({k: pipe.get(k, 0) for k in LOSS_PIPELINE})
        return got

    def _open(self, sid: str, scope: Scope) -> set[int]:
        d = scope.decision
        cap = self.svc.max_payload if d.level == Level.PAYLOAD else 0
        cookies: set[int] = set()
        try:
            for kind, value in self._tracer_targets(d.targets):
                cookies.add(self.svc.tracer.acquire(sid, kind, value, cap).cookie)
        except LookupError as err:
            self.svc.tracer.release(sid)
            raise ProtocolError(Fault.NOT_FOUND, str(err)) from err
        except ProtocolError:
            self.svc.tracer.release(sid)
            raise
        except Exception as err:  # probe compile/load failure (ProbeError) and the like
            self.svc.tracer.release(sid)
            log.error("probe attach failed: %s", err)
            raise ProtocolError(Fault.UNAVAILABLE, f"cannot attach probes: {err}") from err
        return cookies

    async def _trace(self, who: Principal, scope: Scope, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        d = scope.decision
        sid = new_session_id()
        assert d.deadline is not None and d.duration is not None
        cookies = await loop.run_in_executor(None, self._open, sid, scope)
        counted_before = await loop.run_in_executor(None, self._loss_counters)
        # Role limits are session lengths: count from when probes are live, so a compile
        # does not eat the session. A grant's expiry is absolute and is never extended.
        deadline = d.deadline
        if not any(src.startswith("grant ") for src in d.sources):
            deadline = max(deadline, time.time() + d.duration)
        s = Session(sid, who.user, who.uid, cookies, d.level == Level.PAYLOAD, deadline,
                    d.sources, loop, self.cfg.send_buffer_events)
        self.svc.router.add(s)
        writer.write(protocol.ok({"session": sid, "targets": list(d.targets),
                                  "level": str(d.level), "deadline": deadline,
                                  "narrowed": list(d.narrowed),
                                  "probe_load_s": round(self.svc.tracer.last_load_seconds, 3)}))
        watcher = asyncio.create_task(self._watch_client(s, reader))
        try:
            await writer.drain()
            await self._pump(s, writer)
        finally:
            watcher.cancel()
            self.svc.router.remove(s)
            reason = s.ended or "client_closed"
            if reason != "client_closed":
                # Tell the client first: releasing may detach probes, which takes a while.
                now = await loop.run_in_executor(None, self._loss_counters)
                # Host-wide (the kernel counts per CPU, not per target): what the session's
                # stream may be missing, so a client is told rather than left to guess.
                losses = {k: v - counted_before.get(k, 0) for k, v in now.items()
                          if v > counted_before.get(k, 0)}
                with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                    writer.write(protocol.end({"session": sid, "reason": reason,
                                               "events": s.events, "bytes": s.bytes,
                                               "losses": losses}))
                    await asyncio.wait_for(writer.drain(), 2.0)
            await loop.run_in_executor(None, self.svc.tracer.release, sid)
            with contextlib.suppress(ProtocolError):  # the stream already disclosed; log it
                await loop.run_in_executor(None, lambda: self.svc.gate.record(
                    who, "trace.end", {"session": sid}, allowed=True, reason=reason,
                    session=sid, events=s.events, nbytes=s.bytes, kind="session_end"))

    async def _pump(self, s: Session, writer: asyncio.StreamWriter) -> None:
        """Send what the router queued, one socket write per wakeup.

        A send per event gave up the GIL per event, and the pipeline threads then kept this
        loop waiting to get it back: sessions fell behind at 50k events/s.
        """
        while True:
            left = s.deadline - time.time()
            if left <= 0 and s.ended is None:
                s.end("deadline")
            if s.ended is None and not s.outbox:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(s.wakeup.wait(), min(left, 1.0))
                continue
            frames = s.take()
            if frames:
                s.events += len(frames)
                s.bytes += sum(n for _line, n in frames)
                writer.write(b"".join([line for line, _n in frames]))
            if s.ended is not None or not await self._drain(s, writer):
                return

    async def _drain(self, s: Session, writer: asyncio.StreamWriter) -> bool:
        """Wait until the client takes what we wrote. False if it was cut off.

        A client that stops reading blocks drain() forever; its session still ends
        (slow_reader when its queue overflows, or its deadline, or a revoke), and then
        we abort the connection so the session is released and its end audited.
        """
        while True:
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
                return True
            except asyncio.TimeoutError:
                if s.ended is None and time.time() >= s.deadline:
                    s.end("deadline")
                if s.ended is not None:
                    self.svc.counters["stream_aborted"] += 1
                    writer.transport.abort()
                    return False

    async def _watch_client(self, s: Session, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass  # clients send nothing during a stream; EOF means they left
        s.end("client_closed")
