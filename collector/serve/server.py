"""Unix-socket server: SO_PEERCRED identity, connection caps, frame/idle limits, and the
dispatch of every request through the gate to its handler (serve/dispatch.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from typing import Any

from collector import protocol
from collector.access.auth import Principal, peer_principal
from collector.config import Server as ServerConfig
from collector.errors import (
    AuditFailed,
    AuthError,
    BadFrame,
    FrameTimeout,
    LimitExceeded,
    PeriscopeError,
    RequestError,
)
from collector.protocol import Fault
from collector.serve.dispatch import HANDLERS, Rebind, Streaming
from collector.serve.handlers.trace import Conn
from collector.serve.services import Services

log = logging.getLogger("periscope.server")


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
        self.svc.profiles.stop_all("shutdown")  # each ends with what it sampled
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
            writer.write(protocol.error(LimitExceeded(f"too many connections for uid {who.uid}")))
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
                writer.write(protocol.internal_error())
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
                err: RequestError = FrameTimeout(
                    f"frame not completed within {self.cfg.read_timeout_s}s") if late else \
                    BadFrame(f"frame exceeds {self.cfg.max_frame_bytes} bytes")
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
            except RequestError as err:
                self.svc.counters["bad_frame"] += 1
                await loop.run_in_executor(None, self._audit_bad, who, err)
                writer.write(protocol.error(err))
                await writer.drain()
                continue
            self.svc.counters[f"op_{op.value}"] += 1
            route = HANDLERS[op]
            try:
                scope = await loop.run_in_executor(None, self.svc.gate.check, who, op, args)
                if isinstance(route, Streaming):
                    await route.fn(self.svc, Conn(who, reader, writer), scope)
                    return  # a stream owns its connection
                if isinstance(route, Rebind):  # this connection's identity from now on
                    who, result = await loop.run_in_executor(None, route.fn, self.svc, who,
                                                             scope)
                else:
                    result = await loop.run_in_executor(None, route.fn, self.svc, who, scope)
                writer.write(protocol.ok(result))
            except PeriscopeError as err:
                fault = protocol.fault_of(err)
                if fault is Fault.INTERNAL:
                    raise  # not meant for a client: logged, and the connection closed
                self.svc.counters[f"fault_{fault.name.lower()}"] += 1
                writer.write(protocol.error(err))
            await writer.drain()

    def _audit_bad(self, who: Principal, err: RequestError) -> None:
        with contextlib.suppress(AuditFailed):
            self.svc.gate.record(who, "invalid", {}, allowed=False, reason=str(err))
