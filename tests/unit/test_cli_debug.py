"""`periscope snapshot` and `periscope profile` against a fake daemon on a socketpair-like
Unix socket: flags, what is sent, what is printed and written (files mode 0600)."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.cli import commands, debug, parser
from collector.cli.client import ClientError
from collector.profile import profile_to_wire
from collector.profile.model import make_profile


class FakeDaemon:
    """Answers one request per connection with the given lines; records the requests."""

    def __init__(self, path: str, replies: list[dict[str, Any]]) -> None:
        self.path = path
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as f:
            self.requests.append(orjson.loads(f.readline()))
            for reply in self.replies:
                conn.sendall(orjson.dumps(reply) + b"\n")


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "d.sock")


def main(path: str, *argv: str) -> int:
    return commands.main(["--socket", path, *argv])


PROFILE = make_profile({("hotc", "main", "hot_function"): 90, ("hotc", "main", "helper"): 8,
                        ("hotc", "main", "hot_function", "page_fault_[k]"): 2},
                       pids=(42,), freq=99, duration_s=1.0, frames=300, unknown_frames=0)
HEAD = {"ok": True, "result": {"profile": "p1", "targets": ["pid:42"], "pids": [42],
                               "duration_s": 1.0, "freq": 99, "narrowed": []}}
END = {"end": {"profile": "p1", "reason": "done", "result": profile_to_wire(PROFILE, 1 << 20)}}
PROGRESS = {"event": {"progress": {"phase": "sampling", "elapsed_s": 0.5, "duration_s": 1.0}}}


def test_profile_sends_its_flags_and_prints_the_top_frames(
        sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    d = FakeDaemon(sock_path, [HEAD, PROGRESS, END])
    assert main(sock_path, "profile", "-p", "42", "-d", "5s", "-F", "49", "--reason", "r") == 0
    assert d.requests == [{"op": "profile", "args": {"targets": ["pid:42"], "duration": 5,
                                                     "freq": 49, "reason": "r"}}]
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["SELF", "SELF%", "TOTAL%", "FRAME"]
    assert rows[1] == ["90", "90.0%", "92.0%", "hot_function"]  # self 90, in 92 stacks
    assert rows[2] == ["8", "8.0%", "8.0%", "helper"]
    assert ["0", "0.0%", "100.0%", "main"] in rows
    assert "profile p1: 1 process (42), 1 s at 99 Hz" in err
    assert "sampling for 1 s" in err and "profile ended (done): 100 samples" in err


def test_profile_folded_and_svg(sock_path: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    FakeDaemon(sock_path, [HEAD, END])
    svg = tmp_path / "cpu.svg"
    assert main(sock_path, "profile", "-p", "42", "--folded", "--svg", str(svg)) == 0
    out, _ = capsys.readouterr()
    assert out == ("hotc;main;helper 8\nhotc;main;hot_function 90\n"
                   "hotc;main;hot_function;page_fault_[k] 2\n")
    assert stat.S_IMODE(svg.stat().st_mode) == 0o600
    text = svg.read_text()
    assert text.startswith("<?xml") and "hot_function" in text and "pid:42" in text


def test_profile_json_is_the_end_message_and_early_ends_exit_3(
        sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    end = {"end": dict(END["end"], reason="shutdown")}
    FakeDaemon(sock_path, [HEAD, end])
    assert main(sock_path, "profile", "-u", "shop.service", "--json") == 3
    (line,) = capsys.readouterr().out.splitlines()
    assert orjson.loads(line) == end["end"]


def test_profile_error_after_the_header_is_one_line(
        sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    FakeDaemon(sock_path, [HEAD, {"ok": False, "error": {
        "code": 6, "name": "UNAVAILABLE", "message": "the profile probe failed: no BTF"}}])
    assert main(sock_path, "profile", "-p", "42") == 2
    assert "UNAVAILABLE: the profile probe failed: no BTF" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "needle"), [
    (["profile", "-p", "1", "-F", "0"], "from 1 to 1000"),
    (["profile", "-p", "1", "-F", "2000"], "from 1 to 1000"),
    (["profile", "-p", "1", "-d", "11m"], "at most 10 minutes"),
    (["profile", "-p", "1", "-d", "soon"], "bad duration"),
    (["profile", "-u", "nginx"], "unit must be a name like"),
])
def test_profile_bad_values_are_refused_at_parse_time(
        argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser.build_parser().parse_args(argv)
    assert needle in capsys.readouterr().err


def test_profile_needs_a_target_and_one_output_form() -> None:
    a = parser.build_parser().parse_args(["profile"])
    with pytest.raises(ClientError, match="profile needs a target"):
        debug.profile_args(a)
    a = parser.build_parser().parse_args(["profile", "-p", "1", "--folded", "--json"])
    with pytest.raises(ClientError, match="one of --folded and --json"):
        debug.profile_args(a)
    a = parser.build_parser().parse_args(["profile", "-n", "nginx", "-c", "/a"])
    assert debug.profile_args(a) == {"targets": ["comm:nginx", "cgroup:/a"], "duration": 10,
                                     "freq": 99}


SNAP = {"schema": 1, "pid": 42, "taken_at": 1.7e9, "duration_ms": 3.2, "partial": False,
        "exited": False, "failed": {},
        "identity": {"comm": "srv", "user": "root", "uid": 0, "state": "sleeping",
                     "exe": "/usr/bin/srv", "cmdline": "srv --password [REDACTED:secret]",
                     "cwd": "/", "start_time": 1.7e9 - 60},
        "environ": {"count": 1, "vars": [{"name": "DB_PASSWORD",
                                          "value": "[REDACTED:secret]"}]},
        "store": {"recent_errors": [{"pid": 42}]}}


def test_snapshot_prints_the_summary_and_writes_the_file(
        sock_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = FakeDaemon(sock_path, [{"ok": True, "result": SNAP}])
    out_file = tmp_path / "snap.json"
    os.umask(0o022)
    assert main(sock_path, "snapshot", "42", "-o", str(out_file)) == 0
    assert d.requests == [{"op": "snapshot", "args": {"targets": ["pid:42"]}}]
    out, err = capsys.readouterr()
    assert out.startswith("pid 42 srv: snapshot taken ") and "1 recent errors" in out
    assert "environ   1 variables (values not shown): DB_PASSWORD" in out
    assert f"wrote {out_file} (mode 0600)" in err
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert orjson.loads(out_file.read_bytes()) == SNAP


def test_snapshot_json(sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    FakeDaemon(sock_path, [{"ok": True, "result": SNAP}])
    assert main(sock_path, "snapshot", "42", "--json") == 0
    assert orjson.loads(capsys.readouterr().out) == SNAP
