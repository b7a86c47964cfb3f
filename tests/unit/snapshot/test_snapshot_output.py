"""write_snapshot (atomic, 0600) and render_summary (what an SRE reads in ten seconds)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.snapshot import collect, render_summary, write_snapshot
from redact import Redactor
from tests.unit.snapshot.fakeproc import PID, PROC


@pytest.fixture
def snap(redactor: Redactor) -> dict[str, Any]:
    return collect(PID, redactor, procfs=str(PROC))


def test_file_is_0600_whatever_the_umask(tmp_path: Path, snap: dict[str, Any]) -> None:
    out = tmp_path / "snap.json"
    old = os.umask(0)
    try:
        write_snapshot(out, snap)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert orjson.loads(out.read_bytes()) == snap
    assert os.listdir(tmp_path) == ["snap.json"]  # no temp file left behind


def test_replaces_an_existing_file_atomically(tmp_path: Path, snap: dict[str, Any]) -> None:
    out = tmp_path / "snap.json"
    out.write_text("old")
    out.chmod(0o644)
    inode = out.stat().st_ino
    write_snapshot(str(out), snap)
    assert out.stat().st_ino != inode  # a new file renamed over, never rewritten in place
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert orjson.loads(out.read_bytes())["pid"] == PID


def test_unserialisable_snapshot_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "snap.json"
    with pytest.raises(TypeError):
        write_snapshot(out, {"x": object()})
    assert os.listdir(tmp_path) == []


def test_missing_directory_is_an_error(tmp_path: Path, snap: dict[str, Any]) -> None:
    with pytest.raises(FileNotFoundError):
        write_snapshot(tmp_path / "nope" / "snap.json", snap)


def test_summary_has_the_facts_and_no_values(snap: dict[str, Any]) -> None:
    text = render_summary(snap)
    lines = text.splitlines()
    assert lines[0].startswith("pid 5150 snapsrv: snapshot taken ")
    for fact in ("user root (uid 0), state sleeping",
                 "cmdline snapsrv --port 8080 --password [REDACTED:secret]",
                 "parents 5100 snapinit",
                 "/system.slice/snap.service (unit snap.service)",
                 "threads   3: 1 sleeping, 1 running, 1 disk-sleep",
                 "rss 43.9 MiB, pss 39.1 MiB, swap 128.0 KiB",
                 "open files 1024/524288",
                 "fds       16: 7 socket, 2 pipe, 2 file, 2 anon_inode, 1 chr, 1 memfd, 1 ns",
                 "3 file       /var/log/snap/app.log (w, pos 12345)",
                 "1 pipe       pipe:[9001]",
                 "sockets   7: 3 LISTEN, 1 ESTABLISHED",
                 "4 inet stream      127.0.0.1:8080 LISTEN",
                 "5 inet stream      127.0.0.1:8080 -> 10.0.0.5:54321 ESTABLISHED",
                 "libssl.so.3 (openssl, not traceable: ",
                 "libgnutls.so.30 (gnutls, not traceable: periscope's TLS uprobes cover",
                 "environ   7 variables (values not shown): PATH HOME DB_PASSWORD "
                 "UPSTREAM_HEADER BILLING_NOTE EMPTY NOEQUALS"):
        assert fact in text, fact
    for value in ("/usr/bin:/bin", "Bearer", "credit_card"):
        assert value not in text  # environment values are never in the summary
    assert "PARTIAL" not in text
    assert len(lines) < 45


def test_summary_of_a_partial_snapshot(snap: dict[str, Any]) -> None:
    part = {k: v for k, v in snap.items() if k not in ("fds", "sockets", "environ")}
    part.update(partial=True, exited=True, failed={"fds": "process exited",
                                                   "sockets": "not read: process exited",
                                                   "environ": "not read: process exited"})
    text = render_summary(part)
    assert ("PARTIAL (the process exited during the snapshot): fds: process exited; "
            "sockets: not read: process exited; environ: not read: process exited") in text
    assert "fds  " not in text and "environ  " not in text


def test_summary_of_almost_nothing() -> None:
    text = render_summary({"schema": 1, "pid": 7, "partial": True, "exited": True,
                           "failed": {"identity": "process exited"}})
    assert text.startswith("pid 7 ?: snapshot taken ?") and "identity: process exited" in text
