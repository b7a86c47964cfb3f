"""The live-debugging protocol end to end, with real Unix users on a real daemon: access
requests (self-approval and non-reviewers refused, thresholds, deny, expiry, cancel, revoke),
trace --request --wait, break-glass (audit, metric, notify hook), and the audit of it all."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tests.root.conftest import TEST_GROUP, Daemon, TraceStream, User, wait_for
from tests.root.test_access import CHATTY, audit_records, go
from tests.root.test_metrics import free_port, scrape, value

ADMIN = """
[roles.admin]
ops = ["*"]
max_level = "payload"
targets = ["*"]
max_duration = "8h"
"""


def policy(asker: User, reviewers: list[User], peer: User | None = None,
           approvals: int = 1) -> str:
    names = ", ".join(f'"{r.name}"' for r in reviewers)
    text = ADMIN + f"""
# request-only: no op of its own but filing (and following) requests for payload
[roles.asker]
ops = []
max_level = "meta"
targets = ["*"]

[roles.asker.request]
max_level = "payload"
max_duration = "1h"
approvals = {approvals}
reviewers = [{names}]

[roles.lead]
ops = ["trace", "request.approve", "request.deny"]
max_level = "payload"
targets = ["*"]
max_duration = "1h"

[users]
root = ["admin"]
{asker.name} = ["asker"]
"""
    for r in reviewers + ([peer] if peer else []):
        text += f'{r.name} = ["lead"]\n'
    return text


def cli_json(d: Daemon, *args: str, user: str | None = None) -> Any:
    r = d.cli(*args, "--json", user=user)
    assert r.returncode == 0, (args, r.stderr)
    return json.loads(r.stdout)


def cli_rows(d: Daemon, *args: str, user: str | None = None) -> list[Any]:
    """A list command's JSON lines (one object per line; none for an empty list)."""
    r = d.cli(*args, "--json", user=user)
    assert r.returncode == 0, (args, r.stderr)
    return [json.loads(line) for line in r.stdout.splitlines()]


def refused(d: Daemon, *args: str, user: str | None = None) -> str:
    r = d.cli(*args, user=user)
    assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stdout, r.stderr)
    return r.stderr


def steps(d: Daemon, rid: str) -> list[tuple[str, str, str]]:
    """(op, user, decision) of every audit record about request `rid`."""
    return [(r["op"], r["user"], r["decision"]) for r in audit_records(d)
            if r.get("request") == rid or (r.get("args") or {}).get("id") == rid]


def verified(d: Daemon) -> None:
    got = cli_json(d, "audit", "verify")
    assert got["ok"], got


def test_request_reviewer_approves_wait_starts_at_once_and_ends_at_the_grant(
        daemon_factory: Any, make_user: Any, workload: Any) -> None:
    asker = make_user("asker", groups=(TEST_GROUP,))
    lead = make_user("lead", groups=(TEST_GROUP,))
    peer = make_user("peer", groups=(TEST_GROUP,))
    d = daemon_factory(policy_text=policy(asker, [lead], peer))
    w = workload(CHATTY)
    # Probes attached by another session first, so the approval-to-start time measures the
    # protocol, not a BPF compile.
    warm = TraceStream(d, "-p", str(w.pid), "-d", "60s")
    warm.wait_started()
    # Request-only: the user cannot trace at all without a request.
    assert "DENIED" in refused(d, "trace", "-p", str(w.pid), "-d", "5s", user=asker.name)
    req = cli_json(d, "request", "create", "-p", str(w.pid), "--level", "payload", "--for",
                   "12s", "--reason", "INC-1234", user=asker.name)
    rid = req["id"]
    assert req["state"] == "pending" and req["approvals"] == 1 and req["duration"] == 12
    err = refused(d, "request", "approve", rid, user=asker.name)
    assert "operation 'request.approve' is not allowed for " + asker.name in err, err
    # Not even an admin approves their own request.
    mine = cli_json(d, "request", "create", "-p", str(w.pid), "--reason", "INC-1")["id"]
    err = refused(d, "request", "approve", mine)
    assert f"filed request {mine} and cannot review it" in err, err
    err = refused(d, "request", "approve", rid, user=peer.name)
    assert "is not a reviewer of requests under role asker" in err, err
    t = TraceStream(d, "--request", rid, "--wait", user=asker.name)
    time.sleep(1.0)  # the client is waiting on the daemon now
    assert t.proc.poll() is None
    approved = cli_json(d, "request", "approve", rid, "--comment", "scope ok", user=lead.name)
    assert approved["state"] == "approved" and approved["grant"], approved
    header = t.wait_started(30)
    assert "level=payload" in header and f"pid:{w.pid}" in header, header
    go(w)
    rc, events, err = t.finish(timeout=60)
    warm.proc.send_signal(signal.SIGINT)  # it only kept the probes attached: Ctrl-C it
    warm.finish(timeout=30)
    assert rc == 0 and "session ended (deadline)" in err, err
    assert any("GET /orders?id=" in str(e.get("payload", "")) for e in events), events[:5]
    recs = audit_records(d)
    ok = next(r for r in recs if r["op"] == "request.approved" and r["request"] == rid)
    used = next(r for r in recs if r["op"] == "request.used" and r["request"] == rid)
    start = next(r for r in recs if r["op"] == "trace" and r["session"] == used["session"])
    (end,) = wait_for(lambda: [r for r in audit_records(d) if r["kind"] == "session_end"
                               and r["session"] == start["session"]], 20,
                      what="the session's end to be audited")
    grant = approved["grant_expires"]
    print(f"approval -> session allowed: {start['time'] - ok['time']:.3f}s (daemon clock); "
          f"session end - grant expiry: {end['time'] - grant:+.3f}s")
    assert start["time"] - ok["time"] < 1.0, "trace --wait must start within a second"
    assert abs(end["time"] - grant) < 3.0 and end["reason"] == "deadline", (end, grant)
    got = [s for s in steps(d, rid) if s[0] in ("request.created", "request.approved",
                                                "request.used") or s[2] == "deny"]
    assert got == [("request.created", asker.name, "allow"),
                   ("request.approve", asker.name, "deny"),
                   ("request.approve", peer.name, "deny"),
                   ("request.approved", lead.name, "allow"),
                   ("request.used", asker.name, "allow")], got
    verified(d)


def test_two_approvals_are_needed(daemon_factory: Any, make_user: Any, workload: Any) -> None:
    asker = make_user("asker2", groups=(TEST_GROUP,))
    r1 = make_user("rev1", groups=(TEST_GROUP,))
    r2 = make_user("rev2", groups=(TEST_GROUP,))
    d = daemon_factory(policy_text=policy(asker, [r1, r2], approvals=2))
    w = workload("import time\ntime.sleep(120)\n")
    rid = cli_json(d, "request", "create", "-p", str(w.pid), "--for", "5m", "--reason",
                   "INC-2", user=asker.name)["id"]
    one = cli_json(d, "request", "approve", rid, user=r1.name)
    assert one["state"] == "pending" and one["grant"] is None
    assert cli_rows(d, "grant", "list") == []
    assert "already reviewed" in refused(d, "request", "approve", rid, user=r1.name)
    err = refused(d, "trace", "--request", rid, "-d", "3s", user=asker.name)
    assert "is pending: add --wait" in err, err
    two = cli_json(d, "request", "approve", rid, user=r2.name)
    assert two["state"] == "approved" and [v["user"] for v in two["reviews"]] == [r1.name,
                                                                                 r2.name]
    (g,) = cli_rows(d, "grant", "list")
    assert (g["id"], g["principal"], g["level"]) == (two["grant"], asker.name, "payload")
    assert g["created_by"] == f"{r1.name}+{r2.name}"
    approvals = [s for s in steps(d, rid) if s[0] in ("request.approval", "request.approved")]
    assert approvals == [("request.approval", r1.name, "allow"),
                         ("request.approved", r2.name, "allow")]
    verified(d)


def test_deny_expiry_cancel_and_revoke_each_end_the_flow(
        daemon_factory: Any, make_user: Any, workload: Any) -> None:
    asker = make_user("asker3", groups=(TEST_GROUP,))
    lead = make_user("lead3", groups=(TEST_GROUP,))
    d = daemon_factory(config_text="[access]\nrequest_ttl_s = 15\n",
                       policy_text=policy(asker, [lead]))
    w = workload("import time\ntime.sleep(120)\n")

    def create(reason: str) -> str:
        return str(cli_json(d, "request", "create", "-p", str(w.pid), "--level", "meta",
                            "--for", "5m", "--reason", reason, user=asker.name)["id"])

    # Left alone: expires after request_ttl_s. Each of the others is reviewed at once.
    expired = create("INC-0")
    denied = create("INC-1")
    got = cli_json(d, "request", "deny", denied, "--reason", "meta from the store is enough",
                   user=lead.name)
    assert got["state"] == "denied"
    assert "is denied: no session" in refused(d, "trace", "--request", denied, "--wait",
                                              user=asker.name)
    cancelled = create("INC-2")
    assert cli_json(d, "request", "cancel", cancelled, user=asker.name)["state"] == "cancelled"
    revoked = create("INC-3")
    ok = cli_json(d, "request", "approve", revoked, user=lead.name)
    t = TraceStream(d, "--request", revoked, "-d", "60s", user=asker.name)
    t.wait_started()
    r = cli_json(d, "grant", "revoke", ok["grant"])
    assert r["sessions_ended"] == 1 and r["request"] == revoked, r
    rc, _events, err = t.finish(timeout=30)
    assert rc == 3 and "session ended (revoked)" in err, err
    wait_for(lambda: cli_json(d, "request", "show", expired)["state"] == "expired", 40,
             interval=1.0, what="the pending request to expire (request_ttl_s = 15)")
    # The `expired` request got past its time unreviewed; the others ended as their step said.
    states = {r["id"]: r["state"] for r in cli_rows(d, "request", "list")}
    assert {k: states[k] for k in (denied, expired, cancelled, revoked)} == {
        denied: "denied", expired: "expired", cancelled: "cancelled", revoked: "revoked"}
    err = refused(d, "request", "approve", expired, user=lead.name)
    assert f"request {expired} is expired, not pending" in err, err
    ends = {rid: [s[0] for s in steps(d, rid)] for rid in (denied, expired, cancelled, revoked)}
    assert "request.denied" in ends[denied]
    assert "request.expired" in ends[expired]
    assert "request.cancelled" in ends[cancelled]
    assert {"request.approved", "request.used", "request.revoked"} <= set(ends[revoked])
    # An auditor's view: the flow's records by kind, then the chain.
    week = cli_rows(d, "audit", "show", "--since", "7d", "--kind", "request,grant,break_glass",
                    "--limit", "1000")
    ops = {r["op"] for r in week}
    assert {"request.created", "request.denied", "request.expired", "request.cancelled",
            "request.revoked", "grant.revoke"} <= ops and "trace" not in ops, ops
    verified(d)


HOOK = """import json, sys
rec = json.load(sys.stdin)
open(sys.argv[1], "w").write(json.dumps(rec))
"""


def test_break_glass_capped_audited_counted_logged_and_hooked(
        daemon_factory: Any, make_user: Any, workload: Any, tmp_path: Path) -> None:
    oncall = make_user("oncall", groups=(TEST_GROUP,))
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    got_file = tmp_path / "got.json"
    tmp_path.chmod(0o755)
    port = free_port()
    d = daemon_factory(
        config_text=f'[metrics]\nlisten = "127.0.0.1:{port}"\n[notify]\ncommand = '
        f'["{sys.executable}", "{hook}", "{got_file}"]\ntimeout_s = 10\n',
        policy_text=ADMIN + f"""
[roles.oncall]
ops = ["trace"]
max_level = "meta"
targets = ["*"]
break_glass = true

[users]
root = ["admin"]
{oncall.name} = ["oncall"]
""")
    w = workload(CHATTY)
    assert value(scrape(port), "periscope_break_glass_total") == 0  # there from the start
    assert "reason" in refused(d, "request", "break-glass", "-p", str(w.pid), user=oncall.name)
    out = cli_json(d, "request", "break-glass", "-p", str(w.pid), "--for", "1h", "--reason",
                   "INC-999 checkout down", user=oncall.name)
    assert out["notes"] == ["duration cut from 1h to 15m: the break-glass limit"], out
    (g,) = cli_rows(d, "grant", "list")
    assert g["expires"] - g["created"] == 900 and g["level"] == "payload"
    assert g["principal"] == oncall.name
    rec = next(r for r in audit_records(d) if r["kind"] == "break_glass")
    assert rec["user"] == oncall.name and rec["grant"] == g["id"] and rec["seq"] == \
        out["audit_seq"]
    assert "INC-999" in rec["args"]["reason"]
    hooked = wait_for(lambda: got_file.exists() and json.loads(got_file.read_text()), 15,
                      what="the notify hook's JSON")
    assert hooked == rec, "the hook gets the audit record itself"
    assert "WARNING" in d.log_text() and "BREAK-GLASS" in d.log_text()
    assert value(scrape(port), "periscope_break_glass_total") == 1
    wait_for(lambda: value(scrape(port), "periscope_notify_hook_runs_total",
                           outcome="sent") == 1, 15, what="the hook counted as sent")
    assert value(scrape(port), "periscope_notify_hook_runs_total", outcome="failed") == 0
    status = cli_json(d, "status")
    assert status["server"]["break_glass"] == 1 and status["server"]["notify_sent"] == 1
    # The self-grant works: payload on its target, for the on-call user alone.
    t = TraceStream(d, "-p", str(w.pid), "--level", "payload", "-d", "6s", user=oncall.name)
    assert "level=payload" in t.wait_started()
    go(w)
    rc, events, err = t.finish()
    assert rc == 0 and any("GET /orders" in str(e.get("payload", "")) for e in events), err
    verified(d)


def test_request_list_shows_reviewers_only_what_they_review(
        daemon_factory: Any, make_user: Any) -> None:
    asker = make_user("asker4", groups=(TEST_GROUP,))
    lead = make_user("lead4", groups=(TEST_GROUP,))
    other = make_user("other4", groups=(TEST_GROUP,))
    d = daemon_factory(policy_text=policy(asker, [lead]))
    rid = cli_json(d, "request", "create", "-u", "nginx.service", "--reason", "INC-4",
                   user=asker.name)["id"]
    assert [r["id"] for r in cli_rows(d, "request", "list", user=lead.name)] == [rid]
    assert [r["id"] for r in cli_rows(d, "request", "list")] == [rid]  # root: admin
    assert "DENIED" in refused(d, "request", "list", user=other.name)
    assert "DENIED" in refused(d, "request", "show", rid, user=other.name)
