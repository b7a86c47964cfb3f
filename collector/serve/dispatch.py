"""The one dispatch table: every protocol.Op to exactly one handler.

A unary handler runs on an executor thread and returns the result of an {"ok": true}
reply; a streaming handler (Op.streaming) owns the connection until its "end" message.
Every op, hello and trace included, passes the gate before its handler runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.protocol import Op
from collector.serve.handlers import (
    audit,
    grants,
    l7,
    profile,
    queries,
    requests,
    snapshot,
    status,
    trace,
)
from collector.serve.handlers.trace import Conn
from collector.serve.services import Services


@dataclass(frozen=True)
class Unary:
    fn: Callable[[Services, Principal, Scope], Any]


@dataclass(frozen=True)
class Streaming:
    fn: Callable[[Services, Conn, Scope], Awaitable[None]]


@dataclass(frozen=True)
class Rebind:
    """A unary handler that also gives the connection its identity from now on (auth: the
    same Unix user plus a verified identity-provider login)."""

    fn: Callable[[Services, Principal, Scope], tuple[Principal, Any]]


Route = Unary | Streaming | Rebind

HANDLERS: Mapping[Op, Route] = MappingProxyType({
    Op.HELLO: Unary(status.hello),
    Op.STATUS: Unary(status.status),
    Op.TRACE: Streaming(trace.trace),
    Op.SNAPSHOT: Unary(snapshot.snapshot),
    Op.PROFILE: Streaming(profile.profile),
    Op.EVENTS: Unary(queries.events),
    Op.CONNS: Unary(l7.conns),
    Op.TOP: Unary(queries.top),
    Op.ERRORS: Unary(queries.errors),
    Op.HTTP: Unary(l7.http),
    Op.SQL: Unary(l7.sql),
    Op.REDIS: Unary(l7.redis),
    Op.DNS: Unary(l7.dns),
    Op.GRANT_ADD: Unary(grants.grant_add),
    Op.GRANT_LIST: Unary(grants.grant_list),
    Op.GRANT_REVOKE: Unary(grants.grant_revoke),
    Op.AUDIT_SHOW: Unary(audit.audit_show),
    Op.AUDIT_VERIFY: Unary(audit.audit_verify),
    Op.AUTH: Rebind(requests.auth),
    Op.REQUEST_CREATE: Unary(requests.create),
    Op.REQUEST_LIST: Unary(requests.list_),
    Op.REQUEST_SHOW: Unary(requests.show),
    Op.REQUEST_WAIT: Streaming(requests.wait),
    Op.REQUEST_CANCEL: Unary(requests.cancel),
    Op.REQUEST_APPROVE: Unary(requests.approve),
    Op.REQUEST_DENY: Unary(requests.deny),
    Op.REQUEST_BREAK_GLASS: Unary(requests.break_glass),
})
