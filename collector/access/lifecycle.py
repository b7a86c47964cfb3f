"""The daemon's own life in the audit log: start (config and policy hashes), policy_reload,
stop, and, on a start after an unclean stop, crash_recovered, which closes every session the
crash left open, so every allowed trace has its end.

An unclean stop is read from the log itself: after the last `start` there is no `stop`.
The sessions it left open are the allowed `trace` records after that start (their session
id is in the record) without a `session_end`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

from collector.access.audit import AuditLog
from collector.access.policy import Policy

DAEMON = "periscoped"  # the "user" of the records the daemon writes about itself
_CHUNK = 1 << 16


def digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _record(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "op": kind, "uid": os.getuid(), "user": DAEMON, "pid": os.getpid(),
            **fields}


def start(audit: AuditLog, config_sha256: str, config_source: str,
          policy: Policy) -> dict[str, Any]:
    return audit.append_record(_record(
        "start", config_sha256=config_sha256, config_source=config_source,
        policy_sha256=policy.digest, policy_source=policy.source))


def stop(audit: AuditLog, sessions_ended: int) -> dict[str, Any]:
    return audit.append_record(_record("stop", sessions_ended=sessions_ended))


def policy_reload(audit: AuditLog, old: Policy, new: Policy, error: str | None
                  ) -> dict[str, Any]:
    """The outcome of a reload: the new hash, or the error that kept the old policy."""
    fields: dict[str, Any] = {"old_sha256": old.digest, "source": new.source}
    if error is None:
        fields |= {"decision": "allow", "new_sha256": new.digest}
    else:
        fields |= {"decision": "deny", "error": error[:500]}
    return audit.append_record(_record("policy_reload", **fields))


def _backwards(path: str) -> Iterator[bytes]:
    """The log's lines, last first (complete lines only)."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        rest = b""
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + rest
            lines = buf.split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line.strip():
                    yield line
        if rest.strip():
            yield rest


def since_last_start(path: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the last `start` record or None, the records after it in order)."""
    after: list[dict[str, Any]] = []
    try:
        for line in _backwards(path):
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # verify() reports bad lines; recovery only needs the good ones
            if not isinstance(rec, dict):
                continue
            if rec.get("kind") == "start":
                return rec, after[::-1]
            after.append(rec)
    except FileNotFoundError:
        pass
    return None, after[::-1]


def open_sessions(path: str) -> tuple[bool, dict[str, Any] | None, list[dict[str, Any]]]:
    """(did the last run stop uncleanly, its start record, the trace records it left open).

    A log with no `start` (new, or written before lifecycle records existed) says nothing
    about a crash, so nothing is recovered from it."""
    last, after = since_last_start(path)
    if last is None or any(r.get("kind") == "stop" for r in after):
        return False, last, []
    ended = {r.get("session") for r in after if r.get("kind") == "session_end"}
    live = [r for r in after if r.get("op") == "trace" and r.get("decision") == "allow"
            and r.get("session") and r["session"] not in ended]
    return True, last, live


def recover(audit: AuditLog) -> dict[str, Any] | None:
    """On start: if the last run crashed, write crash_recovered and a session_end (reason
    crash) for each session it left open. Returns the crash_recovered record, or None."""
    crashed, last, live = open_sessions(audit.path)
    if not crashed or last is None:
        return None
    seq, _ = audit.head()
    rec = audit.append_record(_record(
        "crash_recovered", previous_start_seq=last.get("seq"), previous_pid=last.get("pid"),
        last_seq_before=seq, sessions=[r["session"] for r in live]))
    for t in live:
        end = {"kind": "session_end", "op": "trace.end", "uid": t.get("uid"),
               "user": t.get("user"), "pid": t.get("pid"), "exe": t.get("exe"),
               "args": {"session": t["session"]}, "decision": "allow", "reason": "crash",
               "session": t["session"], "events": 0, "bytes": 0,
               # what the session disclosed before the crash was never counted
               "counts_lost": True, "started_seq": t.get("seq")}
        if t.get("idp"):
            end["idp"] = t["idp"]
        audit.append_record(end)
    return rec
