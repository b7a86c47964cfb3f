"""Export as a policy decision: the role key `export`, decide() for `trace --export`, and the
gate that refuses export when no exporter is enabled and audits where data went."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.access.audit import AuditLog
from collector.access.auth import Principal
from collector.access.decide import Request, decide
from collector.access.gate import Gate, build_request
from collector.access.grants import Grant, GrantStore
from collector.access.policy import Policy, PolicyError
from collector.errors import BadRequest, Denied
from collector.proc.facts import Enricher
from collector.proc.resolve import Resolver
from collector.protocol import Op
from collector.selectors import Level, TargetFacts, parse_selector
from redact import Redactor

NOW = 1_800_000_000.0
META, PAYLOAD = Level.META, Level.PAYLOAD
DATA_PROC = Path(__file__).parents[2] / "data" / "proc"

POLICY = Policy.from_toml("""
[roles.exporter]
ops = ["trace", "events"]
max_level = "payload"
targets = ["unit:checkout.service"]
export = "payload"

[roles.metaexport]
ops = ["trace"]
max_level = "payload"
targets = ["comm:nginx"]
export = "meta"

[roles.local]
ops = ["trace"]
max_level = "payload"
targets = ["*"]

[users]
erin = ["exporter"]
mia = ["metaexport"]
lou = ["local"]
both = ["exporter", "local"]
""")


def who(user: str, uid: int = 1000) -> Principal:
    return Principal(uid, uid, user, frozenset({uid}), frozenset({user}), 4242, "/usr/bin/x")


ERIN, MIA, LOU, BOTH = who("erin"), who("mia"), who("lou"), who("both")
CHECKOUT = TargetFacts(10, "nginx", "/usr/sbin/nginx", "/system.slice/checkout.service")
OTHER = TargetFacts(11, "nginx", "/usr/sbin/nginx", "/system.slice/nginx.service")


def trace(*targets: str, level: Level = PAYLOAD, export: bool = True) -> Request:
    return Request("trace", targets, level, export=export)


@pytest.mark.parametrize(("text", "message"), [
    ('export = true', 'expected false, "meta" or "payload"'),
    ('export = "raw"', 'expected false, "meta" or "payload"'),
    ('export = "payload"', "'payload' is above max_level 'meta'"),
])
def test_role_export_key_is_checked(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_toml(f'[roles.r]\nops = ["trace"]\nmax_level = "meta"\ntargets = ["*"]\n'
                         f"{text}\n", source="p.toml")


def test_role_export_defaults_to_never() -> None:
    assert POLICY.roles["local"].export is None
    assert POLICY.roles["exporter"].export is PAYLOAD
    assert all(r.export is None for r in Policy.default().roles.values())


def test_export_at_the_sessions_level_when_the_role_allows_it() -> None:
    d = decide(POLICY, (), ERIN, trace("unit:checkout.service"), {}, NOW)
    assert d.allowed and d.level is PAYLOAD and d.export is PAYLOAD
    d = decide(POLICY, (), ERIN, trace("unit:checkout.service", level=META), {}, NOW)
    assert d.export is META  # never above the session's own level


def test_export_lowered_to_the_roles_export_level_with_a_note() -> None:
    d = decide(POLICY, (), MIA, trace("comm:nginx"), {}, NOW)
    assert d.allowed and d.level is PAYLOAD and d.export is META
    assert any("exported at meta only" in n and "role metaexport allows export at most meta"
               in n for n in d.narrowed), d.narrowed


def test_no_export_unless_asked() -> None:
    d = decide(POLICY, (), ERIN, trace("unit:checkout.service", export=False), {}, NOW)
    assert d.allowed and d.export is None


def test_export_denied_for_a_role_without_the_key() -> None:
    d = decide(POLICY, (), LOU, trace("pid:10"), {"pid:10": [CHECKOUT]}, NOW)
    assert not d.allowed and "export is not allowed for lou" in d.reason
    assert decide(POLICY, (), LOU, trace("pid:10", export=False), {"pid:10": [CHECKOUT]},
                  NOW).allowed


def test_export_must_cover_the_targets_the_session_was_allowed() -> None:
    # `both` may trace anything (local), but may export only checkout.service's processes.
    facts = {"comm:nginx": [CHECKOUT, OTHER]}
    d = decide(POLICY, (), BOTH, trace("comm:nginx"), facts, NOW)
    assert not d.allowed and "export is not allowed" in d.reason  # nginx.service is not
    d = decide(POLICY, (), BOTH, trace("pid:10"), {"pid:10": [CHECKOUT]}, NOW)
    assert d.allowed and d.export is PAYLOAD and d.targets == ("pid:10",)


def test_a_grant_never_allows_export() -> None:
    g = Grant("0000abcd", "lou", "unit:checkout.service", PAYLOAD, NOW - 60, NOW + 600, "r",
              "root")
    d = decide(POLICY, (g,), LOU, trace("unit:checkout.service"), {}, NOW)
    assert not d.allowed and "export is not allowed" in d.reason


def test_export_is_for_trace_sessions_only() -> None:
    d = decide(POLICY, (), ERIN, Request("events", (), PAYLOAD, export=True), {}, NOW)
    assert not d.allowed and "export applies to trace sessions" in d.reason
    with pytest.raises(BadRequest, match="applies to trace sessions"):
        build_request(Op.EVENTS, {"export": True})
    with pytest.raises(BadRequest, match='"export" must be true or false'):
        build_request(Op.TRACE, {"targets": ["pid:1"], "export": "yes"})


SELS = ["*", "unit:checkout.service", "comm:nginx", "pid:10", "pid:11"]


@given(st.lists(st.tuples(st.sampled_from(SELS), st.sampled_from(["meta", "payload"]),
                          st.sampled_from([None, "meta", "payload"])), min_size=1, max_size=3),
       st.lists(st.sampled_from(SELS[1:]), min_size=1, max_size=2, unique=True),
       st.sampled_from(list(Level)))
@settings(max_examples=300, deadline=None)
def test_export_never_exceeds_a_covering_roles_export(
        roles: list[tuple[str, str, str | None]], targets: list[str], level: Level) -> None:
    text = ""
    for i, (sel, max_level, export) in enumerate(roles):
        if export == "payload" and max_level == "meta":
            export = "meta"
        text += (f'[roles.r{i}]\nops = ["trace"]\nmax_level = "{max_level}"\n'
                 f'targets = ["{sel}"]\n' + (f'export = "{export}"\n' if export else ""))
    text += "[users]\nu = [" + ", ".join(f'"r{i}"' for i in range(len(roles))) + "]\n"
    policy = Policy.from_toml(text)
    world = [CHECKOUT, OTHER]
    facts = {t: [p for p in world if parse_selector(t).matches(p)] for t in targets}
    d = decide(policy, (), who("u"), trace(*targets, level=level), facts, NOW)
    if not d.allowed:
        return
    assert d.export is not None and d.level is not None and d.export <= d.level
    for t in d.targets:  # every exported target is covered by a role exporting at that level
        sel = parse_selector(t)
        procs = [p for p in world if sel.matches(p)] if sel.kind == "pid" else []
        assert any(r.export is not None and r.export >= d.export and any(
            s.covers(sel) or (procs and all(s.matches(p) for p in procs)) for s in r.targets)
            for r in policy.roles.values()), (t, d)


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    resolver = Resolver(DATA_PROC, tmp_path / "cgroup")
    return Gate(POLICY, None, GrantStore(str(tmp_path / "grants.json")),
                AuditLog(str(tmp_path / "audit.log")), Enricher(DATA_PROC), resolver,
                redactor=Redactor.default(),
                export_to=("otlp http://127.0.0.1:4318", "jsonlog /tmp/e.jsonl"))


def records(gate: Gate) -> list[dict[str, object]]:
    with open(gate.audit.path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_audit_record_says_where_and_at_which_level(gate: Gate) -> None:
    scope = gate.check(ERIN, Op.TRACE, {"targets": ["unit:checkout.service"],
                                        "level": "payload", "export": True})
    assert scope.decision.export is PAYLOAD
    rec = records(gate)[-1]
    assert rec["decision"] == "allow"
    assert rec["export"] == {"level": "payload",
                             "to": ["otlp http://127.0.0.1:4318", "jsonlog /tmp/e.jsonl"]}
    gate.check(ERIN, Op.TRACE, {"targets": ["unit:checkout.service"]})
    assert "export" not in records(gate)[-1]


def test_a_denied_export_is_audited(gate: Gate) -> None:
    with pytest.raises(Denied, match="export is not allowed for lou"):
        gate.check(LOU, Op.TRACE, {"targets": ["pid:4242"], "export": True})
    rec = records(gate)[-1]
    assert rec["decision"] == "deny" and "export" not in rec
    assert rec["args"]["export"] is True  # type: ignore[index]


def test_export_refused_when_no_exporter_is_enabled(gate: Gate) -> None:
    gate.export_to = ()
    with pytest.raises(BadRequest, match="no exporter is enabled"):
        gate.check(ERIN, Op.TRACE, {"targets": ["unit:checkout.service"], "export": True})
    rec = records(gate)[-1]
    assert rec["decision"] == "deny" and "no exporter is enabled" in str(rec["reason"])
