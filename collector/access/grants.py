"""Time-boxed grants on top of the policy, persisted atomically as JSON."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from collector.access.auth import Principal
from collector.errors import GrantsError
from collector.selectors import Level, SelectorError, parse_selector

FORMAT_VERSION = 1
_PRINCIPAL = re.compile(r"@?[A-Za-z0-9_][A-Za-z0-9_.-]*\$?\Z")
_ID = re.compile(r"[0-9a-f]{8}\Z")


@dataclass(frozen=True)
class Grant:
    """Access for a user ("alice") or group ("@ops") to one target at a level, until expiry."""

    id: str
    principal: str
    target: str
    level: Level
    created: float
    expires: float
    reason: str
    created_by: str

    def active(self, now: float) -> bool:
        return now < self.expires

    def applies_to(self, principal: Principal) -> bool:
        if self.principal.startswith("@"):
            return self.principal[1:] in principal.group_names
        return self.principal == principal.user

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["level"] = str(self.level)
        return d

    @classmethod
    def from_json(cls, d: Any) -> Grant:
        """Validate and build a Grant; raises ValueError/TypeError/KeyError on bad input."""
        if not isinstance(d, dict) or set(d) != set(cls.__dataclass_fields__):
            raise ValueError("grant record has missing or unknown keys")
        strs = ("id", "principal", "target", "reason", "created_by", "level")
        nums = ("created", "expires")
        if not all(isinstance(d[k], str) for k in strs) or not all(
            isinstance(d[k], (int, float)) and not isinstance(d[k], bool) for k in nums
        ):
            raise TypeError("grant record has a field of the wrong type")
        return cls(
            id=_check_id(d["id"]),
            principal=_check_principal(d["principal"]),
            target=str(parse_selector(d["target"])),
            level=Level.parse(d["level"]),
            created=float(d["created"]),
            expires=float(d["expires"]),
            reason=d["reason"],
            created_by=d["created_by"],
        )


def _check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"bad grant id {value!r}")
    return value


def _check_principal(value: str) -> str:
    if not _PRINCIPAL.match(value):
        raise ValueError(f"bad grant principal {value!r} (expected 'alice' or '@group')")
    return value


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: temp file in the same dir, fsync, rename, fsync the dir."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path).split(".")[0] + "-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class GrantStore:
    """The live grants, held in memory and written through to `path` on every change.

    The daemon is the only writer. Expired grants are ignored by every read and
    pruned whenever the file is rewritten; revoked grants are removed (the
    audit log keeps their history).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._grants: tuple[Grant, ...] = self._read()

    def _read(self) -> tuple[Grant, ...]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return ()
        except OSError as err:
            raise GrantsError(f"grants {self.path}: cannot read: {err.strerror}") from err
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"expected an object with version {FORMAT_VERSION}")
            if not isinstance(doc.get("grants"), list):
                raise ValueError("'grants' must be a list")
            grants = tuple(Grant.from_json(g) for g in doc["grants"])
        except (ValueError, TypeError, KeyError, SelectorError) as err:
            raise GrantsError(f"grants {self.path}: corrupt file: {err}") from err
        return grants

    def reload(self) -> None:
        """Re-read the file (e.g. on SIGHUP); on error the current grants stay."""
        grants = self._read()
        with self._lock:
            self._grants = grants

    def _write(self, grants: tuple[Grant, ...], now: float) -> tuple[Grant, ...]:
        kept = tuple(g for g in grants if g.active(now))
        doc = {"version": FORMAT_VERSION, "grants": [g.to_json() for g in kept]}
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        try:
            write_atomic(self.path, data)
        except OSError as err:
            raise GrantsError(f"grants {self.path}: cannot write: {err.strerror}") from err
        return kept

    def add(
        self,
        principal: str,
        target: str,
        level: Level | str,
        duration: float,
        reason: str,
        created_by: str,
        now: float | None = None,
    ) -> Grant:
        """Validate, persist and return a new grant; raises ValueError on bad arguments."""
        now = time.time() if now is None else now
        if not duration > 0:
            raise ValueError("grant duration must be positive")
        if not reason.strip():
            raise ValueError("a grant needs a reason")
        with self._lock:
            taken = {g.id for g in self._grants}
            gid = secrets.token_hex(4)
            while gid in taken:
                gid = secrets.token_hex(4)
            grant = Grant(
                id=gid,
                principal=_check_principal(principal),
                target=str(parse_selector(target)),
                level=Level.parse(level) if isinstance(level, str) else Level(level),
                created=now,
                expires=now + duration,
                reason=reason.strip(),
                created_by=created_by,
            )
            self._grants = self._write((*self._grants, grant), now)
        return grant

    def list(self, now: float | None = None, include_expired: bool = False) -> builtins.list[Grant]:
        now = time.time() if now is None else now
        with self._lock:
            grants = self._grants
        return sorted(
            (g for g in grants if include_expired or g.active(now)),
            key=lambda g: g.created,  # stable: insertion order among equals
        )

    def revoke(self, grant_id: str, now: float | None = None) -> bool:
        """Remove a grant; False if no such (or only an expired) grant exists."""
        now = time.time() if now is None else now
        with self._lock:
            if not any(g.id == grant_id and g.active(now) for g in self._grants):
                return False
            self._grants = self._write(tuple(g for g in self._grants if g.id != grant_id), now)
        return True

    def active_for(self, principal: Principal, now: float | None = None) -> builtins.list[Grant]:
        return [g for g in self.list(now) if g.applies_to(principal)]
