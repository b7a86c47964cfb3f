"""Access vocabulary shared by cli, access, capture and store: levels, durations, selectors."""

from __future__ import annotations

import enum
import posixpath
import re
from dataclasses import dataclass
from typing import NamedTuple

from collector.errors import SelectorError

__all__ = [
    "ALL", "SELECTOR_KINDS", "Level", "Selector", "SelectorError", "TargetFacts", "View",
    "Visibility", "format_duration", "parse_duration", "parse_selector", "unit_from_cgroup",
]

SELECTOR_KINDS = ("unit", "cgroup", "comm", "exe", "pid")
_UNIT_SUFFIXES = (".service", ".scope")
_DURATION_RE = re.compile(r"(\d+)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TASK_COMM_LEN = 16  # kernel comm buffer, including the NUL


class Level(enum.IntEnum):
    """Capture level; ordered, and there is nothing above PAYLOAD."""

    META = 0
    PAYLOAD = 1

    @classmethod
    def parse(cls, text: str) -> Level:
        if text not in ("meta", "payload"):
            raise SelectorError(f"unknown capture level {text!r} (expected 'meta' or 'payload')")
        return cls[text.upper()]

    def __str__(self) -> str:
        return self.name.lower()


def parse_duration(text: str) -> int:
    """Parse "30s", "90m", "2h", "1d" or "1h30m" into positive whole seconds."""
    pos, total = 0, 0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise SelectorError(f"bad duration {text!r} (expected e.g. '30s', '90m', '2h', '1h30m')")
    if total <= 0:
        raise SelectorError(f"bad duration {text!r}: must be longer than zero")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds compactly: 3600 -> "1h", 5400 -> "1h30m", 42 -> "42s"."""
    left = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class TargetFacts:
    """What the caller resolved about one concrete process; selectors match against this."""

    pid: int
    comm: str | None = None
    exe: str | None = None
    cgroup: str | None = None
    unit: str | None = None

    def effective_unit(self) -> str | None:
        return self.unit if self.unit is not None else unit_from_cgroup(self.cgroup)


def unit_from_cgroup(path: str | None) -> str | None:
    """The innermost systemd unit (.service or .scope) named in a cgroup v2 path, if any."""
    if not path:
        return None
    for part in reversed(path.split("/")):
        if part.endswith((".service", ".scope")):
            return part
    return None


def _cgroup_within(path: str, prefix: str) -> bool:
    """Path-component prefix match: /a/b is within /a, /a/bc is not."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Selector:
    """A parsed target selector; `*` has kind "*" and an empty value."""

    kind: str
    value: str

    def __str__(self) -> str:
        return "*" if self.kind == "*" else f"{self.kind}:{self.value}"

    def matches(self, facts: TargetFacts) -> bool:
        """True if this selector names the process described by `facts`."""
        if self.kind == "*":
            return True
        if self.kind == "pid":
            return facts.pid == int(self.value)
        if self.kind == "comm":
            return facts.comm == self.value
        if self.kind == "exe":
            return facts.exe == self.value
        if self.kind == "cgroup":
            return facts.cgroup is not None and _cgroup_within(facts.cgroup, self.value)
        return facts.effective_unit() == self.value  # unit

    def covers(self, other: Selector) -> bool:
        """True if every process `other` can ever name is also named by this selector.

        Decided from the selectors alone, with no process facts: `*` covers all,
        equal selectors cover each other, a cgroup covers its sub-cgroups and a
        unit covers cgroups inside it.
        """
        if self.kind == "*" or self == other:
            return True
        if other.kind != "cgroup":
            return False
        if self.kind == "cgroup":
            return _cgroup_within(other.value, self.value)
        return self.kind == "unit" and unit_from_cgroup(other.value) == self.value


ALL = Selector("*", "")


def parse_selector(text: str) -> Selector:
    """Parse `unit:NAME.service`, `cgroup:PATH`, `comm:NAME`, `exe:PATH`, `pid:N` or `*`."""
    if text == "*":
        return ALL
    kind, sep, value = text.partition(":")
    if not sep or kind not in SELECTOR_KINDS:
        raise SelectorError(
            f"bad selector {text!r}: expected one of "
            + ", ".join(f"{k}:..." for k in SELECTOR_KINDS) + " or '*'"
        )
    if not value or any(ord(c) < 32 or c == "\x7f" for c in value):
        raise SelectorError(f"bad selector {text!r}: empty value or control characters")
    if kind == "pid":
        if not value.isascii() or not value.isdigit() or int(value) <= 0:
            raise SelectorError(f"bad selector {text!r}: pid must be a positive integer")
        value = str(int(value))
    elif kind == "comm":
        if len(value.encode()) >= TASK_COMM_LEN:
            raise SelectorError(
                f"bad selector {text!r}: comm is at most {TASK_COMM_LEN - 1} bytes"
            )
    elif kind == "unit":
        if "/" in value or not value.endswith(_UNIT_SUFFIXES) or value in _UNIT_SUFFIXES:
            raise SelectorError(
                f"bad selector {text!r}: unit must be a name like 'nginx.service'"
            )
    else:  # cgroup, exe: absolute, normalised paths only
        if not value.startswith("/") or value.startswith("//") or (
            posixpath.normpath(value) != value
        ):
            raise SelectorError(
                f"bad selector {text!r}: {kind} must be an absolute, normalised path"
            )
    return Selector(kind, value)


class View(NamedTuple):
    """Processes matched by any of `selectors` may be seen at `level`."""

    level: Level
    selectors: tuple[Selector, ...]


@dataclass(frozen=True)
class Visibility:
    """What a caller may see of stored events, as the policy decided it for one request.

    `views` run from the highest level down: a row gets the level of the first view one
    of whose selectors matches the facts stored with it, and no view means not visible.
    store/query.py applies the same rule in SQL; `level_for` is its reference.
    """

    views: tuple[View, ...]

    def level_for(self, facts: TargetFacts) -> Level | None:
        for view in self.views:
            if any(s.matches(facts) for s in view.selectors):
                return view.level
        return None
