"""Access requests: the pure state machine, and the desk (policy, thresholds, self-approval,
approver bounds, expiry, cancel, revoke, break-glass, persistence, audit of every step)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.access import requests as rq
from collector.access.alerts import Hook
from collector.access.audit import AuditLog, verify
from collector.access.auth import Principal
from collector.access.desk import BREAK_GLASS_MAX_S, Desk
from collector.access.gate import Gate
from collector.access.grants import GrantStore
from collector.access.policy import Policy, PolicyError
from collector.access.requests import RequestStore
from collector.errors import AuditFailed, BadRequest, Denied, NotFound, RequestsError
from collector.proc.facts import Enricher
from collector.proc.resolve import Resolver
from collector.selectors import Level
from redact import Redactor

DATA_PROC = Path(__file__).parents[2] / "data" / "proc"
NOW = 1_800_000_000.0
META, PAYLOAD = Level.META, Level.PAYLOAD
POLICY = """
[roles.admin]
ops = ["*"]
max_level = "payload"
targets = ["*"]
max_duration = "8h"

[roles.dev]
ops = ["trace"]
max_level = "meta"
targets = ["unit:shop.service"]

[roles.dev.request]
max_level = "payload"
max_duration = "2h"
reviewers = ["@leads", "root"]

[roles.pair]
ops = []
max_level = "meta"
targets = ["*"]

[roles.pair.request]
approvals = 2
max_level = "payload"

[roles.lead]
ops = ["trace", "request.approve", "request.deny"]
max_level = "payload"
targets = ["unit:shop.service"]
max_duration = "30m"

[roles.shopmeta]
ops = ["trace", "request.approve"]
max_level = "meta"
targets = ["*"]

[roles.oncall]
ops = ["trace"]
max_level = "meta"
targets = ["unit:shop.service"]
break_glass = true

[users]
root = ["admin"]
rita = ["dev", "oncall"]
pam = ["pair"]
leo = ["lead"]
lena = ["lead"]
mo = ["shopmeta"]
"""


def who(user: str, uid: int, *groups: str) -> Principal:
    return Principal(uid, uid, user, frozenset({uid}), frozenset({user, *groups}), 4242, None)


ROOT, RITA, PAM = who("root", 0), who("rita", 1001), who("pam", 1002)
LEO, LENA, MO, EVE = who("leo", 1003, "leads"), who("lena", 1004), who("mo", 1005, "leads"), \
    who("eve", 1006)


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    proc = tmp_path / "proc"
    shutil.copytree(DATA_PROC, proc, symlinks=True)
    gate = Gate(Policy.from_toml(POLICY), None, GrantStore(str(tmp_path / "grants.json")),
                AuditLog(str(tmp_path / "audit.log")), Enricher(proc),
                Resolver(proc, tmp_path / "cg"), redactor=Redactor.default())
    return Desk(gate, RequestStore(str(tmp_path / "requests.json"), ttl=3600))


def events(desk: Desk) -> list[tuple[str, str, str]]:
    """(op, user, state) of each request-step record."""
    with open(desk.gate.audit.path, "rb") as f:
        recs = [orjson.loads(line) for line in f]
    return [(r["op"], r["user"], r.get("state")) for r in recs]


# -- the pure state machine ------------------------------------------------------------------
def _req(**over: Any) -> rq.AccessRequest:
    base = rq.AccessRequest("0000abcd", "rita", 1001, "dev", "unit:shop.service", PAYLOAD,
                            3600.0, "INC-1", NOW, NOW + 86400, 2)
    return dataclasses.replace(base, **over)


def test_state_machine_threshold_self_and_repeat() -> None:
    r = _req()
    with pytest.raises(Denied, match="filed request 0000abcd and cannot review it"):
        rq.review(r, RITA, True, "", NOW)
    r1 = rq.review(r, LEO, True, "ok", NOW, PAYLOAD, 1800)
    assert r1.state == rq.PENDING and r1.approvers() == ["leo"]
    with pytest.raises(BadRequest, match="already reviewed"):
        rq.review(r1, LEO, True, "", NOW)
    r2 = rq.review(r1, LENA, True, "", NOW + 5, META, 3600)
    assert r2.state == rq.APPROVED
    assert rq.granted(r2) == (META, 1800)  # the least any approver could give
    with pytest.raises(BadRequest, match="is approved, not pending"):
        rq.review(r2, ROOT, False, "no", NOW)
    denied = rq.review(r1, LENA, False, "no", NOW)
    assert (denied.state, denied.closed_by) == (rq.DENIED, "lena")


def test_state_machine_expiry_cancel_revoke() -> None:
    r = _req()
    assert rq.expire(r, NOW + 86399) is None
    gone = rq.expire(r, NOW + 86400)
    assert gone is not None and gone.state == rq.EXPIRED
    with pytest.raises(BadRequest, match="has expired"):
        rq.review(r, LEO, True, "", NOW + 86400)
    with pytest.raises(Denied, match="only rita may cancel"):
        rq.cancel(r, LEO, NOW)
    assert rq.cancel(r, RITA, NOW).state == rq.CANCELLED
    with pytest.raises(BadRequest, match="nothing to cancel"):
        rq.cancel(gone, RITA, NOW)
    assert rq.revoke(_req(state=rq.APPROVED), "root", NOW).state == rq.REVOKED


# -- the desk -------------------------------------------------------------------------------------
def test_request_only_role_files_and_a_reviewer_approves_into_a_bounded_grant(desk: Desk
                                                                              ) -> None:
    req, notes = desk.create(RITA, "unit:shop.service", PAYLOAD, 3 * 3600, "INC-7", NOW)
    assert req.duration == 2 * 3600 and notes == ["duration cut from 3h to 2h: the limit of "
                                                  "role dev"]
    with pytest.raises(Denied, match=r"may not request payload on unit:other.service"):
        desk.create(RITA, "unit:other.service", PAYLOAD, None, "INC-7", NOW)
    with pytest.raises(Denied, match=r"filed request .* cannot review it"):
        desk.review(RITA, req.id, True, "", NOW + 1)
    with pytest.raises(Denied, match=r"lena .* is not a reviewer of requests under role dev"):
        desk.review(LENA, req.id, True, "", NOW + 1)
    done, notes = desk.review(LEO, req.id, True, "go", NOW + 60)
    assert done.state == rq.APPROVED and done.granted_level == "payload"
    assert notes and "duration cut from 2h to 30m" in notes[0]
    (g,) = desk.gate.grants.list(NOW + 61)
    # An ordinary grant, bounded by leo's 30 min, its clock starting at the approval.
    assert (g.id, g.principal, g.target, g.level) == (done.grant, "rita", "unit:shop.service",
                                                      PAYLOAD)
    assert (g.created, g.expires) == (NOW + 60, NOW + 60 + 1800) and g.created_by == "leo"
    assert [e[:2] for e in events(desk)] == [("request.created", "rita"),
                                             ("request.approved", "leo")]
    # Persisted: a new store reads the same request back.
    again = RequestStore(desk.store.path).get(req.id)
    assert again == done


def test_two_approvals_needed_and_admin_cannot_approve_own(desk: Desk) -> None:
    req, _ = desk.create(PAM, "comm:nginx", PAYLOAD, 600, "INC-8", NOW)
    assert req.approvals == 2
    one, _ = desk.review(ROOT, req.id, True, "", NOW + 1)
    assert one.state == rq.PENDING and desk.gate.grants.list(NOW + 2) == []
    with pytest.raises(Denied, match=r"eve .* is not a reviewer"):
        desk.review(EVE, req.id, True, "", NOW + 2)
    with pytest.raises(Denied, match="could not use themselves"):  # leo: shop.service only
        desk.review(LEO, req.id, True, "", NOW + 2)
    two, notes = desk.review(MO, req.id, True, "", NOW + 3)
    # mo may use meta only: the grant is bounded by the least an approver could give.
    assert two.state == rq.APPROVED and two.granted_level == "meta"
    assert any("level lowered from payload to meta" in n for n in notes), notes
    (g,) = desk.gate.grants.list(NOW + 4)
    assert g.level is META and g.created_by == "root+mo"
    mine, _ = desk.create(ROOT, "comm:nginx", PAYLOAD, 600, "INC-9", NOW)
    with pytest.raises(Denied, match=r"root .* filed request .* cannot review it"):
        desk.review(ROOT, mine.id, True, "", NOW + 1)
    # An admin's request (its role names no reviewers) goes to anyone who may approve.
    assert desk.review(MO, mine.id, True, "", NOW + 2)[0].state == rq.APPROVED


def test_deny_cancel_revoke_expire_are_each_audited(desk: Desk) -> None:
    a, _ = desk.create(RITA, "unit:shop.service", PAYLOAD, 600, "INC-1", NOW)
    desk.review(LEO, a.id, False, "use meta", NOW + 1)
    b, _ = desk.create(RITA, "unit:shop.service", PAYLOAD, 600, "INC-2", NOW)
    desk.cancel(RITA, b.id, NOW + 2)
    c, _ = desk.create(RITA, "unit:shop.service", PAYLOAD, 600, "INC-3", NOW)
    c2, _ = desk.review(ROOT, c.id, True, "", NOW + 3)
    assert desk.gate.grants.revoke(str(c2.grant), NOW + 4)
    assert desk.grant_revoked(ROOT, str(c2.grant), NOW + 4) is not None
    d, _ = desk.create(RITA, "unit:shop.service", PAYLOAD, 600, "INC-4", NOW)
    assert desk.expire_due(NOW + 3599) == []
    (gone,) = desk.expire_due(NOW + 3600)
    assert gone.id == d.id and gone.state == rq.EXPIRED
    states = {r.id: r.state for r in desk.store.list()}
    assert states == {a.id: "denied", b.id: "cancelled", c.id: "revoked", d.id: "expired"}
    steps = [e for e in events(desk) if e[0] != "request.created"]
    assert steps == [("request.denied", "leo", "denied"), ("request.cancelled", "rita",
                                                          "cancelled"),
                     ("request.approved", "root", "approved"),
                     ("request.revoked", "root", "revoked"),
                     ("request.expired", "periscoped", "expired")]
    assert verify(desk.gate.audit.path).ok


def test_cancel_of_an_approved_request_revokes_its_grant(desk: Desk) -> None:
    a, _ = desk.create(RITA, "unit:shop.service", PAYLOAD, 600, "INC-1", NOW)
    a, _ = desk.review(ROOT, a.id, True, "", NOW + 1)
    assert [g.id for g in desk.gate.grants.list(NOW + 2)] == [a.grant]
    desk.cancel(RITA, a.id, NOW + 2)
    assert desk.gate.grants.list(NOW + 3) == []


def test_use_needs_the_callers_live_request_and_its_grant(desk: Desk) -> None:
    a, _ = desk.create(RITA, "unit:shop.service", PAYLOAD, 600, "INC-1", NOW)
    with pytest.raises(Denied, match="is pending: nothing to use"):
        desk.use(RITA, a.id, (), "s1", NOW)
    a, _ = desk.review(ROOT, a.id, True, "", NOW + 1)
    with pytest.raises(Denied, match="filed by rita, not leo"):
        desk.use(LEO, a.id, (f"grant {a.grant}",), "s1", NOW + 2)
    with pytest.raises(Denied, match="does not cover this session"):
        desk.use(RITA, a.id, ("role dev",), "s1", NOW + 2)
    assert desk.use(RITA, a.id, (f"grant {a.grant}",), "s1", NOW + 2).used == 1
    with pytest.raises(Denied, match="its grant has ended"):
        desk.use(RITA, a.id, (f"grant {a.grant}",), "s2", NOW + 700)


def test_break_glass_capped_audited_and_hooked(desk: Desk) -> None:
    fired: list[dict[str, Any]] = []
    desk.hook = Hook(["/bin/true"], 5)
    desk.hook.fire = lambda rec: fired.append(dict(rec))  # type: ignore[method-assign]
    with pytest.raises(Denied, match=r"no break-glass role covering unit:other.service"):
        desk.break_glass(RITA, "unit:other.service", None, "INC-9", NOW)
    with pytest.raises(Denied, match=r"leo .* has no break-glass role"):
        desk.break_glass(LEO, "unit:shop.service", None, "INC-9", NOW)
    with pytest.raises(BadRequest, match="needs a reason"):
        desk.break_glass(RITA, "unit:shop.service", None, " ", NOW)
    req, rec, notes = desk.break_glass(RITA, "unit:shop.service", 3600, "INC-9", NOW)
    assert notes == ["duration cut from 1h to 15m: the break-glass limit"]
    assert req.state == rq.APPROVED and req.break_glass and req.reviews == ()
    (g,) = desk.gate.grants.list(NOW + 1)
    assert (g.principal, g.level, g.expires - g.created) == ("rita", PAYLOAD, BREAK_GLASS_MAX_S)
    assert rec["kind"] == "break_glass" and rec["user"] == "rita" and rec["seq"] >= 1
    assert fired == [rec]


def test_audit_failure_undoes_the_step(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = desk.create(RITA, "unit:shop.service", PAYLOAD, 600, "INC-1", NOW)

    def broken(*args: Any, **kw: Any) -> Any:
        raise AuditFailed("audit log is not writable")
    monkeypatch.setattr(desk.gate, "record", broken)
    with pytest.raises(AuditFailed):
        desk.review(ROOT, a.id, True, "", NOW + 1)
    assert desk.store.get(a.id).state == rq.PENDING and desk.gate.grants.list(NOW + 2) == []


def test_visibility(desk: Desk) -> None:
    a, _ = desk.create(RITA, "unit:shop.service", PAYLOAD, 600, "INC-1", NOW)
    assert [r.id for r in desk.visible_requests(RITA)] == [a.id]
    assert [r.id for r in desk.visible_requests(LEO)] == [a.id]   # a reviewer (@leads)
    assert [r.id for r in desk.visible_requests(ROOT)] == [a.id]  # an admin
    assert desk.visible_requests(PAM) == []
    with pytest.raises(Denied, match="not yours to see"):
        desk.get(PAM, a.id)
    with pytest.raises(NotFound):
        desk.get(ROOT, "ffffffff")


def test_store_corrupt_file_and_concurrent_approvals(tmp_path: Path, desk: Desk) -> None:
    bad = tmp_path / "bad.json"
    for text in ("{not json", json.dumps({"version": 9, "requests": []}),
                 json.dumps({"version": 1, "requests": [{"id": "x"}]})):
        bad.write_text(text)
        with pytest.raises(RequestsError, match="corrupt file"):
            RequestStore(str(bad))
    req, _ = desk.create(PAM, "comm:nginx", PAYLOAD, 600, "INC-8", NOW)
    errs: list[BaseException] = []

    def approve(p: Principal) -> None:
        try:
            desk.review(p, req.id, True, "", NOW + 2)
        except (BadRequest, Denied) as err:
            errs.append(err)
    threads = [threading.Thread(target=approve, args=(p,)) for p in (ROOT, MO)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Both approvals count, one after the other under the store's lock: one grant.
    assert errs == [] and desk.store.get(req.id).approvers() in (["root", "mo"],
                                                                 ["mo", "root"])
    assert len(desk.gate.grants.list(NOW + 3)) == 1


def test_policy_request_keys_are_validated() -> None:
    base = '[roles.r]\nops = ["trace"]\nmax_level = "meta"\ntargets = ["*"]\n'
    for extra, msg in (("[roles.r.request]\napprovals = 0\n", "approvals: expected a whole"),
                       ("[roles.r.request]\nreviewers = ['a b']\n", "is not a user name"),
                       ("[roles.r.request]\nbogus = 1\n", "request.bogus: unknown key"),
                       ("[idp_groups]\n'sre' = ['nope']\n", "unknown role 'nope'")):
        with pytest.raises(PolicyError, match=msg):
            Policy.from_toml(base + extra)
    with pytest.raises(PolicyError, match=r"request.create needs a"):
        Policy.from_toml(base.replace('"trace"', '"request.create"'))
