"""Policy parsing and the pure decide() table (live targets and stored-query visibility)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.access.auth import Principal
from collector.access.decide import Decision, Request, decide
from collector.access.grants import Grant
from collector.access.policy import Policy, PolicyError
from collector.protocol import OPS, Op, OpKind
from collector.selectors import (
    Level,
    SelectorError,
    TargetFacts,
    View,
    format_duration,
    parse_duration,
    parse_selector,
    unit_from_cgroup,
)

NOW = 1_800_000_000.0
H = 3600.0
META, PAYLOAD = Level.META, Level.PAYLOAD


def who(user: str, *groups: str, uid: int = 1000) -> Principal:
    return Principal(uid, uid, user, frozenset({uid}), frozenset(groups), 4242, "/usr/bin/x")


ROOT = who("root", "root", uid=0)
ALICE = who("alice", "alice")
BOB = who("bob", "bob", "periscope")
CAROL = who("carol", "carol", "oncall")

CUSTOM = Policy.from_toml("""
[roles.viewer]
ops = ["trace", "events", "http"]
max_level = "meta"
targets = ["*"]
max_duration = "8h"

[roles.checkout]
ops = ["trace", "events"]
max_level = "payload"
targets = ["unit:checkout.service", "cgroup:/system.slice/pay"]
max_duration = "30m"

[users]
alice = "viewer"
dave = ["checkout"]
""")
DAVE = who("dave", "dave")

NGINX_A = TargetFacts(10, "nginx", "/usr/sbin/nginx", "/system.slice/checkout.service")
NGINX_B = TargetFacts(11, "nginx", "/usr/sbin/nginx", "/system.slice/nginx.service")


def grant(principal: str, target: str, level: Level = PAYLOAD, expires: float = NOW + 1800,
          gid: str = "0000abcd") -> Grant:
    return Grant(gid, principal, target, level, NOW - 60, expires, "INC-1", "root")


@dataclass
class Case:
    name: str
    principal: Principal
    request: Request
    allowed: bool
    reason: str = ""  # substring of Decision.reason
    policy: Policy = field(default_factory=Policy.default)
    grants: tuple[Grant, ...] = ()
    facts: dict[str, list[TargetFacts]] = field(default_factory=dict)
    level: Level | None = None
    targets: tuple[str, ...] | None = None
    duration: float | None = None
    notes: tuple[str, ...] = ()  # substrings, each found in some note
    views: tuple[tuple[Level, tuple[str, ...]], ...] | None = None  # stored queries


R = Request
CASES = [
    Case("unknown op", ROOT, R("shell"), False, "unknown operation 'shell'"),
    Case("no role", ALICE, R("trace", ("pid:1",)), False, "alice (uid 1000) has no periscope role"),
    Case("admin trace", ROOT, R("trace", ("pid:1",), PAYLOAD), True, "role admin",
         level=PAYLOAD, targets=("pid:1",), duration=8 * H),
    Case("admin status", ROOT, R("status"), True, "role admin"),
    Case("admin audit.verify", ROOT, R("audit.verify"), True),
    Case("investigator needs reason", BOB, R("trace", ("pid:1",), PAYLOAD), False,
         "reason is required (role investigator)"),
    Case("investigator blank reason", BOB, R("trace", ("pid:1",), reason="  "), False, "reason"),
    # The default gives group periscope meta only: payload needs an approved request.
    Case("investigator payload is lowered to meta", BOB,
         R("trace", ("comm:nginx",), PAYLOAD, 20 * 60, "INC-9"), True, level=META,
         targets=("comm:nginx",), duration=20 * 60,
         notes=("level lowered from payload to meta: role investigator allows at most meta",)),
    Case("investigator payload with an approved request's grant", BOB,
         R("trace", ("comm:nginx",), PAYLOAD, 20 * 60, "INC-9"), True,
         grants=(grant("bob", "comm:nginx"),), level=PAYLOAD, targets=("comm:nginx",)),
    Case("investigator duration cap", BOB, R("trace", ("pid:1",), META, 2 * H, "INC-9"), True,
         duration=H, notes=("duration cut from 2h to 1h",)),
    Case("investigator no duration = max", BOB, R("trace", ("pid:1",), reason="x"), True,
         duration=H, level=META),
    Case("investigator no admin ops", BOB, R("grant.add", reason="x"), False, "not allowed"),
    Case("investigator no status", BOB, R("status", reason="x"), False,
         "operation 'status' is not allowed for bob"),
    Case("root in periscope group: admin suffices", who("root", "periscope", uid=0),
         R("trace", ("pid:1",)), True, notes=("role investigator not used",)),
    Case("viewer narrowed to meta", ALICE, R("trace", ("pid:7",), PAYLOAD), True, policy=CUSTOM,
         level=META, targets=("pid:7",),
         notes=("level lowered from payload to meta: role viewer allows at most meta",)),
    Case("viewer query everything", ALICE, R("events", (), PAYLOAD), True, policy=CUSTOM,
         level=META, targets=(), views=((META, ("*",)),)),
    Case("viewer op missing", ALICE, R("conns"), False, "not allowed", policy=CUSTOM),
    Case("trace needs targets", ROOT, R("trace"), False, "needs at least one target"),
    Case("bad selector", ROOT, R("trace", ("pid:abc",)), False, "pid must be a positive integer"),
    Case("bad duration", ROOT, R("trace", ("pid:1",), duration=0), False, "must be positive"),
    Case("unit role covers same unit", DAVE, R("trace", ("unit:checkout.service",), PAYLOAD),
         True, policy=CUSTOM, targets=("unit:checkout.service",), duration=30 * 60),
    Case("unit role covers cgroup inside it", DAVE,
         R("events", ("cgroup:/system.slice/checkout.service/worker",), PAYLOAD), True,
         policy=CUSTOM, targets=("cgroup:/system.slice/checkout.service/worker",)),
    Case("cgroup prefix is per component", DAVE, R("trace", ("cgroup:/system.slice/payroll",)),
         False, "no permitted target", policy=CUSTOM),
    # Stored queries: decided from the selectors alone (rows carry their own facts), the
    # requested targets stay filters, and each level gets the selectors allowed at it.
    Case("stored: requested targets are filters, role targets the views", DAVE,
         R("events", ("cgroup:/system.slice/payroll", "comm:nginx"), PAYLOAD), True,
         policy=CUSTOM, level=PAYLOAD, targets=("cgroup:/system.slice/payroll", "comm:nginx"),
         views=((PAYLOAD, ("unit:checkout.service", "cgroup:/system.slice/pay")),)),
    Case("stored: payload grant over a meta role", ALICE, R("events", (), PAYLOAD, reason="x"),
         True, policy=CUSTOM, grants=(grant("alice", "unit:checkout.service"),), level=PAYLOAD,
         views=((PAYLOAD, ("unit:checkout.service",)), (META, ("*",)))),
    Case("stored: the requested level is a ceiling", ALICE, R("events", (), META),
         True, policy=CUSTOM, grants=(grant("alice", "unit:checkout.service"),), level=META,
         views=((META, ("*",)),)),
    Case("stored: a selector seen with payload is not repeated at meta", ALICE,
         R("errors", (), PAYLOAD), True, grants=(grant("alice", "comm:a", PAYLOAD),
                                                 grant("alice", "comm:a", META, gid="0000abce"),
                                                 grant("alice", "comm:b", META, gid="0000abcf")),
         views=((PAYLOAD, ("comm:a",)), (META, ("comm:b",)))),
    Case("stored: meta grant lowers the level", ALICE, R("events", (), PAYLOAD), True,
         grants=(grant("alice", "exe:/usr/bin/x", META),), level=META,
         views=((META, ("exe:/usr/bin/x",)),), notes=("level lowered from payload to meta",)),
    Case("stored: a bad filter is refused", ROOT, R("events", ("pid:0",)), False,
         "pid must be a positive integer"),
    Case("stored: a reason is still required", BOB, R("events", ()), False, "reason is required"),
    Case("stored: a role with no targets sees nothing", ALICE, R("events"), False,
         "no permitted target", policy=Policy.from_toml(
             '[roles.r]\nops = ["events"]\nmax_level = "meta"\ntargets = []\n'
             '[users]\nalice = "r"\n')),
    Case("target not granted", DAVE, R("trace", ("comm:nginx",)), False,
         "no permitted target for dave", policy=CUSTOM, facts={"comm:nginx": [NGINX_B]}),
    Case("reason-dropped role is explained", BOB, R("trace", ("pid:1",)), False,
         "role investigator not used: it requires --reason",
         grants=(grant("bob", "unit:checkout.service"),)),
    Case("unresolved target not granted", DAVE, R("trace", ("comm:nginx",)), False,
         policy=CUSTOM),
    Case("comm narrowed to permitted pids", DAVE, R("trace", ("comm:nginx",), PAYLOAD), True,
         policy=CUSTOM, facts={"comm:nginx": [NGINX_A, NGINX_B]}, targets=("pid:10",),
         notes=("target comm:nginx narrowed to pid:10 (1 of 2 processes)",)),
    Case("pid resolved into unit", DAVE, R("trace", ("pid:10",)), True, policy=CUSTOM,
         facts={"pid:10": [NGINX_A]}, targets=("pid:10",)),
    Case("partly permitted list", DAVE, R("trace", ("pid:10", "pid:11")), True, policy=CUSTOM,
         facts={"pid:10": [NGINX_A], "pid:11": [NGINX_B]}, targets=("pid:10",),
         notes=("target pid:11 dropped: not permitted",)),
    Case("grant gives access", ALICE, R("trace", ("unit:checkout.service",), PAYLOAD, 10 * 60),
         True, "grant 0000abcd", grants=(grant("alice", "unit:checkout.service"),),
         level=PAYLOAD, duration=10 * 60),
    Case("deadline capped at grant expiry", ALICE,
         R("trace", ("unit:checkout.service",), PAYLOAD, 2 * H), True,
         grants=(grant("alice", "unit:checkout.service"),), duration=1800,
         notes=("duration cut from 2h to 30m",)),
    Case("grant by facts", ALICE, R("trace", ("comm:nginx",), PAYLOAD), True,
         grants=(grant("alice", "unit:checkout.service"),),
         facts={"comm:nginx": [NGINX_A, NGINX_B]}, targets=("pid:10",)),
    Case("expired grant ignored", ALICE, R("trace", ("unit:checkout.service",)), False,
         "no periscope role or active grant",
         grants=(grant("alice", "unit:checkout.service", expires=NOW),)),
    Case("other user's grant ignored", ALICE, R("trace", ("unit:checkout.service",)), False,
         grants=(grant("bob", "unit:checkout.service"),)),
    Case("group grant", CAROL, R("events", ("unit:checkout.service",), PAYLOAD), True,
         grants=(grant("@oncall", "unit:checkout.service"),), level=PAYLOAD),
    Case("group grant other group", ALICE, R("events", ("unit:checkout.service",)), False,
         grants=(grant("@oncall", "unit:checkout.service"),)),
    Case("grant is for another target", ALICE, R("trace", ("unit:db.service",)), False,
         "no permitted target", grants=(grant("alice", "unit:checkout.service"),)),
    Case("grant gives no admin ops", ALICE, R("grant.list"), False, "not allowed",
         grants=(grant("alice", "*"),)),
    Case("meta grant lowers level", ALICE, R("trace", ("pid:5",), PAYLOAD), True,
         grants=(grant("alice", "pid:5", META),), level=META,
         notes=("grant 0000abcd allows at most meta",)),
    Case("viewer plus payload grant keeps payload, drops meta-only target", ALICE,
         R("trace", ("unit:checkout.service", "comm:nginx"), PAYLOAD, reason="x"), True,
         policy=CUSTOM, grants=(grant("alice", "unit:checkout.service"),),
         facts={"comm:nginx": [NGINX_B]}, level=PAYLOAD, targets=("unit:checkout.service",),
         notes=("target comm:nginx dropped: allowed at most meta",)),
    Case("viewer plus grant at meta keeps both", ALICE,
         R("trace", ("unit:checkout.service", "comm:nginx"), META), True,
         policy=CUSTOM, grants=(grant("alice", "unit:checkout.service"),),
         level=META, targets=("unit:checkout.service", "comm:nginx"), duration=8 * H),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    d = decide(case.policy, case.grants, case.principal, case.request, case.facts, NOW)
    assert d.allowed is case.allowed, d
    assert case.reason in d.reason
    if case.level is not None:
        assert d.level == case.level
    if case.targets is not None:
        assert d.targets == case.targets
    if case.duration is not None:
        assert d.duration == pytest.approx(case.duration)
        assert d.deadline == pytest.approx(NOW + case.duration)
    for note in case.notes:
        assert any(note in n for n in d.narrowed), d.narrowed
    if case.views is not None:
        assert d.visibility is not None
        assert d.visibility.views == tuple(
            View(lv, tuple(parse_selector(t) for t in sels)) for lv, sels in case.views)
    elif case.request.op in OPS and Op(case.request.op).kind is not OpKind.STORED:
        assert d.visibility is None
    if not d.allowed:
        assert d.targets == () and d.level is None and d.deadline is None


def test_decide_is_pure_and_deterministic() -> None:
    policy, request = Policy.default(), R("trace", ("pid:1",), PAYLOAD, 2 * H, "x")
    first: Decision = decide(policy, (), BOB, request, {}, NOW)
    assert decide(policy, (), BOB, request, {}, NOW) == first


def test_default_policy() -> None:
    p = Policy.default()
    assert set(p.roles) == {"admin", "investigator", "viewer"}
    assert [r.name for r in p.roles_for(ROOT)] == ["admin"]
    assert [r.name for r in p.roles_for(BOB)] == ["investigator"]
    assert p.roles_for(ALICE) == ()
    assert "viewer" not in {n for names in (*p.users.values(), *p.groups.values()) for n in names}
    inv, viewer = p.roles["investigator"], p.roles["viewer"]
    # Secure by default: the group gets meta, and may only *request* payload (1 approval).
    assert inv.require_reason and inv.max_duration == 3600 and inv.max_level is META
    assert inv.request is not None and inv.request.max_level is PAYLOAD
    assert inv.request.approvals == 1 and "request.create" in inv.ops
    assert "request.approve" not in inv.ops and not inv.break_glass
    assert "request.approve" in p.roles["admin"].ops
    assert viewer.max_level is META and viewer.max_duration == 8 * 3600
    assert str(inv.targets[0]) == "*"


BASE = '[roles.r]\nops = ["trace"]\nmax_level = "meta"\ntargets = ["*"]\n'


@pytest.mark.parametrize(("text", "message"), [
    ("[roles", "invalid TOML"),
    (BASE + '[users]\nalice = "nope"\n', "users.alice: unknown role 'nope'"),
    (BASE + '[groups]\nops = ["r", "x"]\n', "groups.ops: unknown role 'x'"),
    (BASE.replace('"*"', '"pod:x"'), "roles.r: bad selector 'pod:x'"),
    (BASE.replace('"*"', '"unit:nginx"'), "unit must be a name like 'nginx.service'"),
    (BASE.replace('"*"', '"cgroup:rel/path"'), "must be an absolute, normalised path"),
    (BASE + 'max_duration = "90x"\n', "bad duration '90x'"),
    (BASE + 'max_duration = "0s"\n', "must be longer than zero"),
    (BASE.replace('"trace"', '"shell"'), "roles.r.ops: unknown operation 'shell'"),
    (BASE.replace('"meta"', '"full"'), "unknown capture level 'full'"),
    (BASE + "colour = 1\n", "roles.r.colour: unknown key"),
    (BASE.replace('targets = ["*"]\n', ""), "missing required key 'targets'"),
    (BASE + "require_reason = 1\n", "require_reason: expected true or false"),
    (BASE + '[users]\n"a b" = "r"\n', "not a valid Unix user or group name"),
    (BASE + "[bindings]\n", "bindings: unknown top-level key"),
    ('[roles.Bad]\nops=[]\nmax_level="meta"\ntargets=[]\n', "role names are lowercase"),
])
def test_policy_errors(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as exc:
        Policy.from_toml(text, source="p.toml")
    assert "policy p.toml" in str(exc.value)
    assert message in str(exc.value)


def test_policy_load(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "policy.toml"  # type: ignore[operator]
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(str(path))
    path.write_text(BASE + 'max_duration = "90m"\n[users]\nalice = "r"\n')
    p = Policy.load(str(path))
    assert p.roles["r"].max_duration == 5400 and p.source == str(path)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("90m", 5400), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "h", "10", "1.5h", "-1h", "1h 2m", "2H", "m30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_duration(text)


@pytest.mark.parametrize("text", [
    "*", "pid:1", "comm:nginx", "exe:/usr/sbin/nginx", "unit:a.service", "unit:b.scope",
    "cgroup:/", "cgroup:/system.slice/x.service"])
def test_selector_roundtrip(text: str) -> None:
    assert str(parse_selector(text)) == text


@pytest.mark.parametrize("text", [
    "", "pid:", "pid:0", "pid:-1", "pid:1e3", "comm:" + "x" * 16, "exe:bin/x", "exe:/a/../b",
    "cgroup:/a/", "cgroup://a", "unit:.service", "unit:a/b.service", "comm:a\nb", "all", "*:x"])
def test_bad_selectors(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_selector_matching() -> None:
    f = TargetFacts(10, "nginx", "/usr/sbin/nginx", "/system.slice/nginx.service/worker")
    assert unit_from_cgroup(f.cgroup) == "nginx.service"
    for yes in ("*", "pid:10", "comm:nginx", "exe:/usr/sbin/nginx", "unit:nginx.service",
                "cgroup:/system.slice", "cgroup:/system.slice/nginx.service/worker"):
        assert parse_selector(yes).matches(f), yes
    for no in ("pid:11", "comm:ngin", "exe:/usr/sbin", "unit:x.service", "cgroup:/system.sl",
               "cgroup:/user.slice"):
        assert not parse_selector(no).matches(f), no
    assert parse_selector("unit:u.service").matches(TargetFacts(1, unit="u.service"))
    assert not parse_selector("cgroup:/").matches(TargetFacts(1))


# Property: whatever decide() allows is covered by some role or grant of the caller.
SELS = ["*", "unit:a.service", "unit:b.service", "cgroup:/system.slice",
        "cgroup:/system.slice/a.service", "comm:x", "comm:y", "exe:/bin/x", "pid:1", "pid:2"]
WORLD = [TargetFacts(1, "x", "/bin/x", "/system.slice/a.service"),
         TargetFacts(2, "y", "/bin/x", "/system.slice/b.service/w"),
         TargetFacts(3, "x", "/bin/y", "/user.slice/user-1.slice")]
U = who("u", "u", "g")
TOPS = ["trace", "events", "http", "snapshot", "errors"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Policy, list[Grant], Request]:
    ops = draw(st.lists(st.sampled_from(TOPS), unique=True))
    targets = draw(st.lists(st.sampled_from(SELS), unique=True))
    policy = Policy.from_toml(
        f"[roles.r]\nops = {ops!r}\nmax_level = {draw(st.sampled_from(['meta', 'payload']))!r}\n"
        f"targets = {targets!r}\nmax_duration = '{draw(st.integers(1, 300))}m'\n"
        f"require_reason = {str(draw(st.booleans())).lower()}\n"
        f"[users]\n{draw(st.sampled_from(['u', 'v']))} = 'r'\n")
    grants = [Grant(f"{i:08x}", draw(st.sampled_from(["u", "@g", "v", "@h"])),
                    draw(st.sampled_from(SELS)), draw(st.sampled_from(list(Level))),
                    NOW - 10, NOW + draw(st.integers(-600, 7200)), "r", "root")
              for i in range(draw(st.integers(0, 3)))]
    request = Request(draw(st.sampled_from(TOPS)),
                      tuple(draw(st.lists(st.sampled_from(SELS), max_size=3, unique=True))),
                      draw(st.sampled_from(list(Level))),
                      draw(st.one_of(st.none(), st.integers(1, 20000).map(float))),
                      draw(st.sampled_from([None, "", "INC-1"])))
    return policy, grants, request


@given(scenarios())
@settings(max_examples=400, deadline=None)
def test_decide_never_exceeds_rules(scenario: tuple[Policy, list[Grant], Request]) -> None:
    policy, grants, req = scenario
    facts = {t: [p for p in WORLD if parse_selector(t).matches(p)] for t in req.targets}
    d = decide(policy, grants, U, req, facts, NOW)
    if not d.allowed:
        assert d.targets == () and d.level is None
        return
    assert d.level is not None and d.level <= req.level
    auths = [(r.targets, r.max_level, NOW + r.max_duration) for r in policy.roles_for(U)
             if req.op in r.ops and (req.reason or not r.require_reason)]
    auths += [((parse_selector(g.target),), g.level, g.expires) for g in grants
              if g.applies_to(U) and g.active(NOW)]
    if Op(req.op).kind is OpKind.STORED:
        # The targets stay filters, and each process of the world is seen at exactly the
        # best level any role or grant of the caller gives it, capped by the request.
        assert d.targets == req.targets and d.visibility is not None
        for p in WORLD:
            best = max((lv for sels, lv, _u in auths if any(s.matches(p) for s in sels)),
                       default=None)
            want = None if best is None else min(best, req.level)
            assert d.visibility.level_for(p) == want, (p, d)
        return
    assert d.targets
    if req.op == "trace":
        assert d.deadline is not None and d.duration is not None and d.duration > 0
        assert req.duration is None or d.duration <= req.duration
    for t in d.targets:
        sel = parse_selector(t)
        procs = [p for p in WORLD if sel.matches(p)] if sel.kind == "pid" else []
        assert any(
            level >= d.level and (d.deadline is None or until >= d.deadline - 1e-6)
            and any(s.covers(sel) or (procs and all(s.matches(p) for p in procs)) for s in sels)
            for sels, level, until in auths
        ), (t, d)
