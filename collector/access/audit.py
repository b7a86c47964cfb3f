"""Hash-chained, fsync'd, fail-closed audit log (JSON lines), with anchors and verify."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from collector.access.auth import Principal
from collector.errors import AuditCorruptError, AuditWriteError

GENESIS = "0" * 64  # prev_hash of the first record
# journald MESSAGE_ID of anchor lines: `journalctl MESSAGE_ID=334ef7b4210b4c4ea0f4d216072182cc`
ANCHOR_MESSAGE_ID = "334ef7b4210b4c4ea0f4d216072182cc"
RESERVED = frozenset({"seq", "time", "prev_hash", "hash"})
log = logging.getLogger("periscope.audit")

def canonical(record: Mapping[str, Any]) -> bytes:
    """The byte form that is hashed and written: sorted keys, no spaces, ASCII."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical form of the record minus its `hash` field."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def request_record(principal: Principal, op: str, args: Mapping[str, Any], *, allowed: bool,
                   reason: str, session: str | None = None, events: int = 0,
                   bytes_disclosed: int = 0) -> dict[str, Any]:
    """The fields of one request record (args must already be redacted)."""
    rec = {"kind": "request", "uid": principal.uid, "user": principal.user,
           "pid": principal.pid, "exe": principal.exe, "op": op, "args": dict(args),
           "decision": "allow" if allowed else "deny", "reason": reason, "session": session,
           "events": events, "bytes": bytes_disclosed}
    if principal.idp is not None:  # a verified IdP login: who it was, never the token
        rec["idp"] = principal.idp.audit()
    return rec


def _tail(fd: int, size: int) -> tuple[int, bytes, bytes]:
    """(offset of the last complete line, that line with its newline, the bytes after it)."""
    buf, pos = b"", size
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        last = buf.rfind(b"\n")
        if last >= 0 and buf.rfind(b"\n", 0, last) >= 0:
            break
    last = buf.rfind(b"\n")
    if last < 0:
        return pos, b"", buf
    start = buf.rfind(b"\n", 0, last) + 1
    return pos + start, buf[start:last + 1], buf[last + 1:]


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _fsync_write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


class AuditLog:
    """Append-only audit log. `append` is thread-safe and returns only once durable.

    `anchor(seq, hash)` is called every `anchor_every` appends and by
    `anchor_now()`; pass `functools.partial(emit_anchor, anchor_file=...)`.
    """

    def __init__(self, path: str, anchor: Callable[[int, str], None] | None = None,
                 anchor_every: int = 100, clock: Callable[[], float] = time.time) -> None:
        self.path, self._anchor, self._every, self._clock = path, anchor, anchor_every, clock
        self._lock = threading.Lock()
        self._seq, self._hash, self._size, self._since_anchor = 0, GENESIS, 0, 0
        self._broken, self.anchor_failures = False, 0
        self.records = self.write_failures = 0  # appended by this process (read by metrics)
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise AuditWriteError(f"audit {path}: cannot open: {err.strerror}") from err
        try:
            with self._lock:
                self._resync()
        except BaseException:
            os.close(self._fd)
            raise

    def _resync(self) -> None:
        """Re-read the tail: learn (seq, hash) and repair a torn last line."""
        try:
            self._size = os.fstat(self._fd).st_size
            start, line, frag = _tail(self._fd, self._size)
        except OSError as err:
            raise AuditWriteError(f"audit {self.path}: cannot read: {err.strerror}") from err
        if line and not frag and _parse(line) is None:
            # The last line is complete but unparsable: a torn write that got its newline.
            frag = line
            start, line, _ = _tail(self._fd, start)
        rec = _parse(line) if line else None
        if line and (rec is None or record_hash(rec) != rec.get("hash")
                     or not isinstance(rec.get("seq"), int)):
            raise AuditCorruptError(
                f"audit {self.path}: the last record (byte {start}) fails its hash; "
                "run `periscope audit verify` and move the log aside to continue")
        self._seq, self._hash = (rec["seq"], rec["hash"]) if rec else (0, GENESIS)
        if frag:
            self._repair(frag)

    def _repair(self, torn: bytes) -> None:
        digest = hashlib.sha256(torn).hexdigest()
        good = self._size - len(torn)
        evidence = f"{self.path}.torn-{self._seq + 1}-{digest[:16]}"
        try:
            efd = os.open(evidence, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _fsync_write(efd, torn)
            finally:
                os.close(efd)
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
        except OSError as err:
            raise AuditWriteError(
                f"audit {self.path}: cannot repair torn tail: {err.strerror}") from err
        self._size = good
        log.warning("audit %s: torn tail of %d bytes preserved in %s", self.path, len(torn),
                    evidence)
        self._append({"kind": "recovery", "torn_bytes": len(torn), "torn_sha256": digest,
                      "evidence": evidence})

    def _append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        clash = RESERVED & set(record)
        if clash:
            raise ValueError(f"audit records may not set {sorted(clash)}")
        full = {**record, "seq": self._seq + 1, "time": self._clock(), "prev_hash": self._hash}
        try:
            full = json.loads(json.dumps(full, default=str, allow_nan=False))
            full["hash"] = record_hash(full)
            line = canonical(full) + b"\n"
        except ValueError as err:
            self.write_failures += 1
            raise AuditWriteError(f"audit record not serializable: {err}") from err
        try:
            _fsync_write(self._fd, line)
        except OSError as err:
            self.write_failures += 1
            self._broken = True
            try:  # roll back a partial or unsynced line; if this fails too, resync next time
                os.ftruncate(self._fd, self._size)
                os.fsync(self._fd)
            except OSError:
                pass
            raise AuditWriteError(f"audit {self.path}: write failed: {err.strerror}") from err
        self._seq, self._hash, self._size = full["seq"], full["hash"], self._size + len(line)
        self.records += 1
        return full

    def append(self, record: Mapping[str, Any]) -> str:
        """Append one record (durably) and return its hash; raises AuditWriteError."""
        return str(self.append_record(record)["hash"])

    def append_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record (durably) and return it as written (seq, time, hashes)."""
        with self._lock:
            if self._broken:
                self._resync()
                self._broken = False
            full = self._append(record)
            self._since_anchor += 1
            if self._anchor is not None and self._since_anchor >= self._every:
                self._emit()
        return full

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the latest record: what an anchor records."""
        with self._lock:
            return self._seq, self._hash

    def anchor_now(self) -> tuple[int, str]:
        with self._lock:
            self._emit()
            return self._seq, self._hash

    def _emit(self) -> None:
        self._since_anchor = 0
        if self._anchor is None:
            return
        try:
            self._anchor(self._seq, self._hash)
        except Exception:  # the record is durable; a lost anchor only weakens truncation checks
            self.anchor_failures += 1
            log.exception("audit anchor failed")

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


def emit_anchor(seq: int, digest: str, anchor_file: str | None = None) -> None:
    """Publish (seq, hash) outside the log: the "periscope.audit" logger, and a file.

    The log line carries MESSAGE_ID=ANCHOR_MESSAGE_ID as an extra field, which
    systemd's JournalHandler turns into a journal field (see install_journal_handler).
    """
    log.info("audit anchor seq=%d hash=%s", seq, digest, extra={
        "MESSAGE_ID": ANCHOR_MESSAGE_ID, "AUDIT_SEQ": seq, "AUDIT_HASH": digest})
    if anchor_file is not None:
        line = json.dumps({"seq": seq, "hash": digest, "time": time.time()}) + "\n"
        fd = os.open(anchor_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _fsync_write(fd, line.encode())
        finally:
            os.close(fd)


def install_journal_handler() -> bool:
    """Send "periscope.audit" straight to journald when python-systemd is installed."""
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return False  # stderr logging it is; journald still captures it under systemd
    log.addHandler(JournalHandler(SYSLOG_IDENTIFIER="periscoped"))
    log.propagate = False
    return True


def read_anchors(path: str) -> list[tuple[int, str]]:
    """(seq, hash) pairs from an anchor file; missing file = none; bad line = ValueError."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    out = []
    for n, text in enumerate(lines, 1):
        try:
            d = json.loads(text)
            out.append((int(d["seq"]), str(d["hash"])))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"anchor file {path}, line {n}: {err}") from err
    return out


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `verify`: ok, records checked, and where and why it first failed."""

    ok: bool
    count: int
    message: str
    last_seq: int = 0
    last_hash: str = GENESIS
    bad_seq: int | None = None
    bad_line: int | None = None


def _check(n: int, raw: bytes, seq: int, prev: str) -> tuple[dict[str, Any] | None, str]:
    if not raw.endswith(b"\n"):
        return None, f"line {n}: torn record (no trailing newline)"
    rec = _parse(raw)
    if rec is None or not isinstance(rec.get("seq"), int) or not isinstance(rec.get("hash"), str):
        return None, f"line {n}: not a valid audit record"
    s = rec["seq"]
    if record_hash(rec) != rec["hash"]:
        return rec, f"line {n} (seq {s}): hash mismatch: the record was altered"
    if s != seq + 1:
        return rec, (f"line {n}: seq {s} where {seq + 1} was expected: "
                     "a record was deleted, inserted or reordered")
    if rec.get("prev_hash") != prev:
        return rec, f"line {n} (seq {s}): prev_hash does not chain to the previous record"
    return rec, ""


def verify(path: str, anchors: list[tuple[int, str]] | None = None) -> VerifyResult:
    """Check the whole chain, then that every anchor's (seq, hash) is in it."""
    want = dict(anchors or [])
    seen: dict[int, str] = {}
    seq, prev, n = 0, GENESIS, 0
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                rec, err = _check(n, raw, seq, prev)
                if err:
                    bad = rec.get("seq") if rec and isinstance(rec.get("seq"), int) else None
                    return VerifyResult(False, n - 1, err, seq, prev, bad, n)
                assert rec is not None
                seq, prev = rec["seq"], rec["hash"]
                if seq in want:
                    seen[seq] = prev
    except OSError as err:
        return VerifyResult(False, 0, f"cannot read {path}: {err.strerror}")
    for aseq, ahash in sorted(want.items()):
        if aseq > seq:
            return VerifyResult(False, n, f"the log ends at seq {seq} but an anchor names seq "
                                f"{aseq}: records were removed from the tail", seq, prev, aseq)
        if aseq > 0 and seen.get(aseq) != ahash:
            return VerifyResult(False, n, f"seq {aseq} does not match its anchor: "
                                "the log was rewritten", seq, prev, aseq)
    return VerifyResult(True, n, f"ok: {n} records, chain intact, {len(want)} anchors match",
                        seq, prev)
