"""The gate every request passes: parse scope, resolve facts, decide, audit (fail closed)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.access.audit import AuditLog, AuditWriteError, redact_args, request_record
from collector.access.auth import Principal
from collector.access.grants import GrantStore
from collector.access.policy import Decision, Policy, PolicyError, Request, decide
from collector.proc.facts import Enricher, pids_by_comm, pids_in_cgroup
from collector.protocol import Fault, ProtocolError
from collector.selectors import Level, SelectorError, TargetFacts, parse_selector

log = logging.getLogger("periscope.access")


@dataclass(frozen=True)
class Scope:
    """A request allowed by policy; what the handler may use."""

    op: str
    decision: Decision
    args: dict[str, Any]


def _str_arg(args: dict[str, Any], key: str, default: str | None = None) -> str | None:
    v = args.get(key, default)
    if v is not None and not isinstance(v, str):
        raise ProtocolError(Fault.BAD_REQUEST, f'"{key}" must be a string')
    return v


def build_request(op: str, args: dict[str, Any]) -> Request:
    """Turn wire args into a policy Request. Raises ProtocolError(BAD_REQUEST)."""
    targets = args.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ProtocolError(Fault.BAD_REQUEST, '"targets" must be a list of selector strings')
    if len(targets) > 64:
        raise ProtocolError(Fault.BAD_REQUEST, "at most 64 targets per request")
    try:
        for t in targets:
            parse_selector(t)
        level = Level.parse(_str_arg(args, "level", "meta") or "meta")
    except SelectorError as err:
        raise ProtocolError(Fault.BAD_REQUEST, str(err)) from err
    duration = args.get("duration")
    if duration is not None and (isinstance(duration, bool)
                                 or not isinstance(duration, (int, float)) or duration <= 0):
        raise ProtocolError(Fault.BAD_REQUEST, '"duration" must be a positive number of seconds')
    reason = _str_arg(args, "reason")
    if reason is not None and len(reason) > 500:
        raise ProtocolError(Fault.BAD_REQUEST, '"reason" is longer than 500 characters')
    return Request(op, tuple(targets), level, duration, reason)


class Gate:
    def __init__(self, policy: Policy, policy_path: str | None, grants: GrantStore,
                 audit: AuditLog, enricher: Enricher) -> None:
        self.policy = policy
        self.policy_path = policy_path
        self.grants = grants
        self.audit = audit
        self.enricher = enricher
        self._lock = threading.Lock()  # the enricher cache is not thread-safe

    def reload_policy(self) -> str:
        """SIGHUP: load the policy file again; keep the old one if the new one is invalid."""
        if not self.policy_path or not Path(self.policy_path).exists():
            self.policy = Policy.default()
            return "embedded default policy"
        try:
            self.policy = Policy.load(self.policy_path)
        except (PolicyError, OSError) as err:
            log.error("policy reload rejected, keeping the previous policy: %s", err)
            return f"rejected: {err}"
        return f"loaded {self.policy_path}"

    def facts_for(self, targets: Iterable[str]) -> dict[str, list[TargetFacts]]:
        out: dict[str, list[TargetFacts]] = {}
        with self._lock:
            for t in targets:
                out[t] = [self._facts(pid) for pid in resolve_pids(t)]
        return out

    def _facts(self, pid: int) -> TargetFacts:
        f = self.enricher.read(pid)  # fresh: access decisions never use a stale cache
        return TargetFacts(pid, f.comm, f.exe, f.cgroup, f.unit)

    def check(self, who: Principal, op: str, args: dict[str, Any]) -> Scope:
        """Decide and audit. Raises ProtocolError(DENIED|AUDIT_FAILED|BAD_REQUEST)."""
        try:
            req = build_request(op, args)
        except ProtocolError as err:
            self.record(who, op, args, allowed=False, reason=err.message)
            raise
        facts = self.facts_for(req.targets)
        decision = decide(self.policy, self.grants.list(), who, req, facts, time.time())
        self.record(who, op, args, allowed=decision.allowed, reason=decision.reason)
        if not decision.allowed:
            raise ProtocolError(Fault.DENIED, decision.reason)
        return Scope(op, decision, args)

    def record(self, who: Principal, op: str, args: dict[str, Any], *, allowed: bool,
               reason: str, session: str | None = None, events: int = 0,
               nbytes: int = 0, kind: str = "request") -> None:
        """Append one audit record; if it is not durable, nothing may be disclosed."""
        rec = request_record(who, op, redact_args(args), allowed=allowed, reason=reason,
                             session=session, events=events, bytes_disclosed=nbytes)
        rec["kind"] = kind
        try:
            self.audit.append(rec)
        except AuditWriteError as err:
            log.error("audit write failed, denying: %s", err)
            raise ProtocolError(Fault.AUDIT_FAILED,
                                "audit log is not writable; request denied (fail closed)") from err

    def visibility(self, who: Principal, op: str, reason: str | None) -> Any:
        """A per-row check for stored events: facts -> "payload" | "meta" | None."""
        cache: dict[tuple[Any, ...], str | None] = {}
        grants = self.grants.list()
        now = time.time()

        def visible(row: dict[str, Any]) -> str | None:
            key = (row["pid"], row.get("comm"), row.get("unit"), row.get("exe"))
            if key not in cache:
                sel = f"pid:{row['pid']}"
                facts = {sel: [TargetFacts(row["pid"], row.get("comm"), row.get("exe"), None,
                                           row.get("unit"))]}
                d = decide(self.policy, grants, who,
                           Request(op, (sel,), Level.PAYLOAD, None, reason), facts, now)
                cache[key] = str(d.level) if d.allowed and d.level is not None else None
            return cache[key]

        return visible


def resolve_pids(selector: str) -> list[int]:
    """Processes a selector names right now (for policy facts and tracing)."""
    sel = parse_selector(selector)
    if sel.kind == "pid":
        return [int(sel.value)] if Path(f"/proc/{sel.value}").exists() else []
    if sel.kind == "comm":
        return pids_by_comm(sel.value)
    if sel.kind == "cgroup":
        return pids_in_cgroup(sel.value)
    if sel.kind == "unit":
        path = unit_cgroup(sel.value)
        return pids_in_cgroup(path) if path else []
    if sel.kind == "exe":
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if str((p / "exe").readlink()) == sel.value:
                        out.append(int(p.name))
                except OSError:
                    continue  # exited, or a kernel thread
        return out
    return []


def unit_cgroup(unit: str, cgroot: str = "/sys/fs/cgroup") -> str | None:
    """cgroup path of a systemd unit (searched: units live under *.slice)."""
    root = Path(cgroot)
    for cand in root.rglob(unit):
        if cand.is_dir():
            return "/" + str(cand.relative_to(root))
    return None
