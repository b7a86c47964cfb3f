"""Handlers of access requests (request.*), break-glass, and the identity-provider step-up
(auth). The rules live in access/desk.py and access/idp.py; these turn wire arguments into
calls, and end the sessions of a grant a step took away."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

from collector import protocol
from collector.access import requests as rq
from collector.access.auth import Principal
from collector.access.gate import Scope
from collector.access.idp import token_hash
from collector.access.requests import AccessRequest
from collector.errors import BadRequest, Denied, NotFound, Unavailable
from collector.selectors import Level, SelectorError, parse_selector
from collector.serve.handlers.trace import Conn
from collector.serve.services import Services, desk_of, str_arg

MAX_WAIT_S = 3600


def _reply(req: AccessRequest, notes: list[str] | None = None) -> dict[str, Any]:
    return {**req.to_json(), "notes": notes or []}


def _target(args: dict[str, Any]) -> str:
    try:
        return str(parse_selector(str_arg(args, "target", "request")))
    except SelectorError as err:
        raise BadRequest(str(err)) from err


def _duration(args: dict[str, Any]) -> float | None:
    d = args.get("duration")
    if d is None:
        return None
    if isinstance(d, bool) or not isinstance(d, (int, float)) or d <= 0:
        raise BadRequest('"duration" must be a positive number of seconds')
    return float(d)


def _text(args: dict[str, Any], key: str, required: bool = False) -> str:
    v = args.get(key, "")
    if not isinstance(v, str) or len(v) > 500:
        raise BadRequest(f'"{key}" must be a string of at most 500 characters')
    if required and not v.strip():
        raise BadRequest(f'"{key}" is required')
    return v


Handler = Callable[[Services, Principal, Scope], Any]


def refusals_audited(fn: Handler) -> Handler:
    """A step the desk refuses (self-approval, not a reviewer, not pending...) is an audit
    record too: the gate allowed the op, this records that the step did not happen."""
    @functools.wraps(fn)
    def run(svc: Services, who: Principal, scope: Scope) -> Any:
        try:
            return fn(svc, who, scope)
        except (Denied, BadRequest, NotFound) as err:
            rid = scope.args.get("id")
            svc.gate.record(who, str(scope.op), scope.args, allowed=False, reason=str(err),
                            extra={"request": rid} if isinstance(rid, str) else None)
            raise
    return run


@refusals_audited
def create(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    a = scope.args
    try:
        level = Level.parse(_text(a, "level") or "payload")
    except SelectorError as err:
        raise BadRequest(str(err)) from err
    req, notes = desk_of(svc).create(who, _target(a), level, _duration(a),
                                     _text(a, "reason", required=True))
    return _reply(req, notes)


def list_(svc: Services, who: Principal, scope: Scope) -> list[dict[str, Any]]:
    state = scope.args.get("state")
    if state is not None and state not in rq.STATES:
        raise BadRequest(f'"state" must be one of {", ".join(rq.STATES)}')
    return [_reply(r) for r in desk_of(svc).visible_requests(who) if state in (None, r.state)]


def show(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    return _reply(desk_of(svc).get(who, str_arg(scope.args, "id", "request.show")))


@refusals_audited
def approve(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    req, notes = desk_of(svc).review(who, str_arg(scope.args, "id", "request.approve"), True,
                                     _text(scope.args, "comment"))
    return _reply(req, notes)


@refusals_audited
def deny(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    req, notes = desk_of(svc).review(who, str_arg(scope.args, "id", "request.deny"), False,
                                     _text(scope.args, "reason", required=True))
    return _reply(req, notes)


@refusals_audited
def cancel(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    old = desk_of(svc).get(who, str_arg(scope.args, "id", "request.cancel"))
    req = desk_of(svc).cancel(who, old.id)
    ended = svc.router.end_where(lambda s: f"grant {old.grant}" in s.sources, "revoked") \
        if old.grant else 0
    return {**_reply(req), "sessions_ended": ended}


@refusals_audited
def break_glass(svc: Services, who: Principal, scope: Scope) -> dict[str, Any]:
    a = scope.args
    req, record, notes = desk_of(svc).break_glass(who, _target(a), _duration(a),
                                                  _text(a, "reason", required=True))
    svc.counters["break_glass"] += 1  # periscope_break_glass_total
    return {**_reply(req, notes), "audit_seq": record.get("seq")}


async def wait(svc: Services, conn: Conn, scope: Scope) -> None:
    """Block until the request leaves pending (or `timeout` s pass), then reply with it."""
    loop = asyncio.get_running_loop()
    desk = desk_of(svc)
    rid = str_arg(scope.args, "id", "request.wait")
    timeout = scope.args.get("timeout", 600)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 <= timeout <= MAX_WAIT_S:
        raise BadRequest(f'"timeout" must be a number of seconds from 0 to {MAX_WAIT_S}')
    req = await loop.run_in_executor(None, desk.get, conn.who, rid)
    changed = asyncio.Event()

    def on_change(r: AccessRequest) -> None:  # any thread
        if r.id == rid:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(changed.set)

    unsubscribe = desk.store.subscribe(on_change)
    gone = asyncio.ensure_future(conn.reader.read(1))  # EOF: the client stopped waiting
    deadline = time.monotonic() + timeout
    try:
        while req.state == rq.PENDING and not gone.done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), min(left, 1.0))
            changed.clear()
            if time.time() >= req.expires:
                await loop.run_in_executor(None, desk.expire_due)
            req = desk.store.get(rid)
    finally:
        unsubscribe()
        left_early = gone.done()
        gone.cancel()
    if not left_early:
        conn.writer.write(protocol.ok(_reply(req)))
        with contextlib.suppress(ConnectionError):
            await conn.writer.drain()


def auth(svc: Services, who: Principal, scope: Scope) -> tuple[Principal, dict[str, Any]]:
    """Verify an ID token for this connection: from now on its requests carry the IdP
    identity (and roles that require one may allow payload). Audited either way."""
    if svc.idp is None:
        raise Unavailable("identity-provider login is not configured on this host "
                          "([idp] issuer in periscope.toml)")
    token = scope.args.get("id_token")
    try:
        ident = svc.idp.verify(token if isinstance(token, str) else "", who.user)
    except Denied as err:
        svc.counters["idp_refused"] += 1
        extra = {"token_sha256": token_hash(token)} if isinstance(token, str) else {}
        svc.gate.record(who, "auth", {}, allowed=False, reason=str(err), kind="idp_auth",
                        extra=extra)
        raise
    new = dataclasses.replace(who, idp=ident)
    svc.counters["idp_verified"] += 1
    svc.gate.record(new, "auth", {}, allowed=True, reason="identity token verified",
                    kind="idp_auth")
    return new, {"sub": ident.subject, "iss": ident.issuer, "username": ident.username,
                 "groups": sorted(ident.groups), "expires": ident.expires}
