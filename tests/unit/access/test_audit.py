"""Audit log: chaining, every tamper case, fail-closed writes, torn-tail recovery, anchors."""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.access import audit
from collector.access.audit import (
    ANCHOR_MESSAGE_ID,
    GENESIS,
    AuditCorruptError,
    AuditLog,
    AuditWriteError,
    canonical,
    emit_anchor,
    read_anchors,
    record_hash,
    request_record,
    verify,
)
from collector.access.auth import Principal

ALICE = Principal(1000, 1000, "alice", frozenset({1000}), frozenset({"alice"}), 77, "/usr/bin/x")


def fill(path: Path, n: int, **kw: Any) -> AuditLog:
    log = AuditLog(str(path), **kw)
    for i in range(n):
        log.append(request_record(ALICE, "trace", {"pid": i}, allowed=i % 2 == 0, reason="r"))
    return log


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite(path: Path, new: list[bytes]) -> None:
    path.write_bytes(b"".join(new))


def forge(rec: dict[str, Any]) -> bytes:
    """What an attacker who knows the format writes: a record with a correct own hash."""
    rec = {k: v for k, v in rec.items() if k != "hash"}
    rec["hash"] = record_hash(rec)
    return canonical(rec) + b"\n"


def test_chain_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = fill(path, 3)
    recs = [json.loads(x) for x in lines(path)]
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert recs[0]["prev_hash"] == GENESIS
    assert all(recs[i]["prev_hash"] == recs[i - 1]["hash"] for i in (1, 2))
    assert all(record_hash(r) == r["hash"] for r in recs)
    assert recs[0]["user"] == "alice" and recs[0]["decision"] == "allow"
    assert recs[1]["decision"] == "deny" and {"events", "bytes", "session"} <= set(recs[1])
    assert log.head() == (3, recs[2]["hash"])
    res = verify(str(path))
    assert res.ok and res.count == 3 and res.last_seq == 3, res.message
    log.close()
    reopened = AuditLog(str(path))  # chain continues across restarts
    reopened.append({"kind": "note"})
    assert verify(str(path)).last_seq == 4


def test_reserved_and_unserializable(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "a.log"))
    with pytest.raises(ValueError, match="may not set"):
        log.append({"seq": 5})
    with pytest.raises(AuditWriteError, match="not serializable"):
        log.append({"x": float("nan")})
    assert log.head() == (0, GENESIS)


def _flip_value(ls: list[bytes]) -> None:
    ls[2] = ls[2].replace(b'"alice"', b'"alicf"')


def _flip_syntax(ls: list[bytes]) -> None:
    ls[2] = bytes([ls[2][0] ^ 0x01]) + ls[2][1:]  # '{' -> 'z'


def _flip_key(ls: list[bytes]) -> None:
    ls[2] = ls[2][:5] + bytes([ls[2][5] ^ 0x01]) + ls[2][6:]


def _delete(ls: list[bytes]) -> None:
    del ls[2]


def _reorder(ls: list[bytes]) -> None:
    ls[2], ls[3] = ls[3], ls[2]


def _insert(ls: list[bytes]) -> None:
    prev = json.loads(ls[1])
    ls.insert(2, forge({**prev, "seq": 3, "prev_hash": prev["hash"], "op": "forged"}))


def _reseq(ls: list[bytes]) -> None:
    """Delete a record and renumber the rest with valid own hashes: prev_hash breaks."""
    del ls[2]
    for i in range(2, len(ls)):
        ls[i] = forge({**json.loads(ls[i]), "seq": i + 1})


@pytest.mark.parametrize(("tamper", "bad_line", "message"), [
    (_flip_value, 3, "hash mismatch"),
    (_flip_syntax, 3, "not a valid audit record"),
    (_flip_key, 3, "hash mismatch"),
    (_delete, 3, "seq 4 where 3 was expected"),
    (_reorder, 3, "seq 4 where 3 was expected"),
    (_insert, 4, "seq 3 where 4 was expected"),
    (_reseq, 3, "prev_hash does not chain"),
])
def test_tamper_detected(tmp_path: Path, tamper: Callable[[list[bytes]], None], bad_line: int,
                         message: str) -> None:
    path = tmp_path / "audit.log"
    fill(path, 6).close()
    assert verify(str(path)).ok
    ls = lines(path)
    tamper(ls)
    rewrite(path, ls)
    res = verify(str(path))
    assert not res.ok
    assert res.bad_line == bad_line, res
    assert message in res.message


def test_truncated_tail_needs_anchor(tmp_path: Path) -> None:
    path, anchors = tmp_path / "audit.log", tmp_path / "anchors"
    log = fill(path, 5, anchor=functools.partial(emit_anchor, anchor_file=str(anchors)),
               anchor_every=5)
    log.close()
    rewrite(path, lines(path)[:3])
    assert verify(str(path)).ok  # a clean cut at a line boundary is invisible without anchors
    res = verify(str(path), read_anchors(str(anchors)))
    assert not res.ok and res.bad_seq == 5
    assert "ends at seq 3 but an anchor names seq 5" in res.message


def test_recomputed_chain_fails_anchor(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = fill(path, 4)
    anchor = log.anchor_now()
    log.close()
    prev, forged = GENESIS, []
    for raw in lines(path):  # rewrite history, re-chaining every record correctly
        rec = {**json.loads(raw), "prev_hash": prev, "user": "mallory"}
        forged.append(forge(rec))
        prev = json.loads(forged[-1])["hash"]
    rewrite(path, forged)
    assert verify(str(path)).ok
    res = verify(str(path), [anchor])
    assert not res.ok and res.bad_seq == 4 and "does not match its anchor" in res.message


def test_anchor_emission(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, anchors = tmp_path / "audit.log", tmp_path / "anchors"
    caplog.set_level(logging.INFO, logger="periscope.audit")
    log = fill(path, 7, anchor=functools.partial(emit_anchor, anchor_file=str(anchors)),
               anchor_every=3)
    got = read_anchors(str(anchors))
    assert [s for s, _ in got] == [3, 6]
    assert log.anchor_now() == (7, log.head()[1])
    assert read_anchors(str(anchors))[-1] == log.head()
    msgs = [r for r in caplog.records if r.name == "periscope.audit"]
    assert msgs[0].getMessage() == f"audit anchor seq=3 hash={got[0][1]}"
    assert msgs[0].MESSAGE_ID == ANCHOR_MESSAGE_ID  # type: ignore[attr-defined]
    assert verify(str(path), read_anchors(str(anchors))).ok


def test_anchor_failure_does_not_fail_append(tmp_path: Path) -> None:
    def broken(seq: int, digest: str) -> None:
        raise OSError("journal down")

    log = fill(tmp_path / "a.log", 2, anchor=broken, anchor_every=1)
    assert log.anchor_failures == 2 and log.head()[0] == 2


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS])
def test_fail_closed_on_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    path = tmp_path / "audit.log"
    log = fill(path, 2)
    before, head = path.read_bytes(), log.head()

    def fail(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(audit.os, "fsync", fail)
    with pytest.raises(AuditWriteError, match="write failed"):
        log.append({"kind": "request", "op": "trace"})
    monkeypatch.undo()
    assert path.read_bytes() == before and log.head() == head  # rolled back
    log.append({"kind": "request", "op": "after"})
    res = verify(str(path))
    assert res.ok and res.last_seq == 3


def test_partial_write_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.log"
    log = fill(path, 2)
    real_write, calls = os.write, list[int]()

    def half(fd: int, data: Any) -> int:
        if calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        calls.append(1)
        return real_write(fd, bytes(data[: len(data) // 2]))

    monkeypatch.setattr(audit.os, "write", half)
    with pytest.raises(AuditWriteError):
        log.append({"kind": "request"})
    monkeypatch.undo()
    assert len(lines(path)) == 2 and verify(str(path)).ok
    log.append({"kind": "request"})
    assert verify(str(path)).last_seq == 3


def test_failed_rollback_resyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write and truncate both fail: the torn line stays; the next append repairs it."""
    path = tmp_path / "audit.log"
    log = fill(path, 2)
    real_write = os.write

    def half(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.EIO, "Input/output error")

    def no_truncate(fd: int, size: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(audit.os, "write", half)
    monkeypatch.setattr(audit.os, "ftruncate", no_truncate)
    with pytest.raises(AuditWriteError):
        log.append({"kind": "request"})
    monkeypatch.undo()
    assert not verify(str(path)).ok  # torn tail on disk
    log.append({"kind": "request", "op": "next"})
    recs = [json.loads(x) for x in lines(path)]
    assert [r.get("kind") for r in recs[2:]] == ["recovery", "request"]
    assert recs[2]["torn_bytes"] == 10 and verify(str(path)).ok


@pytest.mark.parametrize("torn", [b'{"seq":3,"kind":"req', b'{"seq":3,"kind\n'])
def test_torn_tail_recovered_on_open(tmp_path: Path, torn: bytes) -> None:
    path = tmp_path / "audit.log"
    fill(path, 2).close()
    with open(path, "ab") as f:
        f.write(torn)
    log = AuditLog(str(path))
    recs = [json.loads(x) for x in lines(path)]
    assert len(recs) == 3 and recs[2]["kind"] == "recovery"
    assert recs[2]["torn_bytes"] == len(torn)
    assert recs[2]["torn_sha256"] == hashlib.sha256(torn).hexdigest()
    assert Path(recs[2]["evidence"]).read_bytes() == torn
    assert verify(str(path)).ok and log.head()[0] == 3


def test_torn_only_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"se')
    AuditLog(str(path)).append({"kind": "x"})
    res = verify(str(path))
    assert res.ok and res.count == 2


def test_corrupt_tail_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    fill(path, 3).close()
    ls = lines(path)
    _flip_value(ls)
    rewrite(path, ls)
    with pytest.raises(AuditWriteError, match="fails its hash") as exc:  # callers catch one type
        AuditLog(str(path))
    assert isinstance(exc.value, AuditCorruptError)


def test_concurrent_appends(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))

    def work(t: int) -> None:
        for i in range(40):
            log.append({"kind": "request", "thread": t, "i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res = verify(str(path))
    assert res.ok and res.count == 320


def test_verify_missing_and_empty(tmp_path: Path) -> None:
    assert not verify(str(tmp_path / "nope")).ok
    (tmp_path / "empty").write_bytes(b"")
    assert verify(str(tmp_path / "empty")).ok
    assert not verify(str(tmp_path / "empty"), [(1, "ab")]).ok
