"""Access-request operations: file, review, cancel, expire, break-glass and use. Each one is
checked against the policy, ends (when approved) as an ordinary grant in the GrantStore,
and is an audit record; if that record cannot be written the step does not happen."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from collector.access import requests as rq
from collector.access.alerts import Hook
from collector.access.auth import Principal
from collector.access.decide import Request, decide
from collector.access.gate import Gate
from collector.access.policy import RequestRule, Role
from collector.access.requests import AccessRequest, RequestStore
from collector.errors import AuditFailed, BadRequest, Denied
from collector.selectors import Level, format_duration, parse_selector

log = logging.getLogger("periscope.access")
BREAK_GLASS_MAX_S = 900  # 15 min: a self-grant is for the first minutes of an incident
BREAK_GLASS_MESSAGE_ID = "5b1f0c3e9a7d4e21b8f6a2c4d9e07f13"  # journalctl MESSAGE_ID=...
SYSTEM = Principal(0, 0, "periscoped", frozenset(), frozenset(), os.getpid(), None)


def rule_of(role: Role) -> RequestRule | None:
    """What a role's members may request: its [request] table, or (a role that lists
    request.create through "*") its own scope, one approval."""
    if role.request is not None:
        return role.request
    if "request.create" in role.ops:
        return RequestRule(role.max_level, role.targets, role.max_duration, 1, ())
    return None


def _covers(role_targets: Any, target: str) -> bool:
    sel = parse_selector(target)
    return any(s.covers(sel) for s in role_targets)


class Desk:
    def __init__(self, gate: Gate, store: RequestStore, hook: Hook | None = None) -> None:
        self.gate, self.store, self.hook = gate, store, hook

    # -- who may see and review ---------------------------------------------------------
    def _roles(self, who: Principal) -> tuple[Role, ...]:
        return self.gate.policy.roles_for(who)

    def reviewer(self, who: Principal, req: AccessRequest, op: str) -> bool:
        role = self.gate.policy.roles.get(req.role)
        return role is not None and role.reviewer(who) and any(
            op in r.ops for r in self._roles(who))

    def visible(self, who: Principal, req: AccessRequest) -> bool:
        """The requester, its reviewers and admins (who may list grants) see a request."""
        return (who.uid == req.uid or self.reviewer(who, req, "request.approve")
                or self.reviewer(who, req, "request.deny")
                or any("grant.list" in r.ops for r in self._roles(who)))

    def get(self, who: Principal, rid: str) -> AccessRequest:
        req = self.store.get(rid)
        if not self.visible(who, req):
            raise Denied(f"request {rid} is not yours to see")
        return req

    def visible_requests(self, who: Principal) -> list[AccessRequest]:
        self.expire_due()
        return [r for r in self.store.list() if self.visible(who, r)]

    # -- audit ----------------------------------------------------------------------------
    def _audit(self, who: Principal, event: str, req: AccessRequest, why: str,
               args: dict[str, Any] | None = None, kind: str = "request",
               session: str | None = None) -> dict[str, Any]:
        return self.gate.record(
            who, f"request.{event}", {"id": req.id, **(args or {})}, allowed=True,
            reason=why, kind=kind, session=session,
            extra={"request": req.id, "state": req.state, "requester": req.requester,
                   "target": req.target, "level": str(req.level), "grant": req.grant})

    def _commit(self, rid: str, step: Callable[[AccessRequest], AccessRequest],
                audit: Callable[[AccessRequest], Any], now: float) -> AccessRequest:
        """Apply a step, audit it, persist it: all or nothing (a grant made for it is
        revoked again if the audit record cannot be written)."""
        def apply(req: AccessRequest) -> AccessRequest:
            new = step(req)
            try:
                audit(new)
            except AuditFailed:
                if new.grant and new.grant != req.grant:
                    self.gate.grants.revoke(new.grant, now)
                raise
            return new
        return self.store.update(rid, apply, now)

    # -- the steps --------------------------------------------------------------------------
    def create(self, who: Principal, target: str, level: Level, duration: float | None,
               reason: str, now: float | None = None) -> tuple[AccessRequest, list[str]]:
        now = time.time() if now is None else now
        if not reason.strip():
            raise BadRequest("a request needs a reason (a ticket id): --reason TEXT")
        fits = [(r, rule) for r in self._roles(who) if (rule := rule_of(r)) is not None
                and level <= rule.max_level and _covers(rule.targets, target)]
        if not fits:
            may = [f"{r.name}: {rule.max_level} on {', '.join(map(str, rule.targets))}"
                   for r in self._roles(who) if (rule := rule_of(r)) is not None]
            raise Denied(f"{who.describe()} may not request {level} on {target}"
                         + (f" (may request: {'; '.join(may)})" if may else
                            " (no role of yours allows requests)"))
        role, rule = max(fits, key=lambda f: f[1].max_duration)
        notes = []
        want = rule.max_duration if duration is None else duration
        if want > rule.max_duration:
            notes.append(f"duration cut from {format_duration(want)} to "
                         f"{format_duration(rule.max_duration)}: the limit of role {role.name}")
            want = rule.max_duration
        req = self.store.new(who, role.name, target, level, want, reason, rule.approvals, now)
        try:
            self._audit(who, "created", req, f"needs {rule.approvals} approval(s) under role "
                        f"{role.name}", {"reason": reason, "for": format_duration(want)})
        except AuditFailed:
            self.store.update(req.id, lambda r: rq.cancel(r, who, now), now)
            raise
        return req, notes

    def review(self, who: Principal, rid: str, approve: bool, comment: str,
               now: float | None = None) -> tuple[AccessRequest, list[str]]:
        now = time.time() if now is None else now
        req = self.store.get(rid)
        op = "request.approve" if approve else "request.deny"
        rq.check_pending(req, now)
        if who.uid == req.uid or who.user == req.requester:
            raise Denied(f"{who.describe()} filed request {rid} and cannot review it "
                         "(a second person must)")
        if not self.reviewer(who, req, op):
            role = self.gate.policy.roles.get(req.role)
            names = ", ".join(role.request.reviewers) if role and role.request and \
                role.request.reviewers else "those whose role may approve"
            raise Denied(f"{who.describe()} is not a reviewer of requests under role "
                         f"{req.role} (reviewers: {names})")
        notes: list[str] = []
        level, duration = req.level, req.duration
        if approve:  # an approver never grants more than they could use themselves
            d = decide(self.gate.policy, self.gate.grants.list(now), who,
                       Request("trace", (req.target,), req.level, req.duration, req.reason),
                       {}, now)
            if not d.allowed or d.level is None or d.duration is None:
                raise Denied(f"{who.describe()} cannot approve access they could not use "
                             f"themselves: {d.reason}")
            level, duration = d.level, d.duration
            notes = [f"bounded by {who.user}'s own rights: {n}" for n in d.narrowed]

        def step(r: AccessRequest) -> AccessRequest:
            new = rq.review(r, who, approve, comment, now, level, duration)
            if new.state == rq.APPROVED:
                lvl, dur = rq.granted(new)
                g = self.gate.grants.add(new.requester, new.target, lvl, dur,
                                         f"request {new.id}: {new.reason}",
                                         created_by="+".join(new.approvers()), now=now)
                new = dataclasses.replace(new, grant=g.id, granted_level=str(lvl),
                                          grant_expires=g.expires)
            return new

        def audit(new: AccessRequest) -> None:
            got = len(new.approvers())
            event = "denied" if not approve else "approved" if new.state == rq.APPROVED \
                else "approval"
            why = (f"{who.user} denied it" if not approve else
                   f"approval {got} of {new.approvals} by {who.user}" + (
                       f"; grant {new.grant} until {time.ctime(new.grant_expires or 0)}"
                       if new.grant else ""))
            self._audit(who, event, new, why, {"comment": comment})
        return self._commit(rid, step, audit, now), notes

    def cancel(self, who: Principal, rid: str, now: float | None = None) -> AccessRequest:
        """The requester withdraws a request; an approved one's grant is revoked."""
        now = time.time() if now is None else now
        old = self.store.get(rid)
        new = self._commit(rid, lambda r: rq.cancel(r, who, now),
                           lambda n: self._audit(who, "cancelled", n, f"{who.user} cancelled "
                                                 f"it (was {old.state})"), now)
        if old.state == rq.APPROVED and old.grant:
            self.gate.grants.revoke(old.grant, now)
        return new

    def grant_revoked(self, who: Principal, grant_id: str, now: float | None = None
                      ) -> AccessRequest | None:
        """A grant was revoked: the request it came from (if any) ends as revoked."""
        now = time.time() if now is None else now
        req = self.store.by_grant(grant_id)
        if req is None or req.state != rq.APPROVED:
            return None
        return self._commit(req.id, lambda r: rq.revoke(r, who.user, now),
                            lambda n: self._audit(who, "revoked", n, f"grant {grant_id} "
                                                  f"revoked by {who.user}"), now)

    def expire_due(self, now: float | None = None) -> list[AccessRequest]:
        """Expire every pending request past its time (the daemon calls this regularly)."""
        now = time.time() if now is None else now
        out = []
        for r in self.store.list():
            if rq.expire(r, now) is not None:
                out.append(self._commit(
                    r.id, lambda x: rq.expire(x, now) or x,
                    lambda n: self._audit(SYSTEM, "expired", n, "not reviewed within "
                                          f"{format_duration(n.expires - n.created)}"), now))
        return out

    def use(self, who: Principal, rid: str, sources: tuple[str, ...], session: str | None,
            now: float | None = None) -> AccessRequest:
        """A trace session started with --request: it must be the caller's approved request
        and its grant must be what allowed the session."""
        now = time.time() if now is None else now
        req = self.store.get(rid)
        if req.uid != who.uid:
            raise Denied(f"request {rid} was filed by {req.requester}, not {who.user}")
        if not req.live(now):
            raise Denied(f"request {rid} is {req.state}" + (
                " and its grant has ended" if req.state == rq.APPROVED else "") +
                ": nothing to use")
        if f"grant {req.grant}" not in sources:
            raise Denied(f"request {rid} (grant {req.grant} on {req.target}) does not cover "
                         "this session: trace its target")
        return self._commit(rid, lambda r: dataclasses.replace(r, used=r.used + 1),
                            lambda n: self._audit(who, "used", n, f"session {session}",
                                                  session=session), now)

    def break_glass(self, who: Principal, target: str, duration: float | None, reason: str,
                    now: float | None = None
                    ) -> tuple[AccessRequest, dict[str, Any], list[str]]:
        """An on-call self-grant of payload, at most 15 min, loud: a distinct audit record,
        a journald warning and the notify hook (the caller counts the metric)."""
        now = time.time() if now is None else now
        if not reason.strip():
            raise BadRequest("break-glass needs a reason (the incident): --reason TEXT")
        roles = [r for r in self._roles(who) if r.break_glass and _covers(r.targets, target)]
        if not roles:
            raise Denied(f"{who.describe()} has no break-glass role covering {target}")
        notes = []
        want = BREAK_GLASS_MAX_S if duration is None else duration
        if want > BREAK_GLASS_MAX_S:
            notes.append(f"duration cut from {format_duration(want)} to "
                         f"{format_duration(BREAK_GLASS_MAX_S)}: the break-glass limit")
            want = BREAK_GLASS_MAX_S
        req = self.store.new(who, roles[0].name, target, Level.PAYLOAD, want, reason, 0, now,
                             state=rq.PENDING)
        record: dict[str, Any] = {}

        def step(r: AccessRequest) -> AccessRequest:
            g = self.gate.grants.add(who.user, r.target, Level.PAYLOAD, want,
                                     f"break-glass {r.id}: {r.reason}",
                                     created_by=who.user, now=now)
            return dataclasses.replace(r, state=rq.APPROVED, break_glass=True, grant=g.id,
                                       granted_level="payload", grant_expires=g.expires)

        def audit(n: AccessRequest) -> None:
            record.update(self._audit(
                who, "break_glass", n, f"{who.user} self-granted payload on {n.target} for "
                f"{format_duration(want)} (break-glass)", {"reason": reason,
                                                          "for": format_duration(want)},
                kind="break_glass"))
        req = self._commit(req.id, step, audit, now)
        log.warning("BREAK-GLASS: %s self-granted payload on %s for %s (grant %s, request "
                    "%s, audit seq %s)", who.describe(), req.target, format_duration(want),
                    req.grant, req.id, record.get("seq"),
                    extra={"MESSAGE_ID": BREAK_GLASS_MESSAGE_ID})
        if self.hook is not None:
            self.hook.fire(record)
        return req, record, notes
