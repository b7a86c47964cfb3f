"""The daemon's life in the audit log (start, stop, policy_reload, crash_recovered closing
open sessions) and the [notify] hook (JSON on stdin, bounded, failures counted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from collector.access import lifecycle
from collector.access.alerts import Hook
from collector.access.audit import AuditLog, verify
from collector.access.policy import Policy


def trace(audit: AuditLog, sid: str, uid: int = 1000) -> None:
    audit.append({"kind": "request", "op": "trace", "uid": uid, "user": "alice", "pid": 7,
                  "exe": None, "decision": "allow", "session": sid, "args": {}})


def end(audit: AuditLog, sid: str) -> None:
    audit.append({"kind": "session_end", "op": "trace.end", "session": sid, "reason": "deadline"})


def recs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_clean_stop_recovers_nothing(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    a = AuditLog(str(log))
    assert lifecycle.recover(a) is None  # empty log: nothing known
    lifecycle.start(a, "c" * 64, "/etc/p.toml", Policy.default())
    trace(a, "s1")
    end(a, "s1")
    lifecycle.stop(a, 0)
    assert lifecycle.recover(a) is None
    r = recs(log)
    assert r[0]["kind"] == "start" and r[0]["policy_sha256"] == Policy.default().digest
    assert r[0]["config_sha256"] == "c" * 64 and r[-1]["kind"] == "stop"


def test_crash_closes_every_open_session_once(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    a = AuditLog(str(log))
    trace(a, "old")  # before the last start: that run's own business
    lifecycle.start(a, "c" * 64, "x", Policy.default())
    trace(a, "s1")
    trace(a, "s2")
    end(a, "s1")
    a.append({"kind": "request", "op": "trace", "decision": "deny", "session": None})
    # kill -9 here: no stop. The next start:
    rec = lifecycle.recover(a)
    assert rec is not None and rec["sessions"] == ["s2"] and rec["kind"] == "crash_recovered"
    closed = [r for r in recs(log) if r.get("kind") == "session_end" and r["reason"] == "crash"]
    assert [(r["session"], r["uid"], r["user"]) for r in closed] == [("s2", 1000, "alice")]
    # Crashing again before `start` is written: the same session is not closed twice.
    assert lifecycle.recover(a) is not None
    assert len([r for r in recs(log) if r.get("reason") == "crash"]) == 1
    lifecycle.start(a, "c" * 64, "x", Policy.default())
    lifecycle.stop(a, 0)
    assert lifecycle.recover(a) is None
    assert verify(str(log)).ok


def test_policy_reload_records_hashes_or_the_error(tmp_path: Path) -> None:
    a = AuditLog(str(tmp_path / "audit.log"))
    old = Policy.default()
    new = Policy.from_toml('[roles.r]\nops = ["trace"]\nmax_level = "meta"\ntargets = ["*"]\n')
    ok = lifecycle.policy_reload(a, old, new, None)
    bad = lifecycle.policy_reload(a, old, old, "policy x: unknown key")
    assert (ok["old_sha256"], ok["new_sha256"], ok["decision"]) == (old.digest, new.digest,
                                                                    "allow")
    assert bad["decision"] == "deny" and "unknown key" in bad["error"] and "new_sha256" \
        not in bad


def _script(tmp_path: Path, body: str) -> str:
    p = tmp_path / "hook.py"
    p.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    p.chmod(0o755)
    return str(p)


def test_hook_gets_the_record_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    h = Hook([_script(tmp_path, f"open({str(out)!r}, 'w').write(sys.stdin.read())"), "--x"], 5)
    t = h.fire({"kind": "break_glass", "user": "rita", "seq": 3})
    assert t is not None
    t.join(10)
    assert json.loads(out.read_text()) == {"kind": "break_glass", "user": "rita", "seq": 3}
    assert h.counters["notify_sent"] == 1 and h.counters["notify_failed"] == 0


def test_hook_failures_are_bounded_counted_and_logged(tmp_path: Path, caplog: Any) -> None:
    slow = Hook([_script(tmp_path, "time.sleep(30)")], 0.3)
    assert slow.run(b"{}") is False
    failing = Hook([_script(tmp_path, "print('nope', file=sys.stderr); sys.exit(3)")], 5,
                   slow.counters)
    assert failing.run(b"{}") is False
    missing = Hook([str(tmp_path / "absent")], 5, slow.counters)
    assert missing.run(b"{}") is False
    assert slow.counters["notify_failed"] == 3
    text = caplog.text
    assert "killed after 0.3s" in text and "exit status 3: nope" in text and "cannot start" \
        in text
    assert Hook([], 5).fire({"kind": "x"}) is None  # off: nothing runs
