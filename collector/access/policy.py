"""Roles and bindings from policy.toml, and the pure access decision `decide`."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from collector.access.auth import Principal
from collector.access.grants import Grant
from collector.selectors import (
    Level,
    Selector,
    SelectorError,
    TargetFacts,
    format_duration,
    parse_duration,
    parse_selector,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "OPS", "QUERY_OPS", "TARGET_OPS", "Decision", "Policy", "PolicyError", "Request", "Role",
    "decide",
]

QUERY_OPS = frozenset({"events", "http", "conns", "top", "errors", "snapshot"})
TARGET_OPS = frozenset({"trace"}) | QUERY_OPS  # ops scoped by targets; grants give these
ADMIN_OPS = frozenset({
    "status", "grant.add", "grant.list", "grant.revoke", "audit.show", "audit.verify",
})
OPS = TARGET_OPS | ADMIN_OPS
_ROLE_KEYS = {"ops", "max_level", "targets", "max_duration", "require_reason"}
_ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")
_UNIX_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?\Z")  # no '#', '@', ':' or spaces


class PolicyError(ValueError):
    """The policy file is unreadable or invalid; the message names the file and the key."""


@dataclass(frozen=True)
class Role:
    """What a role may do: operations, a level ceiling, target selectors, a session cap."""

    name: str
    ops: frozenset[str]
    max_level: Level
    targets: tuple[Selector, ...]
    max_duration: int  # seconds
    require_reason: bool


@dataclass(frozen=True)
class Policy:
    """Roles plus the user and group bindings to them. Immutable once loaded."""

    roles: Mapping[str, Role]
    users: Mapping[str, tuple[str, ...]]
    groups: Mapping[str, tuple[str, ...]]
    source: str = "<string>"

    @classmethod
    def load(cls, path: str) -> Policy:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise PolicyError(f"policy {path}: cannot read: {err}") from err
        return cls.from_toml(text, source=path)

    @classmethod
    def default(cls) -> Policy:
        """The embedded default: root is admin, group periscope is investigator."""
        text = resources.files("collector").joinpath("defaults/policy.toml").read_text("utf-8")
        return cls.from_toml(text, source="<embedded default policy>")

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> Policy:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise PolicyError(f"policy {source}: invalid TOML: {err}") from err
        return _parse(doc, source)

    def roles_for(self, principal: Principal) -> tuple[Role, ...]:
        """Roles bound to the principal's user name or to any of its groups, by name."""
        names = list(self.users.get(principal.user, ()))
        for group in sorted(principal.group_names):
            names.extend(self.groups.get(group, ()))
        return tuple(self.roles[n] for n in dict.fromkeys(names))


def _fail(source: str, where: str, msg: str) -> PolicyError:
    return PolicyError(f"policy {source}: {where}: {msg}")


def _str_list(value: Any, source: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, where, "expected a string or a list of strings")
    return list(value)


def _parse_role(name: str, table: Any, source: str) -> Role:
    where = f"roles.{name}"
    if not _ROLE_NAME.match(name):
        raise _fail(source, where, "role names are lowercase letters, digits, '-' and '_'")
    if not isinstance(table, dict):
        raise _fail(source, where, "expected a table")
    unknown = sorted(set(table) - _ROLE_KEYS)
    if unknown:
        raise _fail(source, f"{where}.{unknown[0]}",
                    f"unknown key (expected: {', '.join(sorted(_ROLE_KEYS))})")
    missing = sorted({"ops", "max_level", "targets"} - set(table))
    if missing:
        raise _fail(source, where, f"missing required key {missing[0]!r}")
    ops = _str_list(table["ops"], source, f"{where}.ops")
    for op in ops:
        if op != "*" and op not in OPS:
            raise _fail(source, f"{where}.ops", f"unknown operation {op!r} (known: {sorted(OPS)})")
    level, duration = table["max_level"], table.get("max_duration", "1h")
    if not isinstance(level, str) or not isinstance(duration, str):
        raise _fail(source, where, "max_level and max_duration must be strings")
    reason = table.get("require_reason", False)
    if not isinstance(reason, bool):
        raise _fail(source, f"{where}.require_reason", "expected true or false")
    try:
        return Role(
            name=name,
            ops=OPS if "*" in ops else frozenset(ops),
            max_level=Level.parse(level),
            targets=tuple(parse_selector(t)
                          for t in _str_list(table["targets"], source, f"{where}.targets")),
            max_duration=parse_duration(duration),
            require_reason=reason,
        )
    except SelectorError as err:
        raise _fail(source, where, str(err)) from err


def _parse_bindings(
    doc: dict[str, Any], key: str, roles: Mapping[str, Role], source: str
) -> dict[str, tuple[str, ...]]:
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise _fail(source, key, "expected a table of name = [roles]")
    out = {}
    for name, value in table.items():
        if not _UNIX_NAME.match(name):
            raise _fail(source, f"{key}.{name}", "not a valid Unix user or group name")
        names = _str_list(value, source, f"{key}.{name}")
        for role in names:
            if role not in roles:
                raise _fail(source, f"{key}.{name}",
                            f"unknown role {role!r} (defined: {sorted(roles)})")
        out[name] = tuple(names)
    return out


def _parse(doc: dict[str, Any], source: str) -> Policy:
    unknown = sorted(set(doc) - {"roles", "users", "groups"})
    if unknown:
        raise _fail(source, unknown[0], "unknown top-level key (expected roles, users, groups)")
    roles_table = doc.get("roles", {})
    if not isinstance(roles_table, dict):
        raise _fail(source, "roles", "expected a table of roles")
    roles = {name: _parse_role(name, table, source) for name, table in roles_table.items()}
    return Policy(
        roles=MappingProxyType(roles),
        users=MappingProxyType(_parse_bindings(doc, "users", roles, source)),
        groups=MappingProxyType(_parse_bindings(doc, "groups", roles, source)),
        source=source,
    )


@dataclass(frozen=True)
class Request:
    """What a client asked for. Targets are selector strings exactly as requested."""

    op: str
    targets: tuple[str, ...] = ()
    level: Level = Level.META
    duration: float | None = None  # seconds; None = as long as allowed
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome: every target in `targets` is allowed at `level` until `deadline`."""

    allowed: bool
    reason: str
    level: Level | None = None
    duration: float | None = None  # trace sessions only
    deadline: float | None = None  # wall clock; trace sessions only
    targets: tuple[str, ...] = ()
    narrowed: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # "role admin", "grant 1a2b3c4d": what allowed it


@dataclass(frozen=True)
class _Auth:
    source: str
    selectors: tuple[Selector, ...]
    level: Level
    until: float  # latest deadline this authorization supports


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
    op, who = request.op, principal.describe()
    if op not in OPS:
        return _deny(f"unknown operation {op!r}")
    if request.duration is not None and not request.duration > 0:
        return _deny("the requested duration must be positive")
    has_reason = bool(request.reason and request.reason.strip())
    roles = policy.roles_for(principal)
    with_op = [r for r in roles if op in r.ops]
    usable = [r for r in with_op if has_reason or not r.require_reason]
    auths = [_Auth(f"role {r.name}", r.targets, r.max_level, now + r.max_duration)
             for r in usable]
    mine = [g for g in grants if g.applies_to(principal) and g.active(now)]
    if op in TARGET_OPS:
        for g in mine:
            with contextlib.suppress(SelectorError):  # a bad grant grants nothing
                auths.append(_Auth(f"grant {g.id}", (parse_selector(g.target),), g.level,
                                   g.expires))
    notes = [f"role {r.name} not used: it requires --reason" for r in with_op if r not in usable]
    if not auths:
        if with_op:
            names = ", ".join(r.name for r in with_op)
            return _deny(f"a reason is required (role {names}): pass --reason TEXT")
        if roles or mine:
            return _deny(f"operation {op!r} is not allowed for {who}")
        return _deny(f"{who} has no periscope role or active grant")
    if op not in TARGET_OPS:
        return Decision(True, "allowed by " + ", ".join(a.source for a in auths),
                        narrowed=tuple(notes), sources=tuple(a.source for a in auths))
    if not request.targets:
        if op in ("trace", "snapshot"):
            return _deny(f"{op} needs at least one target")
        return _scope_everything(request, auths, notes)
    try:
        sels = [(t, parse_selector(t)) for t in request.targets]
    except SelectorError as err:
        return _deny(str(err))

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
        until, sources = min(until, t_until), sources + used
    sources = list(dict.fromkeys(sources))
    done = Decision(True, "allowed by " + ", ".join(sources), level=level,
                    targets=tuple(dict.fromkeys(targets)), sources=tuple(sources))
    if op != "trace":
        return dataclasses.replace(done, narrowed=tuple(notes))
    cap = until - now
    duration = cap if request.duration is None else min(request.duration, cap)
    if request.duration is not None and request.duration > cap:
        notes.append(f"duration cut from {format_duration(request.duration)} to "
                     f"{format_duration(cap)}: the limit of {', '.join(sources)}")
    return dataclasses.replace(done, duration=duration, deadline=now + duration,
                               narrowed=tuple(notes))


def _scope_everything(request: Request, auths: Sequence[_Auth], notes: list[str]) -> Decision:
    """A query without targets means "everything I may see" at one level."""
    level = min(request.level, max(a.level for a in auths))
    if level < request.level:
        limits = sorted({f"{a.source} allows at most {a.level}" for a in auths})
        notes.append(f"level lowered from {request.level} to {level}: " + "; ".join(limits))
    used = [a for a in auths if a.level >= level]
    notes += [f"{a.source} not used: it allows at most {a.level}"
              for a in auths if a.level < level]
    sels = [str(s) for a in used for s in a.selectors]
    if not sels:
        return _deny(f"no permitted target for {request.op}", notes)
    targets = ("*",) if "*" in sels else tuple(dict.fromkeys(sels))
    return Decision(True, "allowed by " + ", ".join(a.source for a in used), level=level,
                    targets=targets, narrowed=tuple(notes), sources=tuple(a.source for a in used))
