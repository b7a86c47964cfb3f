"""Identity-provider step-up on a real daemon (the test is its own IdP: its own RSA key, a JWKS
file, tokens signed with PyJWT; no network), and the daemon's life in the audit log: start,
policy_reload, stop, and crash_recovered after a kill -9 mid-session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from collector.access.audit import verify
from tests.root.conftest import TEST_GROUP, Daemon, TraceStream, start_daemon, stop_daemon, wait_for
from tests.root.test_access import CHATTY, audit_records, go, write_policy
from tests.unit.access.fakeidp import AUDIENCE, FakeIdp, new_key


def idp_config(jwks: Path, issuer: str) -> str:
    return (f'[idp]\nissuer = "{issuer}"\naudience = "{AUDIENCE}"\njwks = "{jwks}"\n'
            'leeway_s = 5\n')


def test_require_idp_payload_needs_a_valid_token_for_the_same_user(
        daemon_factory: Any, make_user: Any, workload: Any, tmp_path: Path) -> None:
    alice = make_user("idpalice", groups=(TEST_GROUP,))
    bob = make_user("idpbob", groups=(TEST_GROUP,))
    idp = FakeIdp()
    tmp_path.chmod(0o755)
    jwks = idp.write_jwks(tmp_path / "jwks.json")
    d = daemon_factory(config_text=idp_config(jwks, idp.issuer), policy_text=f"""
[roles.admin]
ops = ["*"]
max_level = "payload"
targets = ["*"]

[roles.stepup]
ops = ["trace"]
max_level = "payload"
targets = ["*"]
max_duration = "1h"
require_idp = true

[users]
root = ["admin"]
{alice.name} = ["stepup"]
""")
    w = workload(CHATTY)

    tokens = Path(tempfile.mkdtemp(prefix="periscope-tokens-"))
    tokens.chmod(0o755)

    def token_file(name: str, tok: str) -> str:
        p = tokens / name  # alice's own 0600 file, as a token file should be
        p.write_text(tok)
        os.chown(p, alice.uid, alice.gid)
        p.chmod(0o600)
        return str(p)

    def trace(*args: str) -> TraceStream:
        return TraceStream(d, *args, "-p", str(w.pid), "--level", "payload", "-d", "6s",
                           user=alice.name)

    # No token: the role allows meta only, and says why.
    r = d.cli("trace", "-p", str(w.pid), "--level", "payload", "-d", "1s", user=alice.name)
    assert "level=meta" in r.stderr and "identity-provider login" in r.stderr, r.stderr
    # Each bad token: refused with its reason, before anything else happens; audited.
    now = int(time.time())
    bad = {
        "expired": (idp.token(alice.name, exp=now - 600, iat=now - 1200), "it has expired"),
        "audience": (idp.token(alice.name, aud="another-app"), "wrong audience"),
        "signature": (idp.token(alice.name, key=new_key()), "bad signature"),
        "other user": (idp.token(bob.name), f"it is for '{bob.name}', not for the "
                       f"connecting Unix user '{alice.name}'"),
        "alg none": (idp.none_token(alice.name), "algorithm 'none' is not allowed"),
    }
    for name, (tok, why) in bad.items():
        r = d.cli("trace", "--id-token-file", token_file(name.replace(" ", "_"), tok), "-p",
                  str(w.pid), "--level", "payload", "-d", "1s", user=alice.name)
        assert r.returncode == 2 and "DENIED: identity token refused" in r.stderr, (name, r)
        assert why in r.stderr and tok not in r.stderr + r.stdout, (name, r.stderr)
    refusals = [x for x in audit_records(d) if x["kind"] == "idp_auth"]
    assert len(refusals) == len(bad) and all(x["decision"] == "deny" for x in refusals)
    assert [why in x["reason"] for x, (_t, why) in zip(refusals, bad.values(), strict=True)] \
        == [True] * len(bad)
    log_and_audit = d.log_text() + (d.state / "audit.log").read_text()
    assert not [n for n, (tok, _w) in bad.items() if tok in log_and_audit], "tokens leaked"
    # A valid token for alice: the payload session starts, and carries her IdP subject.
    good = idp.token(alice.name)
    t = trace("--id-token-file", token_file("good", good))
    assert "level=payload" in t.wait_started()
    go(w)
    rc, events, err = t.finish()
    assert rc == 0 and any("GET /orders" in str(e.get("payload", "")) for e in events), err
    assert "identity provider: " + alice.name in err
    recs = audit_records(d)
    ok = [x for x in recs if x["kind"] == "idp_auth" and x["decision"] == "allow"]
    assert len(ok) == 1 and ok[0]["idp"]["sub"] == f"00u-{alice.name}"
    *_meta_only, session = [x for x in recs if x["op"] == "trace" and x["decision"] == "allow"]
    assert "idp" not in _meta_only[0]  # the session without a token
    (end,) = wait_for(lambda: [x for x in audit_records(d) if x["kind"] == "session_end"
                               and x["session"] == session["session"]], 20,
                      what="the session's end to be audited")
    for x in (session, end):
        assert x["idp"] == {"sub": f"00u-{alice.name}", "iss": idp.issuer,
                            "token_sha256": ok[0]["idp"]["token_sha256"]}, x
    assert good not in (d.state / "audit.log").read_text() + d.log_text()
    assert verify(str(d.state / "audit.log")).ok
    subprocess.run(["rm", "-rf", str(tokens)], check=False)


def lifecycle(d: Daemon) -> list[str]:
    return [x["kind"] for x in audit_records(d)
            if x["kind"] in ("start", "stop", "crash_recovered", "policy_reload")]


def test_lifecycle_records_and_crash_recovery(workload: Any) -> None:
    base = Path(tempfile.mkdtemp(prefix="periscope-test-"))
    d = start_daemon(base)
    try:
        first = audit_records(d)[0]
        assert first["kind"] == "start" and len(first["config_sha256"]) == 64
        assert first["policy_source"] == "<embedded default policy>"
        # A reload with a bad policy keeps the old one and says why; a good one, its hash.
        write_policy(d, "[roles.x]\nbogus = 1\n")
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "policy_reload" in lifecycle(d), 10, what="policy_reload")
        write_policy(d, '[roles.admin]\nops = ["*"]\nmax_level = "payload"\n'
                     'targets = ["*"]\n[users]\nroot = ["admin"]\n')
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: lifecycle(d).count("policy_reload") == 2, 10, what="2nd reload")
        rejected, loaded = [x for x in audit_records(d) if x["kind"] == "policy_reload"]
        assert rejected["decision"] == "deny" and "unknown key" in rejected["error"]
        assert loaded["decision"] == "allow" and loaded["old_sha256"] == first["policy_sha256"]
        assert loaded["new_sha256"] != loaded["old_sha256"]
        # A live session, then kill -9: no stop record, no session_end.
        w = workload("import time\ntime.sleep(300)\n")
        t = TraceStream(d, "-p", str(w.pid), "-d", "5m")
        t.wait_started()
        sid = next(x for x in audit_records(d) if x["op"] == "trace")["session"]
        r = d.cli("request", "create", "-p", str(w.pid), "--reason", "INC-5", "--json")
        assert r.returncode == 0, r.stderr
        pending = json.loads(r.stdout)["id"]
        d.proc.kill()
        d.proc.wait()
        t.proc.wait(30)
        assert lifecycle(d)[-1] != "stop"
        # The next start finds the crash in the log and closes the session.
        d = start_daemon(base)
        recs = audit_records(d)
        crash = next(x for x in recs if x["kind"] == "crash_recovered")
        assert crash["sessions"] == [sid] and crash["previous_start_seq"] == first["seq"]
        (end,) = [x for x in recs if x["kind"] == "session_end" and x["session"] == sid]
        assert end["reason"] == "crash" and end["uid"] == 0 and end["seq"] > crash["seq"]
        assert lifecycle(d)[-2:] == ["crash_recovered", "start"]
        # Requests survive the restart (requests.json), still pending.
        r = d.cli("request", "show", pending, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["state"] == "pending", r
        r = d.cli("audit", "verify", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout
        # A clean stop: `stop`, and the next start recovers nothing.
        assert stop_daemon(d) == 0
        assert lifecycle(d)[-1] == "stop"
        d = start_daemon(base)
        assert lifecycle(d)[-3:] == ["start", "stop", "start"]
        assert lifecycle(d).count("crash_recovered") == 1
        assert verify(str(d.state / "audit.log")).ok
    finally:
        stop_daemon(d)
        subprocess.run(["rm", "-rf", str(base)], check=False)
