"""Client flag parsing: bcc vocabulary, clear errors, help with examples."""

from __future__ import annotations

import pytest

from collector import cli


def parse(*argv: str) -> object:
    return cli.build_parser().parse_args(list(argv))


def test_trace_flags_map_to_selectors() -> None:
    a = parse("trace", "-p", "12", "-p", "13", "-n", "nginx", "-u", "shop.service", "-c",
              "/system.slice/x", "-d", "10m", "--level", "payload", "--reason", "INC-1")
    assert cli.trace_targets(a) == ["pid:12", "pid:13", "comm:nginx", "cgroup:/system.slice/x",
                                    "unit:shop.service"]
    assert a.duration == 600 and a.level == "payload" and a.reason == "INC-1"


@pytest.mark.parametrize(("argv", "needle"), [
    (["trace", "-p", "0"], "PID must be a positive integer"),
    (["trace", "-p", "x"], "PID must be a positive integer"),
    (["trace", "-n", "a-very-long-process-name"], "NAME must be 1-15 bytes"),
    (["trace", "-p", "1", "-d", "ten"], "bad duration"),
    (["trace", "-p", "1", "--level", "raw"], "invalid choice"),
    (["grant", "add", "alice", "--target", "unit:x.service", "--for", "2h"], "--reason"),
])
def test_bad_flags_are_clear(argv: list[str], needle: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        parse(*argv)
    assert err.value.code == 2
    assert needle in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("trace", "--help")
    out = capsys.readouterr().out
    assert "examples:" in out and "periscope trace -p 1234" in out


def test_missing_socket_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["--socket", "/nonexistent/periscope.sock", "status"])
    assert rc == 2
    assert "is periscoped running?" in capsys.readouterr().err


def test_event_row_renders() -> None:
    ev = {"ts": 1.5, "kind": "syscall", "pid": 1, "comm": "x", "syscall": "connect", "fd": 3,
          "ret": -111, "errno": "ECONNREFUSED", "latency_us": 2.0, "family": "AF_INET",
          "peer": "127.0.0.1:1"}
    assert "peer=127.0.0.1:1" in cli.detail(ev)
