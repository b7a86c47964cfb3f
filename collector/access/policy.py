"""Roles and bindings from policy.toml: what each Unix user and group may do."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from collector.access.auth import Principal
from collector.errors import PolicyError
from collector.protocol import Op, OpKind
from collector.selectors import (
    Level,
    Selector,
    SelectorError,
    parse_duration,
    parse_selector,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ROLE_OPS", "Policy", "PolicyError", "RequestRule", "Role"]

# What a role may list: every op the policy decides (hello is answered for anyone).
ROLE_OPS = frozenset(op.value for op in Op if op.kind is not OpKind.IDENTITY)
_ROLE_KEYS = {"ops", "max_level", "targets", "max_duration", "require_reason", "request",
              "break_glass", "require_idp", "export"}
_REQUEST_KEYS = {"max_level", "targets", "max_duration", "approvals", "reviewers"}
# Ops a role gets from what it says rather than from its `ops` list: a [request] table lets
# its members file and follow their own requests; break_glass = true lets them self-grant;
# a reviewer (request.approve or request.deny) may read the requests it reviews.
_REQUESTER_OPS = frozenset({"request.create", "request.list", "request.show", "request.wait",
                            "request.cancel"})
_REVIEW_OPS = frozenset({"request.approve", "request.deny"})
_READ_OPS = frozenset({"request.list", "request.show"})
MAX_APPROVALS = 5
_IDP_GROUP = re.compile(r"[^\x00-\x1f\x7f]{1,200}\Z")


@dataclass(frozen=True)
class RequestRule:
    """What members of a role may ask for, and who must approve it (N of the reviewers)."""

    max_level: Level
    targets: tuple[Selector, ...]
    max_duration: int  # seconds: the longest grant a request may ask for
    approvals: int
    reviewers: tuple[str, ...]  # "alice", "@group"; () = anyone whose role may approve
_ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")
_UNIX_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?\Z")  # no '#', '@', ':' or spaces


@dataclass(frozen=True)
class Role:
    """What a role may do: operations, a level ceiling, target selectors, a session cap."""

    name: str
    ops: frozenset[str]
    max_level: Level
    targets: tuple[Selector, ...]
    max_duration: int  # seconds
    require_reason: bool
    # Highest level at which a session this role allows may also be sent off the host
    # (the exporters of [export.*]); None: never. The session asks for it (trace --export).
    export: Level | None = None
    request: RequestRule | None = None  # set: members may request access (requests.py)
    break_glass: bool = False   # members may self-grant payload for at most 15 min, loudly
    require_idp: bool = False   # payload through this role needs a verified IdP login

    def reviewer(self, principal: Principal) -> bool:
        """Whether `principal` is named among the reviewers of this role's requests; when
        none are named, anyone whose own role may approve reviews them."""
        named = self.request.reviewers if self.request is not None else ()
        return not named or any(
            r[1:] in principal.group_names if r.startswith("@") else r == principal.user
            for r in named)


@dataclass(frozen=True)
class Policy:
    """Roles plus the user, group and IdP-group bindings to them. Immutable once loaded."""

    roles: Mapping[str, Role]
    users: Mapping[str, tuple[str, ...]]
    groups: Mapping[str, tuple[str, ...]]
    source: str = "<string>"
    idp_groups: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))
    digest: str = ""  # SHA-256 of the policy text (audited at start and on reload)

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
        policy = _parse(doc, source)
        return dataclasses.replace(policy, digest=hashlib.sha256(text.encode()).hexdigest())

    def roles_for(self, principal: Principal) -> tuple[Role, ...]:
        """Roles bound to the principal's user name, to any of its groups, or (once it
        presented a verified ID token) to any of its identity-provider groups."""
        names = list(self.users.get(principal.user, ()))
        for group in sorted(principal.group_names):
            names.extend(self.groups.get(group, ()))
        if principal.idp is not None:
            for group in sorted(principal.idp.groups):
                names.extend(self.idp_groups.get(group, ()))
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
        if op != "*" and op not in ROLE_OPS:
            raise _fail(source, f"{where}.ops",
                        f"unknown operation {op!r} (known: {sorted(ROLE_OPS)})")
    level, duration = table["max_level"], table.get("max_duration", "1h")
    if not isinstance(level, str) or not isinstance(duration, str):
        raise _fail(source, where, "max_level and max_duration must be strings")
    flags = {}
    for key in ("require_reason", "break_glass", "require_idp"):
        flags[key] = table.get(key, False)
        if not isinstance(flags[key], bool):
            raise _fail(source, f"{where}.{key}", "expected true or false")
    export = table.get("export", False)
    if export is not False and export not in ("meta", "payload"):
        raise _fail(source, f"{where}.export",
                    'expected false, "meta" or "payload" (the highest level exported)')
    try:
        max_level = Level.parse(level)
        exported = Level.parse(export) if export else None
        if exported is not None and exported > max_level:
            raise _fail(source, f"{where}.export", f"{export!r} is above max_level {level!r}")
        targets = tuple(parse_selector(t)
                        for t in _str_list(table["targets"], source, f"{where}.targets"))
        role = Role(
            name=name,
            ops=ROLE_OPS if "*" in ops else frozenset(ops),
            max_level=max_level,
            targets=targets,
            max_duration=parse_duration(duration),
            require_reason=flags["require_reason"],
            break_glass=flags["break_glass"],
            require_idp=flags["require_idp"],
            export=exported,
        )
    except SelectorError as err:
        raise _fail(source, where, str(err)) from err
    if "request" in table:
        role = dataclasses.replace(role, request=_parse_request(role, table["request"], source))
    elif "request.create" in ops:
        raise _fail(source, f"{where}.ops", "request.create needs a [roles."
                    f"{name}.request] table saying what may be requested and who approves")
    extra: set[str] = set()
    if role.request is not None:
        extra |= _REQUESTER_OPS
    if role.break_glass:
        extra |= {"request.break_glass"} | _READ_OPS
    if role.ops & _REVIEW_OPS:
        extra |= _READ_OPS
    return dataclasses.replace(role, ops=role.ops | extra)


def _parse_request(role: Role, table: Any, source: str) -> RequestRule:
    """[roles.NAME.request]: what may be asked for (defaults: the role's own scope)."""
    where = f"roles.{role.name}.request"
    if not isinstance(table, dict):
        raise _fail(source, where, "expected a table")
    unknown = sorted(set(table) - _REQUEST_KEYS)
    if unknown:
        raise _fail(source, f"{where}.{unknown[0]}",
                    f"unknown key (expected: {', '.join(sorted(_REQUEST_KEYS))})")
    approvals = table.get("approvals", 1)
    if isinstance(approvals, bool) or not isinstance(approvals, int) \
            or not 1 <= approvals <= MAX_APPROVALS:
        raise _fail(source, f"{where}.approvals", f"expected a whole number from 1 to "
                    f"{MAX_APPROVALS} (approvals needed from reviewers other than the "
                    "requester)")
    reviewers = _str_list(table.get("reviewers", []), source, f"{where}.reviewers")
    for r in reviewers:
        if not _UNIX_NAME.match(r.removeprefix("@")):
            raise _fail(source, f"{where}.reviewers",
                        f"{r!r} is not a user name or @group")
    level, duration = table.get("max_level", str(role.max_level)), table.get("max_duration")
    if not isinstance(level, str) or not isinstance(duration, (str, type(None))):
        raise _fail(source, where, "max_level and max_duration must be strings")
    try:
        targets = tuple(parse_selector(t) for t in _str_list(
            table["targets"], source, f"{where}.targets")) if "targets" in table \
            else role.targets
        return RequestRule(
            max_level=Level.parse(level),
            targets=targets,
            max_duration=parse_duration(duration) if duration else role.max_duration,
            approvals=approvals,
            reviewers=tuple(reviewers),
        )
    except SelectorError as err:
        raise _fail(source, where, str(err)) from err


def _parse_bindings(
    doc: dict[str, Any], key: str, roles: Mapping[str, Role], source: str,
    valid: re.Pattern[str] = _UNIX_NAME, what: str = "Unix user or group name",
) -> dict[str, tuple[str, ...]]:
    """[users], [groups] or [idp_groups]: a name that `valid` accepts -> known roles."""
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise _fail(source, key, 'expected a table of "name" = [roles]')
    out = {}
    for name, value in table.items():
        if not valid.match(name):
            raise _fail(source, f"{key}.{name!r}", f"not a valid {what}")
        names = _str_list(value, source, f"{key}.{name}")
        for role in names:
            if role not in roles:
                raise _fail(source, f"{key}.{name}",
                            f"unknown role {role!r} (defined: {sorted(roles)})")
        out[name] = tuple(names)
    return out


def _parse(doc: dict[str, Any], source: str) -> Policy:
    unknown = sorted(set(doc) - {"roles", "users", "groups", "idp_groups"})
    if unknown:
        raise _fail(source, unknown[0],
                    "unknown top-level key (expected roles, users, groups, idp_groups)")
    roles_table = doc.get("roles", {})
    if not isinstance(roles_table, dict):
        raise _fail(source, "roles", "expected a table of roles")
    roles = {name: _parse_role(name, table, source) for name, table in roles_table.items()}
    return Policy(
        roles=MappingProxyType(roles),
        users=MappingProxyType(_parse_bindings(doc, "users", roles, source)),
        groups=MappingProxyType(_parse_bindings(doc, "groups", roles, source)),
        source=source,
        # identity-provider group names: any printable text
        idp_groups=MappingProxyType(_parse_bindings(doc, "idp_groups", roles, source,
                                                    _IDP_GROUP, "group name")),
    )
