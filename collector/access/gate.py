"""The gate every request passes: parse scope, resolve facts, decide, audit (fail closed)."""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from collector.access import lifecycle
from collector.access.audit import AuditLog, request_record
from collector.access.auth import Principal
from collector.access.decide import Decision, Request, decide
from collector.access.grants import GrantStore
from collector.access.policy import Policy
from collector.errors import AuditFailed, AuditWriteError, BadRequest, Denied, PolicyError
from collector.proc.facts import Enricher
from collector.proc.resolve import Resolver
from collector.protocol import Op, OpKind
from collector.selectors import Level, SelectorError, TargetFacts, parse_selector

log = logging.getLogger("periscope.access")
_session_ids = itertools.count(1)


def new_session_id() -> str:
    """A trace session's id: unique in this run, and across runs by its random part."""
    return f"s{next(_session_ids)}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Scope:
    """A request allowed by policy; what the handler may use."""

    op: Op
    decision: Decision
    args: dict[str, Any]
    session: str | None = None  # a trace's session id, in its audit record from the start


def _str_arg(args: dict[str, Any], key: str, default: str | None = None) -> str | None:
    v = args.get(key, default)
    if v is not None and not isinstance(v, str):
        raise BadRequest(f'"{key}" must be a string')
    return v


def build_request(op: Op, args: dict[str, Any]) -> Request:
    """Turn wire args into a policy Request. Raises BadRequest.

    A stored query without a "level" asks for whatever the caller may see (the level is
    a ceiling there); everything else defaults to meta.
    """
    targets = args.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise BadRequest('"targets" must be a list of selector strings')
    if len(targets) > 64:
        raise BadRequest("at most 64 targets per request")
    default = "payload" if op.kind is OpKind.STORED else "meta"
    try:
        for t in targets:
            parse_selector(t)
        level = Level.parse(_str_arg(args, "level", default) or default)
    except SelectorError as err:
        raise BadRequest(str(err)) from err
    duration = args.get("duration")
    if duration is not None and (isinstance(duration, bool)
                                 or not isinstance(duration, (int, float)) or duration <= 0):
        raise BadRequest('"duration" must be a positive number of seconds')
    reason = _str_arg(args, "reason")
    if reason is not None and len(reason) > 500:
        raise BadRequest('"reason" is longer than 500 characters')
    export = args.get("export", False)
    if not isinstance(export, bool):
        raise BadRequest('"export" must be true or false')
    if export and op is not Op.TRACE:
        raise BadRequest(f'"export" applies to trace sessions, not to {op.value}')
    return Request(op.value, tuple(targets), level, duration, reason, export)


class FieldRedactor(Protocol):
    """redact.Redactor's view for structured values (audit arguments)."""

    def redact_fields(self, value: Any, /) -> Any: ...


class Gate:
    """Decides and audits every request; thread-safe (requests run on executor threads).

    `export_to` names where an exported session's events go ("otlp http://host:4318",
    "jsonlog /var/lib/periscope/events.jsonl"): empty when no exporter is enabled, and
    then no session may ask for export.
    """

    def __init__(self, policy: Policy, policy_path: str | None, grants: GrantStore,
                 audit: AuditLog, enricher: Enricher, resolver: Resolver, *,
                 redactor: FieldRedactor, export_to: tuple[str, ...] = ()) -> None:
        self.redactor = redactor
        self.export_to = export_to
        self.policy = policy
        self.policy_path = policy_path
        self.grants = grants
        self.audit = audit
        self.enricher = enricher
        self.resolver = resolver
        self._lock = threading.Lock()  # the enricher cache is not thread-safe

    def reload_policy(self) -> str:
        """SIGHUP: load the policy file again; keep the old one if the new one is invalid.
        Either way the outcome is a `policy_reload` audit record (old and new hash)."""
        old = self.policy
        if not self.policy_path or not Path(self.policy_path).exists():
            self.policy, outcome, error = Policy.default(), "embedded default policy", None
        else:
            try:
                self.policy, outcome, error = Policy.load(self.policy_path), \
                    f"loaded {self.policy_path}", None
            except (PolicyError, OSError) as err:
                log.error("policy reload rejected, keeping the previous policy: %s", err)
                outcome, error = f"rejected: {err}", str(err)
        try:
            lifecycle.policy_reload(self.audit, old, self.policy, error)
        except AuditWriteError as err:  # the reload happened; its record is what was lost
            log.error("policy reload: audit record not written: %s", err)
        return outcome

    def facts_for(self, targets: Iterable[str]) -> dict[str, list[TargetFacts]]:
        """The running processes each selector names, with fresh facts (never the cache)."""
        out: dict[str, list[TargetFacts]] = {}
        with self._lock:
            for t in targets:
                out[t] = [self._facts(pid) for pid in self.resolver.pids(t)]
        return out

    def _facts(self, pid: int) -> TargetFacts:
        f = self.enricher.read(pid)  # fresh: access decisions never use a stale cache
        return TargetFacts(pid, f.comm, f.exe, f.cgroup, f.unit)

    def check(self, who: Principal, op: Op, args: dict[str, Any]) -> Scope:
        """Decide and audit. Raises Denied, AuditFailed or BadRequest (each audited)."""
        if op.kind is OpKind.IDENTITY:  # anyone may ask who they are; it is still recorded
            self.record(who, op, {}, allowed=True, reason="identity query")
            return Scope(op, Decision(True, "identity query"), args)
        try:
            req = build_request(op, args)
            if req.export and not self.export_to:
                raise BadRequest("export was asked for, but no exporter is enabled in the "
                                 "daemon's config ([export.otlp] enabled, [export.jsonlog] "
                                 "path)")
        except BadRequest as err:
            self.record(who, op, args, allowed=False, reason=str(err))
            raise
        # Live ops are decided on the processes running now; stored queries on the facts
        # stored with each row (see decide._stored), so nothing is resolved for them.
        facts = self.facts_for(req.targets) if op.kind is OpKind.LIVE else {}
        decision = decide(self.policy, self.grants.list(), who, req, facts, time.time())
        # A session's id is in the record that allows it, so a session_end (or, after a
        # crash, crash_recovered) can always be matched to its start.
        sid = new_session_id() if op.streaming and op.kind is OpKind.LIVE and \
            decision.allowed else None
        exported = self.export_record(decision.export)
        self.record(who, op, args, allowed=decision.allowed, reason=decision.reason,
                    session=sid, extra=None if exported is None else {"export": exported})
        if not decision.allowed:
            raise Denied(decision.reason)
        return Scope(op, decision, args, sid)

    def export_record(self, level: Level | None) -> dict[str, Any] | None:
        """What an audit record says of a session's export: its level and destinations."""
        return None if level is None else {"level": str(level), "to": list(self.export_to)}

    def record(self, who: Principal, op: str, args: dict[str, Any], *, allowed: bool,
               reason: str, session: str | None = None, events: int = 0,
               nbytes: int = 0, kind: str = "request",
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Append one audit record and return it as written; if it is not durable, nothing
        may be disclosed. `extra` holds fields the daemon made (ids, states, an exported
        session's `export` from export_record), never client text: that goes in `args`,
        which is redacted."""
        # Arguments are client text (reasons, selectors): redacted like any captured value.
        rec = request_record(who, str(op), self.redactor.redact_fields(args), allowed=allowed,
                             reason=reason,
                             session=session, events=events, bytes_disclosed=nbytes)
        rec["kind"] = kind
        rec.update(extra or {})
        try:
            return self.audit.append_record(rec)
        except AuditWriteError as err:
            log.error("audit write failed, denying: %s", err)
            raise AuditFailed("audit log is not writable; request denied (fail closed)") from err
