"""Grant store: persistence, atomic writes, expiry, revocation, corrupt files."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from collector.access import grants as grants_mod
from collector.access.auth import Principal
from collector.access.grants import Grant, GrantsError, GrantStore
from collector.selectors import Level

NOW = 1_800_000_000.0
ALICE = Principal(1000, 1000, "alice", frozenset({1000, 50}), frozenset({"alice", "oncall"}), 9,
                  None)
BOB = Principal(1001, 1001, "bob", frozenset({1001}), frozenset({"bob"}), 9, None)


def store(tmp_path: Path) -> GrantStore:
    return GrantStore(str(tmp_path / "grants.json"))


def add(s: GrantStore, principal: str = "alice", duration: float = 3600, now: float = NOW,
        target: str = "unit:checkout.service") -> Grant:
    return s.add(principal, target, Level.PAYLOAD, duration, "INC-1234", "root", now=now)


def test_ids_are_fresh_and_never_reused(tmp_path: Path) -> None:
    s = store(tmp_path)
    ids = [add(s).id for _ in range(50)]
    assert len(set(ids)) == 50 and all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids)
    assert sorted(g.id for g in store(tmp_path).list(now=NOW)) == sorted(ids)


def test_add_persists_and_survives_restart(tmp_path: Path) -> None:
    s = store(tmp_path)
    g = add(s)
    assert re.fullmatch(r"[0-9a-f]{8}", g.id)
    assert (g.principal, g.target, g.level, g.expires) == (
        "alice", "unit:checkout.service", Level.PAYLOAD, NOW + 3600)
    assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
    again = GrantStore(s.path)
    assert again.list(NOW) == [g]
    assert [p.name for p in tmp_path.iterdir()] == ["grants.json"]  # no temp files left


def test_expiry_and_pruning(tmp_path: Path) -> None:
    s = store(tmp_path)
    short = add(s, duration=60)
    long = add(s, duration=7200)
    later = NOW + 120
    assert s.list(later) == [long]
    assert s.list(later, include_expired=True) == [short, long]
    assert s.active_for(ALICE, later) == [long]
    add(s, principal="bob", now=later)  # a write prunes what has expired
    on_disk = json.loads(Path(s.path).read_text())["grants"]
    assert short.id not in {g["id"] for g in on_disk} and len(on_disk) == 2


def test_revoke(tmp_path: Path) -> None:
    s = store(tmp_path)
    g, h = add(s), add(s, duration=10)
    assert s.revoke(g.id, now=NOW) is True
    assert s.revoke(g.id, now=NOW) is False
    assert s.revoke("ffffffff", now=NOW) is False
    assert s.revoke(h.id, now=NOW + 20) is False  # already expired
    assert GrantStore(s.path).list(NOW) == [h]


def test_active_for_user_and_group(tmp_path: Path) -> None:
    s = store(tmp_path)
    mine, ours, theirs = add(s, "alice"), add(s, "@oncall"), add(s, "bob")
    assert s.active_for(ALICE, NOW) == [mine, ours]
    assert s.active_for(BOB, NOW) == [theirs]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"principal": "a b"}, "bad grant principal"),
    ({"principal": "@"}, "bad grant principal"),
    ({"target": "pod:x"}, "bad selector"),
    ({"duration": 0}, "positive"),
])
def test_add_validation(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    s = store(tmp_path)
    with pytest.raises(ValueError, match=message):
        add(s, **kwargs)
    with pytest.raises(ValueError, match="reason"):
        s.add("alice", "*", Level.META, 60, "  ", "root", now=NOW)
    assert s.list(NOW) == [] and not os.path.exists(s.path)


GOOD = {"id": "0123abcd", "principal": "alice", "target": "pid:1", "level": "meta",
        "created": NOW, "expires": NOW + 60, "reason": "r", "created_by": "root"}


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "corrupt file"),
    ("[]", "version 1"),
    ('{"version": 2, "grants": []}', "version 1"),
    ('{"version": 1, "grants": {}}', "'grants' must be a list"),
    (json.dumps({"version": 1, "grants": [{**GOOD, "level": "raw"}]}), "capture level"),
    (json.dumps({"version": 1, "grants": [{**GOOD, "target": "x"}]}), "bad selector"),
    (json.dumps({"version": 1, "grants": [{**GOOD, "id": "../x"}]}), "bad grant id"),
    (json.dumps({"version": 1, "grants": [{**GOOD, "expires": "soon"}]}), "wrong type"),
    (json.dumps({"version": 1, "grants": [{**GOOD, "extra": 1}]}), "unknown keys"),
])
def test_corrupt_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "grants.json"
    path.write_text(content)
    with pytest.raises(GrantsError, match=message) as exc:
        GrantStore(str(path))
    assert str(path) in str(exc.value)


def test_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "grants.json"
    path.write_text(json.dumps({"version": 1, "grants": [GOOD]}))
    assert GrantStore(str(path)).list(NOW)[0].id == "0123abcd"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(GrantsError, match="cannot read"):
        GrantStore(str(tmp_path))  # a directory


def test_failed_write_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = store(tmp_path)
    g = add(s)
    before = Path(s.path).read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(grants_mod.os, "replace", fail)
    with pytest.raises(GrantsError, match="cannot write: No space left"):
        add(s, principal="bob")
    with pytest.raises(GrantsError):
        s.revoke(g.id, now=NOW)
    monkeypatch.undo()
    assert Path(s.path).read_bytes() == before
    assert s.list(NOW) == [g]
    assert [p.name for p in tmp_path.iterdir()] == ["grants.json"]


def test_write_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(grants_mod.os, "fsync", spy)
    add(store(tmp_path))
    assert synced == [False, True]  # the file, then its directory


def test_reload_keeps_grants_on_error(tmp_path: Path) -> None:
    s = store(tmp_path)
    g = add(s)
    Path(s.path).write_text("garbage")
    with pytest.raises(GrantsError):
        s.reload()
    assert s.list(NOW) == [g]
