"""The gate: every request decided and audited (allowed, denied or malformed), decided on
live facts for live ops and on none for stored queries, and fail-closed on audit errors."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.access import audit as audit_mod
from collector.access.audit import AuditLog
from collector.access.auth import Principal
from collector.access.gate import Gate
from collector.access.grants import GrantStore
from collector.access.policy import Policy
from collector.errors import AuditFailed, BadRequest, Denied
from collector.proc.facts import Enricher
from collector.proc.resolve import Resolver
from collector.protocol import Op
from collector.selectors import Level
from redact import Redactor

REDACTOR = Redactor.default()

DATA_PROC = Path(__file__).parents[2] / "data" / "proc"
POLICY = """
[roles.admin]
ops = ["*"]
max_level = "payload"
targets = ["*"]

[roles.shop]
ops = ["trace", "events"]
max_level = "payload"
targets = ["unit:shop.service"]

[users]
root = ["admin"]
sam = ["shop"]
"""
ROOT = Principal(0, 0, "root", frozenset({0}), frozenset({"root"}), 10, "/usr/bin/periscope")
SAM = Principal(1001, 1001, "sam", frozenset({1001}), frozenset({"sam"}), 11, None)
EVE = Principal(1002, 1002, "eve", frozenset({1002}), frozenset({"eve"}), 12, None)


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    proc = tmp_path / "proc"
    shutil.copytree(DATA_PROC, proc, symlinks=True)  # pid 4242: comm fakesrv in shop.service
    (tmp_path / "cg/system.slice/shop.service").mkdir(parents=True)
    (tmp_path / "cg/system.slice/shop.service/cgroup.procs").write_text("4242\n")
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    return Gate(Policy.load(str(policy_file)), str(policy_file),
                GrantStore(str(tmp_path / "grants.json")), AuditLog(str(tmp_path / "audit.log")),
                Enricher(proc), Resolver(proc, tmp_path / "cg"), redactor=REDACTOR)


def records(gate: Gate) -> list[dict[str, Any]]:
    with open(gate.audit.path, "rb") as f:
        return [orjson.loads(line) for line in f]


def test_allowed_denied_and_malformed_are_all_audited(gate: Gate) -> None:
    scope = gate.check(ROOT, Op.EVENTS, {"limit": 5, "reason": "INC-1"})
    assert scope.op is Op.EVENTS and scope.decision.allowed
    with pytest.raises(Denied, match=r"eve .* has no periscope role"):
        gate.check(EVE, Op.EVENTS, {})
    with pytest.raises(BadRequest, match="targets"):
        gate.check(ROOT, Op.EVENTS, {"targets": "pid:1"})
    got = [(r["op"], r["user"], r["decision"], r["args"]) for r in records(gate)]
    assert got == [("events", "root", "allow", {"limit": 5, "reason": "INC-1"}),
                   ("events", "eve", "deny", {}),
                   ("events", "root", "deny", {"targets": "pid:1"})]


def test_audit_arguments_are_redacted(gate: Gate) -> None:
    gate.check(ROOT, Op.EVENTS, {"reason": "token=ghp_" + "a" * 36})
    assert "ghp_" not in records(gate)[0]["args"]["reason"]


def test_live_ops_are_decided_on_the_processes_running_now(gate: Gate) -> None:
    # sam may trace shop.service: comm:fakesrv resolves (fake /proc) to pid 4242 inside it
    scope = gate.check(SAM, Op.TRACE, {"targets": ["comm:fakesrv"]})
    assert scope.decision.targets == ("pid:4242",)
    with pytest.raises(Denied, match="no permitted target"):
        gate.check(SAM, Op.TRACE, {"targets": ["comm:nothere"]})


def test_stored_queries_resolve_nothing_and_see_up_to_payload(
        gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    def no(*_a: object) -> list[int]:
        raise AssertionError("a stored query must not look at /proc")

    monkeypatch.setattr(gate.resolver, "pids", no)
    d = gate.check(SAM, Op.EVENTS, {"targets": ["comm:gone"]}).decision
    assert d.targets == ("comm:gone",)  # a filter, even for a process long gone
    assert d.visibility is not None and d.level is Level.PAYLOAD  # no "level": all it may see
    assert [str(s) for v in d.visibility.views for s in v.selectors] == ["unit:shop.service"]
    meta = gate.check(SAM, Op.EVENTS, {"level": "meta"}).decision
    assert meta.level is Level.META


@pytest.mark.parametrize("op", [Op.HELLO, Op.EVENTS, Op.STATUS])
def test_fail_closed_when_the_audit_cannot_be_written(
        gate: Gate, monkeypatch: pytest.MonkeyPatch, op: Op) -> None:
    def fail(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(audit_mod.os, "fsync", fail)
    with pytest.raises(AuditFailed, match="fail closed"):
        gate.check(ROOT, op, {})
    monkeypatch.undo()
    assert gate.check(ROOT, op, {}).decision.allowed  # and serves again once it can
    assert [r["op"] for r in records(gate)] == [op.value]


def test_policy_reload_keeps_the_old_policy_when_the_new_one_is_bad(gate: Gate) -> None:
    assert gate.policy_path is not None
    Path(gate.policy_path).write_text("[roles\n")
    assert gate.reload_policy().startswith("rejected:")
    gate.check(SAM, Op.EVENTS, {})  # the old policy still binds sam
    Path(gate.policy_path).write_text(POLICY.replace('sam = ["shop"]', ""))
    assert gate.reload_policy() == f"loaded {gate.policy_path}"
    with pytest.raises(Denied):
        gate.check(SAM, Op.EVENTS, {})


@pytest.mark.parametrize(("args", "kept", "hidden"), [
    ({"pid": 12, "level": "payload", "targets": ["comm:nginx", "unit:shop.service"]},
     {"pid": 12, "level": "payload", "targets": ["comm:nginx", "unit:shop.service"]}, ""),
    ({"password": "hunter2", "API_KEY": "x1", "Authorization": "y2"}, {}, "hunter2"),
    ({"reason": "INC-7 Bearer abcdefghijklmnopqrstuvwxyz0123456789"}, {}, "abcdefghijklmn"),
    ({"reason": "see postgres://app:s3cretpw@db/x"}, {}, "s3cretpw"),
    ({"nested": [{"token": 1}, "ok", {"card": "4111 1111 1111 1111"}]}, {}, "4111 1111"),
])
def test_audited_arguments_go_through_redaction(gate: Gate, args: dict[str, Any],
                                                kept: dict[str, Any], hidden: str) -> None:
    with pytest.raises(Denied):
        gate.check(EVE, Op.EVENTS, args)
    rec = records(gate)[-1]
    for key, value in kept.items():
        assert rec["args"][key] == value
    if hidden:
        assert hidden not in str(rec["args"])

