"""The pure access decision: a principal's request against the policy, grants and facts."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from collector.access.auth import Principal
from collector.access.grants import Grant
from collector.access.policy import Policy, Role
from collector.protocol import Op, OpKind
from collector.selectors import (
    ALL,
    Level,
    Selector,
    SelectorError,
    TargetFacts,
    View,
    Visibility,
    format_duration,
    parse_selector,
)

__all__ = ["Decision", "Request", "decide"]

_OPS: dict[str, Op] = {op.value: op for op in Op if op.kind is not OpKind.IDENTITY}


@dataclass(frozen=True)
class Request:
    """What a client asked for. Targets are selector strings exactly as requested.

    For a stored query (OpKind.STORED) the targets are filters and `level` is a ceiling.
    """

    op: str
    targets: tuple[str, ...] = ()
    level: Level = Level.META
    duration: float | None = None  # seconds; None = as long as allowed
    reason: str | None = None
    export: bool = False  # a trace session whose events also leave the host (exporters)


@dataclass(frozen=True)
class Decision:
    """The outcome: every target in `targets` is allowed at `level` until `deadline`.

    For a stored query, `targets` are the caller's filters (as requested) and `visibility`
    says which stored rows it may see at which level; `level` is the highest of those.
    """

    allowed: bool
    reason: str
    level: Level | None = None
    duration: float | None = None  # trace sessions only
    deadline: float | None = None  # wall clock; trace sessions only
    targets: tuple[str, ...] = ()
    narrowed: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # "role admin", "grant 1a2b3c4d": what allowed it
    visibility: Visibility | None = None  # stored queries only
    export: Level | None = None  # trace sessions asking for export: the level exported


@dataclass(frozen=True)
class _Auth:
    source: str
    selectors: tuple[Selector, ...]
    level: Level
    until: float  # latest deadline this authorization supports
    export: Level | None = None  # highest level it allows to leave the host (roles only)


def _role_auth(role: Role, level: Level, now: float) -> _Auth:
    """A role as an authorization at `level`; its export never above that level (a role
    stepped down to meta for want of an identity-provider login exports meta at most)."""
    export = None if role.export is None else min(role.export, level)
    return _Auth(f"role {role.name}", role.targets, level, now + role.max_duration, export)


def _deny(reason: str, narrowed: Iterable[str] = ()) -> Decision:
    return Decision(False, reason, narrowed=tuple(narrowed))


def _scope(sel: Selector, procs: Sequence[TargetFacts], auths: Sequence[_Auth]
           ) -> tuple[list[str], float, list[str]]:
    """(selectors allowed for one requested target, their deadline bound, sources used)."""
    whole = [a for a in auths if any(s.covers(sel) for s in a.selectors)]
    if whole:
        best = max(whole, key=lambda a: a.until)
        return [str(sel)], best.until, [best.source]
    out: list[str] = []
    used: list[str] = []
    until = float("inf")
    for p in procs:
        ok = [a for a in auths if any(s.matches(p) for s in a.selectors)]
        if ok:  # decided per process: pinned to the pids checked, not to the selector
            best = max(ok, key=lambda a: a.until)
            out.append(f"pid:{p.pid}")
            until, used = min(until, best.until), [*used, best.source]
    return list(dict.fromkeys(out)), until, used


def decide(policy: Policy, grants: Iterable[Grant], principal: Principal, request: Request,
           facts: Mapping[str, Sequence[TargetFacts]], now: float) -> Decision:
    """Decide a request. Pure: `facts` maps each requested target to the processes it
    resolved to, `grants` may include expired or other principals' grants (ignored)."""
    who = principal.describe()
    op = _OPS.get(request.op)
    if op is None:
        return _deny(f"unknown operation {request.op!r}")
    if request.duration is not None and not request.duration > 0:
        return _deny("the requested duration must be positive")
    if request.export and not op.streaming:
        return _deny(f"export applies to trace sessions, not to {op.value}")
    has_reason = bool(request.reason and request.reason.strip())
    roles = policy.roles_for(principal)
    with_op = [r for r in roles if op in r.ops]
    # require_reason is about data access: a request's own steps (create carries a reason
    # of its own; show, wait, cancel) and other untargeted ops do not need one.
    usable = [r for r in with_op if has_reason or not r.require_reason or not op.targeted]
    # require_idp: without a verified identity-provider login the role counts at meta only.
    logged_in = principal.idp is not None and principal.idp.expires > now
    stepped = [r for r in usable if r.require_idp and not logged_in
               and r.max_level > Level.META]
    auths = [_role_auth(r, Level.META if r in stepped else r.max_level, now) for r in usable]
    mine = [g for g in grants if g.applies_to(principal) and g.active(now)]
    if op.targeted:
        for g in mine:
            with contextlib.suppress(SelectorError):  # a bad grant grants nothing
                auths.append(_Auth(f"grant {g.id}", (parse_selector(g.target),), g.level,
                                   g.expires))
    notes = [f"role {r.name} not used: it requires --reason" for r in with_op if r not in usable]
    if request.level > Level.META:
        notes += [f"role {r.name} allows payload only after an identity-provider login "
                  "(periscope login, or --id-token-file)" for r in stepped]
    if not auths:
        if with_op:
            names = ", ".join(r.name for r in with_op)
            return _deny(f"a reason is required (role {names}): pass --reason TEXT")
        if roles or mine:
            return _deny(f"operation {op.value!r} is not allowed for {who}")
        return _deny(f"{who} has no periscope role or active grant")
    if not op.targeted:
        return Decision(True, "allowed by " + ", ".join(a.source for a in auths),
                        narrowed=tuple(notes), sources=tuple(a.source for a in auths))
    try:
        sels = [(t, parse_selector(t)) for t in request.targets]
    except SelectorError as err:
        return _deny(str(err))
    if op.kind is OpKind.STORED:
        return _stored(request, auths, notes)
    if not sels:
        return _deny(f"{op} needs at least one target")

    def at(level: Level, t: str, sel: Selector) -> tuple[list[str], float, list[str]]:
        return _scope(sel, facts.get(t, ()), [a for a in auths if a.level >= level])

    levels = [lv for lv in Level if lv <= request.level]
    best = {t: max((lv for lv in levels if at(lv, t, s)[0]), default=None) for t, s in sels}
    reached = [lv for lv in best.values() if lv is not None]
    if not reached:
        why = "".join(f"; {n}" for n in notes)
        return _deny(f"no permitted target for {who}: {', '.join(request.targets)}{why}", notes)
    level = max(reached)
    if level < request.level:
        limits = sorted({f"{a.source} allows at most {a.level}" for a in auths
                         if a.level < request.level})
        notes.append(f"level lowered from {request.level} to {level}: " + "; ".join(limits))
    targets: list[str] = []
    chosen: list[tuple[str, Selector, list[str]]] = []  # (requested, parsed, allowed as)
    until, sources = float("inf"), list[str]()
    for t, sel in sels:
        out, t_until, used = at(level, t, sel)
        if not out:
            why = "not permitted" if best[t] is None else f"allowed at most {best[t]}"
            notes.append(f"target {t} dropped: {why}")
            continue
        if out != [t]:
            n = len(facts.get(t, ()))
            notes.append(f"target {t} narrowed to {', '.join(out)} ({len(out)} of {n} processes)")
        targets.extend(out)
        chosen.append((t, sel, out))
        until, sources = min(until, t_until), sources + used
    sources = list(dict.fromkeys(sources))
    export: Level | None = None
    if request.export:
        export = _export_level(level, chosen, facts, auths)
        if export is None:
            why = "".join(f"; {n}" for n in notes)
            return _deny(f"export is not allowed for {who}: no role of theirs allows its data "
                         f"off the host for {', '.join(dict.fromkeys(targets))} (policy key "
                         f"export){why}", notes)
        if export < level:
            notes.append(f"exported at {export} only, the session is {level}: "
                         + "; ".join(sorted({f"{a.source} allows export at most {a.export}"
                                             for a in auths if a.export is not None
                                             and a.export < level})))
    done = Decision(True, "allowed by " + ", ".join(sources), level=level,
                    targets=tuple(dict.fromkeys(targets)), sources=tuple(sources),
                    export=export)
    if not op.streaming:  # only a session has a duration
        return dataclasses.replace(done, narrowed=tuple(notes))
    cap = until - now
    duration = cap if request.duration is None else min(request.duration, cap)
    if request.duration is not None and request.duration > cap:
        notes.append(f"duration cut from {format_duration(request.duration)} to "
                     f"{format_duration(cap)}: the limit of {', '.join(sources)}")
    return dataclasses.replace(done, duration=duration, deadline=now + duration,
                               narrowed=tuple(notes))


def _export_level(level: Level, chosen: Sequence[tuple[str, Selector, list[str]]],
                  facts: Mapping[str, Sequence[TargetFacts]], auths: Sequence[_Auth]
                  ) -> Level | None:
    """The highest level, up to the session's, at which roles that allow export cover every
    target exactly as the session was allowed it (a target allowed whole needs an export
    role covering it whole). Grants never allow export: they carry no such key."""
    for lv in sorted((x for x in Level if x <= level), reverse=True):
        ex = [a for a in auths if a.export is not None and a.export >= lv]
        if ex and all(set(out) <= set(_scope(sel, facts.get(t, ()), ex)[0])
                      for t, sel, out in chosen):
            return lv
    return None


def _stored(request: Request, auths: Sequence[_Auth], notes: list[str]) -> Decision:
    """A stored query: what the caller may see at each level up to the requested one.

    Decided from the selectors alone, with no process facts: the store matches them on
    the facts recorded with each row, so a process that exited long ago is still covered
    by the role or grant that covers its unit, comm or exe. The requested targets are
    filters applied on top, never a widening.
    """
    views: list[View] = []
    seen: set[Selector] = set()
    for level in sorted((lv for lv in Level if lv <= request.level), reverse=True):
        used = [s for a in auths if a.level >= level for s in a.selectors]
        sels = (ALL,) if ALL in used else tuple(s for s in dict.fromkeys(used) if s not in seen)
        if ALL in seen or not sels:
            continue  # already visible at a higher level
        views.append(View(level, sels))
        seen.update(sels)
    if not views:
        return _deny(f"no permitted target for {request.op}", notes)
    level = views[0].level
    if level < request.level:
        limits = sorted({f"{a.source} allows at most {a.level}" for a in auths})
        notes.append(f"level lowered from {request.level} to {level}: " + "; ".join(limits))
    used_auths = [a for a in auths if a.selectors]
    return Decision(True, "allowed by " + ", ".join(a.source for a in used_auths), level=level,
                    targets=request.targets, narrowed=tuple(notes),
                    sources=tuple(a.source for a in used_auths), visibility=Visibility(
                        tuple(views)))
