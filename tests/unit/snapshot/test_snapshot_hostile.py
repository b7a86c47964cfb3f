"""Content a traced process controls (environ, argv, comm, paths, socket names) cannot
break a snapshot, leak past redaction, or reach a terminal as control characters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.snapshot import collect, render_summary
from collector.snapshot import fds as fds_module
from collector.snapshot.sections import MAX_CMDLINE, MAX_ENV_VARS, MAX_ENVIRON
from redact import Redactor
from tests.unit.snapshot.fakeproc import PID


def _snap(proc: Path, redactor: Redactor) -> dict[str, Any]:
    snap = collect(PID, redactor, procfs=str(proc))
    orjson.dumps(snap)  # JSON-ready whatever the process put in its files
    return snap


def test_non_utf8_environment(fake_proc: Path, redactor: Redactor) -> None:
    (fake_proc / str(PID) / "environ").write_bytes(
        b"LANG\xff=caf\xe9\0DB_PASSWORD=s3cr\xe9t-value\0NOTE=token=abcdef123456\xfe\0")
    snap = _snap(fake_proc, redactor)
    env = [(v["name"], v["value"]) for v in snap["environ"]["vars"]]
    assert env == [("LANG\\xff", "caf\\xe9"), ("DB_PASSWORD", "[REDACTED:secret]"),
                   ("NOTE", "token=[REDACTED:secret]")]
    assert "abcdef123456" not in orjson.dumps(snap).decode()


def test_huge_environment_is_bounded(fake_proc: Path, redactor: Redactor) -> None:
    big = b"".join(b"VAR_%06d=%s\0" % (i, b"x" * 40) for i in range(60000))  # ~3 MiB
    (fake_proc / str(PID) / "environ").write_bytes(big)
    env = _snap(fake_proc, redactor)["environ"]
    assert env["truncated"] and env["bytes"] == MAX_ENVIRON
    assert len(env["vars"]) == MAX_ENV_VARS
    assert env["count"] == MAX_ENVIRON // len(b"VAR_000000=" + b"x" * 40 + b"\0")


def test_one_huge_variable_is_cut_by_redact_field(fake_proc: Path, redactor: Redactor) -> None:
    (fake_proc / str(PID) / "environ").write_bytes(b"BLOB=" + b"a" * 100000 + b"\0")
    env = _snap(fake_proc, redactor)["environ"]
    assert len(env["vars"][0]["value"]) == 4096 and not env["truncated"]


def test_huge_cmdline(fake_proc: Path, redactor: Redactor) -> None:
    (fake_proc / str(PID) / "cmdline").write_bytes(b"srv\0" + b"--opt\0" * 50000)
    ident = _snap(fake_proc, redactor)["identity"]
    assert ident["cmdline_truncated"] and len(ident["cmdline"]) <= MAX_CMDLINE


def _relink(proc: Path, fd: int, target: str | bytes) -> None:
    link = proc / str(PID) / "fd" / str(fd)
    link.unlink()
    os.symlink(target, os.fsencode(link))


ODD = [  # link target, type, field, value shown
    ("/tmp/a\nb\x1b[31mred", "file", "path", "/tmp/a\nb\x1b[31mred"),
    (b"/tmp/caf\xe9/\xff", "file", "path", "/tmp/caf\\xe9/\\xff"),
    ("dmabuf:", "other", "target", "dmabuf:"),
    ("anon_inode:bpf-map", "anon_inode", "kind", "bpf-map"),
    ("anon_inode:[pidfd]", "anon_inode", "kind", "pidfd"),
    ("[eventfd]", "other", "target", "[eventfd]"),
    (" (deleted)", "other", "target", " (deleted)"),
    ("socket:[notanumber]", "other", "target", "socket:[notanumber]"),
    ("/" + "d" * 4000, "file", "path", "/" + "d" * 4000),
    ("/srv/password=hunter2/db", "file", "path", "/srv/password=[REDACTED:secret]"),
]


@pytest.mark.parametrize(("target", "kind", "key", "shown"), ODD)
def test_odd_fd_link_targets(fake_proc: Path, redactor: Redactor, target: str | bytes,
                             kind: str, key: str, shown: str) -> None:
    _relink(fake_proc, 3, target)
    snap = _snap(fake_proc, redactor)
    entry = next(e for e in snap["fds"]["list"] if e["fd"] == 3)
    assert (entry["type"], entry[key]) == (kind, shown)
    summary = render_summary(snap)
    assert "\x1b" not in summary and "hunter2" not in summary


def test_summary_escapes_control_and_bidi_characters(fake_proc: Path,
                                                     redactor: Redactor) -> None:
    stat = fake_proc / str(PID) / "stat"
    stat.write_text(stat.read_text().replace("(snapsrv)", "(e\x1b]0;x\x07\u202e)"))
    _relink(fake_proc, 3, "/tmp/x\ny\x1b[2J")
    summary = render_summary(_snap(fake_proc, redactor))
    assert "\x1b" not in summary and "\x07" not in summary and "\u202e" not in summary
    assert "e\\x1b]0;x\\x07\\u202e" in summary and "/tmp/x\\x0ay\\x1b[2J" in summary


def test_comm_that_looks_like_more_stat_fields(fake_proc: Path, redactor: Redactor) -> None:
    stat = fake_proc / str(PID) / "stat"
    stat.write_text(stat.read_text().replace("(snapsrv)", "(a) Z 1 (b)"))
    ident = _snap(fake_proc, redactor)["identity"]
    assert (ident["comm"], ident["state"], ident["ppid"]) == ("a) Z 1 (b", "sleeping", 5100)


def test_unix_socket_path_forging_a_table_row(fake_proc: Path, redactor: Redactor) -> None:
    """The kernel prints unix paths raw: a newline in one can start a fake row. A fake row
    that does not parse is skipped; the real one is still found."""
    unix = fake_proc / str(PID) / "net" / "unix"
    unix.write_text(unix.read_text() + "0000: 00000002 00000000 00010000 0001 01 9 /x\n"
                    "0: zz zz zz 0001 01 7005 /forged\n")
    socks = {s["fd"]: s for s in _snap(fake_proc, redactor)["sockets"]}
    assert socks[8]["laddr"] == "/run/snap/control.sock"


def test_non_utf8_and_secret_paths_in_maps(fake_proc: Path, redactor: Redactor) -> None:
    maps = fake_proc / str(PID) / "maps"
    maps.write_bytes(maps.read_bytes() + b"7f0000900000-7f0000901000 r--p 00000000 08:01 7 "
                     b"/opt/\xff\xfe/api_key=sk_live_abcdefghijklmnopqrstuvwx.so\n")
    snap = _snap(fake_proc, redactor)
    assert "sk_live_abcdefghijklmnopqrstuvwx" not in orjson.dumps(snap).decode()
    assert any(f["path"].startswith("/opt/\\xff\\xfe/") for f in snap["maps"]["files"])


def test_many_fds_are_capped(fake_proc: Path, redactor: Redactor,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fds_module, "MAX_FDS", 40)
    fd_dir, info_dir = fake_proc / str(PID) / "fd", fake_proc / str(PID) / "fdinfo"
    for fd in range(100, 140):
        os.symlink("pipe:[1]", fd_dir / str(fd))
        (info_dir / str(fd)).write_text("pos:\t0\nflags:\t0\n")
    fds = _snap(fake_proc, redactor)["fds"]
    assert fds["count"] == 56 and len(fds["list"]) == 40 and fds["truncated"]
    assert [e["fd"] for e in fds["list"]][-1] == 123  # the lowest fds are the ones listed
