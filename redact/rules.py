"""Rule table: TOML loader that compiles every rule once and fails loudly naming the bad rule."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redact import re2compat
from redact.detectors import VALIDATORS, Validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PROTOCOLS = frozenset({"http", "postgres", "mysql", "redis", "dns"})
OPTIONS = frozenset({"ips", "sql_literals"})
BUILTIN = Path(__file__).with_name("rules.toml")
_ID = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_DEF = re.compile(r"<<([a-z_]+)>>")
_KEYS = frozenset(
    {"id", "type", "pattern", "hint", "anchor", "group", "validator", "protocols", "option",
     "ignore_case", "dotall", "priority", "description"}
)


class RuleError(ValueError):
    """A rule that cannot be used. The message names the rule id, never any payload."""


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    pattern: re.Pattern[bytes]
    hint: str
    anchor: re2compat.Regexp | None  # where a match may start (group 1 if any); None: scan lines
    anchor_group: int
    groups: tuple[str, ...]
    validator: Validator | None
    protocols: frozenset[str]
    option: str | None
    priority: int

    def enabled(self, protocol: str | None, options: frozenset[str]) -> bool:
        if self.option is not None and self.option not in options:
            return False
        return not self.protocols or protocol is None or protocol in self.protocols


def _expand(text: str, defs: dict[str, str], rid: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in defs:
            raise RuleError(f"rule {rid!r}: unknown definition <<{m.group(1)}>>")
        return defs[m.group(1)]

    for _ in range(8):  # definitions may use definitions; bounded, so no cycles
        text, n = _DEF.subn(sub, text)
        if not n:
            return text
    raise RuleError(f"rule {rid!r}: definitions nest too deeply")


def _str_list(raw: Any, rid: str, key: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise RuleError(f"rule {rid!r}: {key} must be a string or a list of strings")
    return tuple(raw)


def build_rule(raw: dict[str, Any], defs: dict[str, str]) -> Rule:
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        raise RuleError(f"rule {rid!r}: id must match [a-z][a-z0-9_]*")
    unknown = set(raw) - _KEYS
    if unknown:
        raise RuleError(f"rule {rid!r}: unknown keys {sorted(unknown)}")
    kind = raw.get("type", rid)
    if not isinstance(kind, str) or not _ID.match(kind):
        raise RuleError(f"rule {rid!r}: type must match [a-z][a-z0-9_]*")
    src = raw.get("pattern")
    if not isinstance(src, str) or not src:
        raise RuleError(f"rule {rid!r}: pattern is required")
    src = _expand(src, defs, rid)
    flags = (re.IGNORECASE if raw.get("ignore_case") else 0) | (
        re.DOTALL if raw.get("dotall") else 0
    )
    try:
        pattern = re.compile(src.encode("latin-1"), flags)
    except (re.error, UnicodeEncodeError) as err:
        raise RuleError(f"rule {rid!r}: bad pattern: {err}") from err
    if pattern.match(b""):
        raise RuleError(f"rule {rid!r}: pattern matches the empty string")
    hint = _expand(str(raw.get("hint", src)), defs, rid)
    if raw.get("ignore_case") and not hint.startswith("(?i)"):
        hint = "(?i)" + hint
    try:
        re2compat.compile(hint.encode("latin-1"))
    except ValueError as err:
        raise RuleError(f"rule {rid!r}: hint is not valid RE2 (give an explicit hint)") from err
    anchor = None
    anchor_group = 0
    if "anchor" in raw:
        asrc = _expand(str(raw["anchor"]), defs, rid)
        if raw.get("ignore_case") and not asrc.startswith("(?i)"):
            asrc = "(?i)" + asrc
        try:
            anchor = re2compat.compile(asrc.encode("latin-1"))
        except ValueError as err:
            raise RuleError(f"rule {rid!r}: anchor is not valid RE2") from err
        anchor_group = 1 if re2compat.groups(anchor) else 0
    groups = _str_list(raw.get("group", []), rid, "group")
    missing = [g for g in groups if g not in pattern.groupindex]
    if missing:
        raise RuleError(f"rule {rid!r}: pattern has no group(s) {missing}")
    vname = raw.get("validator")
    if vname is not None and vname not in VALIDATORS:
        raise RuleError(f"rule {rid!r}: unknown validator {vname!r}")
    protocols = frozenset(_str_list(raw.get("protocols", []), rid, "protocols"))
    if protocols - PROTOCOLS:
        raise RuleError(f"rule {rid!r}: unknown protocol(s) {sorted(protocols - PROTOCOLS)}")
    option = raw.get("option")
    if option is not None and option not in OPTIONS:
        raise RuleError(f"rule {rid!r}: unknown option {option!r}")
    priority = raw.get("priority", 100)
    if not isinstance(priority, int):
        raise RuleError(f"rule {rid!r}: priority must be an integer")
    return Rule(
        id=rid,
        kind=kind,
        pattern=pattern,
        hint=hint,
        anchor=anchor,
        anchor_group=anchor_group,
        groups=groups,
        validator=VALIDATORS[vname] if vname else None,
        protocols=protocols,
        option=option,
        priority=priority,
    )


def parse_rules(doc: dict[str, Any], base: list[Rule] | None = None) -> list[Rule]:
    """Rules from a parsed TOML document; `include_defaults = true` prepends the built-ins."""
    rules = list(base or [])
    if doc.get("include_defaults"):
        rules = load_rules(BUILTIN) + rules
    defs = doc.get("defs", {})
    if not isinstance(defs, dict) or not all(isinstance(v, str) for v in defs.values()):
        raise RuleError("rule file: [defs] must map names to strings")
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RuleError("rule file: [[rule]] must be an array of tables")
    seen = {r.id for r in rules}
    for raw in raw_rules:
        if not isinstance(raw, dict):
            raise RuleError("rule file: every [[rule]] must be a table")
        rule = build_rule(raw, defs)
        if rule.id in seen:
            raise RuleError(f"rule {rule.id!r}: duplicate id")
        seen.add(rule.id)
        rules.append(rule)
    return rules


def secret_name_pattern(path: str | Path = BUILTIN) -> re.Pattern[str]:
    """A name that marks its value as a secret (db_password, clientSecret, X-Api-Key): the
    `secret_key` definition the payload rules use, anchored at the end of the name."""
    with open(path, "rb") as fh:
        defs = tomllib.load(fh).get("defs", {})
    return re.compile(_expand("<<secret_key>>", defs, "secret_key") + r"\Z", re.IGNORECASE)


def load_rules(path: str | Path) -> list[Rule]:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise RuleError(f"rule file {str(path)!r}: not valid TOML: {err}") from err
    return parse_rules(doc)
