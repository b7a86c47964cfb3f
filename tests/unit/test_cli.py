"""Client parsing and dispatch: every example parses, bad values are refused clearly, no
fall-through, every option has help, each --help shows its own examples."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import time
from typing import Any

import pytest

from collector import protocol
from collector.cli import argtypes, commands, examples, parser, render
from collector.cli.client import ClientError


def parse(*argv: str) -> argparse.Namespace:
    return parser.build_parser().parse_args(list(argv))


def example_argv(ex: examples.Example) -> list[str]:
    line, _ = examples.render(ex)
    words = shlex.split(line)
    assert words[0] == "periscope"
    return words[1:]


ALL_EXAMPLES = [(cmd, ex) for cmd, exs in examples.EXAMPLES.items() for ex in exs]


def _walk(p: argparse.ArgumentParser, path: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every parser in the tree by command path ("" is the top, "grant add" a leaf)."""
    out = {path: p}
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                out.update(_walk(sp, f"{path} {name}".strip()))
    return out


PARSERS = _walk(parser.build_parser())
LEAVES = {path for path, p in PARSERS.items()
          if path and not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)}


# -- the examples table ------------------------------------------------------------------
@pytest.mark.parametrize(("command", "ex"), ALL_EXAMPLES,
                         ids=[examples.render(ex)[0] for _, ex in ALL_EXAMPLES])
def test_every_example_parses_to_its_command(command: str, ex: examples.Example) -> None:
    a = parse(*example_argv(ex))
    assert a.command == command
    assert a.command in commands.DISPATCH


def test_every_command_has_examples_a_handler_and_an_op() -> None:
    assert set(examples.EXAMPLES) == LEAVES
    assert set(commands.DISPATCH) == LEAVES
    assert set(commands.OPS) == LEAVES


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_ops_are_known_to_the_wire_protocol(command: str) -> None:
    op, args = protocol.decode_request(protocol.request(commands.OPS[command], {}))
    assert op == commands.OPS[command] and args == {}


def test_examples_use_only_known_placeholders() -> None:
    for _, ex in ALL_EXAMPLES:
        examples.render(ex)  # KeyError on a placeholder SAMPLE does not define
        examples.render(ex, {k: "X" for k in examples.SAMPLE})


# -- help ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(PARSERS))
def test_every_option_has_help(path: str) -> None:
    for action in PARSERS[path]._actions:
        assert action.help and action.help != argparse.SUPPRESS, (path, action.option_strings)
        assert "_" not in (action.metavar or ""), (path, action.metavar)  # no FOR_
    assert path == "" or PARSERS[path].description, path


def _help(path: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as err:
        parse(*path.split(), "--help")
    assert err.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("path", sorted(p for p in PARSERS if p))
def test_help_shows_its_own_examples_only(path: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(path, capsys)
    own = examples.for_command(path)
    assert own, f"{path} has no examples"
    lines = [examples.render(ex)[0] for ex in own]
    for line in lines:
        assert line in out, (path, line)
    others = [examples.render(ex)[0] for cmd, ex in ALL_EXAMPLES
              if cmd != path and not cmd.startswith(path + " ")]
    for line in others:
        assert f"  {line}  " not in out and not out.rstrip().endswith(line), (path, line)


def test_top_level_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help("", capsys)
    for cmd in {c.split()[0] for c in LEAVES}:
        assert f"    {cmd} " in out, cmd
    assert "exit status" in out


# -- values are validated at parse time ---------------------------------------------------
@pytest.mark.parametrize(("argv", "needle"), [
    (["trace", "-p", "0"], "pid must be a positive integer"),
    (["trace", "-p", "x"], "pid must be a positive integer"),
    (["events", "-p", "-5"], "pid must be a positive integer"),
    (["trace", "-n", "a-very-long-process-name"], "comm is at most 15 bytes"),
    (["trace", "-n", ""], "empty value"),
    (["trace", "-u", "nginx"], "unit must be a name like 'nginx.service'"),
    (["errors", "-u", "system.slice/nginx.service"], "unit must be a name like"),
    (["trace", "-c", "system.slice"], "cgroup must be an absolute, normalised path"),
    (["top", "-c", "/system.slice/../x"], "cgroup must be an absolute, normalised path"),
    (["trace", "-c", "//x"], "cgroup must be an absolute, normalised path"),
    (["trace", "-p", "1", "-d", "ten"], "bad duration"),
    (["trace", "-p", "1", "--level", "raw"], "invalid choice"),
    (["events", "--limit", "0"], "from 1 to 10000"),
    (["events", "--limit", "10001"], "from 1 to 10000"),
    (["http", "--limit", "many"], "from 1 to 10000"),
    (["audit", "show", "--limit", "0"], "from 1 to 10000"),
    (["events", "--since", "yesterday"], "expected how long ago"),
    (["events", "--since", "2999-01-01T00:00"], "is in the future"),
    (["snapshot", "0"], "pid must be a positive integer"),
    (["grant", "add", "alice", "--target", "unit:x.service", "--for", "2h"], "--reason"),
    (["grant", "add", "alice", "--target", "pid:abc", "--for", "2h", "--reason", "r"],
     "pid must be a positive integer"),
    (["grant", "add", "alice", "--target", "host:x", "--for", "2h", "--reason", "r"],
     "bad selector 'host:x'"),
    (["grant"], "required: ACTION"),
    (["nonsense"], "invalid choice"),
])
def test_bad_values_are_refused_clearly(argv: list[str], needle: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        parse(*argv)
    assert err.value.code == 2
    assert needle in capsys.readouterr().err


def test_selectors_keep_their_order_and_normal_form() -> None:
    a = parse("trace", "-p", "012", "-n", "nginx", "-p", "13", "-u", "shop.service", "-c",
              "/system.slice/x", "-d", "10m", "--level", "payload", "--reason", "INC-1")
    assert a.targets == ["pid:12", "comm:nginx", "pid:13", "unit:shop.service",
                         "cgroup:/system.slice/x"]
    assert commands.trace_args(a) == {"targets": a.targets, "level": "payload",
                                      "frames": "batch", "duration": 600, "reason": "INC-1"}
    a = parse("trace", "-p", "12", "--export")  # asks for export; the daemon decides
    assert commands.trace_args(a) == {"targets": ["pid:12"], "level": "meta",
                                      "frames": "batch", "export": True}


def test_since_relative_and_iso() -> None:
    assert argtypes.since("15m", now=10_000.0) == 10_000.0 - 900
    assert argtypes.since("1h30m", now=10_000.0) == 10_000.0 - 5400
    local = dt.datetime(2026, 11, 29, 10, 0).timestamp()
    assert argtypes.since("2026-11-29T10:00", now=local + 1) == local
    assert argtypes.since("2026-11-29T10:00:00+00:00", now=2e9) == dt.datetime(
        2026, 11, 29, 10, 0, tzinfo=dt.timezone.utc).timestamp()


def test_query_args_carry_targets_since_limit() -> None:
    before = time.time()
    a = parse("http", "-u", "shop.service", "-c", "/a", "--since", "2h", "--limit", "20",
              "--reason", "INC-2")
    args = commands.query_args(a)
    assert args["targets"] == ["unit:shop.service", "cgroup:/a"]
    assert args["limit"] == 20 and args["reason"] == "INC-2" and "pid" not in args
    assert before - 7200 - 1 <= args["since"] <= time.time() - 7200
    a = parse("events", "-p", "7")
    assert commands.query_args(a) == {"targets": ["pid:7"], "limit": 100, "page": True}
    assert commands.query_args(parse("top")) == {"targets": [], "limit": 100}
    a = parse("events", "--kind", "exec", "--kind", "exit", "--syscall", "openat",
              "--errno", "ENOENT", "--until", "1m", "--before", "12.34")
    args = commands.query_args(a)
    assert (args["kind"], args["syscall"], args["errno"], args["before"]) == (
        ["exec", "exit"], ["openat"], ["ENOENT"], "12.34")
    assert time.time() - 61 <= args["until"] <= time.time() - 60
    assert commands.query_args(parse("errors", "--errno", "EACCES"))["errno"] == ["EACCES"]


@pytest.mark.parametrize(("argv", "needle"), [
    (["events", "--errno", "enoent"], "not an errno name"),
    (["events", "--syscall", "open at"], "not a syscall name"),
    (["events", "--before", "x"], "not a page cursor"),
    (["events", "--kind", "shell"], "invalid choice"),
])
def test_query_filters_are_checked_at_parse_time(argv: list[str], needle: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert needle in capsys.readouterr().err


# -- dispatch --------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [None, "", "audit", "grant", "audit frobnicate"])
def test_no_fall_through(command: str | None) -> None:
    a = argparse.Namespace(socket="/nonexistent", json=False)
    if command is not None:
        a.command = command
    with pytest.raises(ClientError, match="no such command"):
        commands.run(a)


def test_trace_needs_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["--socket", "/nonexistent/p.sock", "trace"]) == 2
    assert "trace needs a target" in capsys.readouterr().err


def test_missing_socket_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc = commands.main(["--socket", "/nonexistent/periscope.sock", "status"])
    assert rc == 2
    assert "is periscoped running?" in capsys.readouterr().err


# -- output ---------------------------------------------------------------------------------
def test_event_row_renders() -> None:
    ev = {"ts": 1.5, "kind": "syscall", "pid": 1, "comm": "x", "syscall": "connect", "fd": 3,
          "ret": -111, "errno": "ECONNREFUSED", "latency_us": 2.0, "family": "AF_INET",
          "peer": "127.0.0.1:1"}
    assert "peer=127.0.0.1:1" in render.detail(ev)


def _status(**over: Any) -> dict[str, Any]:
    now = time.time()
    s = {"uptime_s": 7384.2, "probes_attached": True, "probe_load_s": 1.25,
         "targets": [{"kind": "pid", "value": "181", "cookie": 1, "payload_cap": 256,
                      "sessions": 2}],
         "sessions": [{"id": "s1-abc", "user": "alice", "events": 1234, "deadline": now + 90}],
         "kernel": {"emitted": 5000, "drop_ringbuf": 0, "skipped_rate": 0},
         "tls_attach_failed": 0, "pipeline": {"events": 5000, "received": 5000, "backlog": 0},
         "router": {}, "server": {"connections": 9}, "stored_events": 4999,
         "audit_head": [42, "ab" * 32], "thread_cpu_s": {}}
    s.update(over)
    return s


def test_status_is_a_readable_summary(capsys: pytest.CaptureFixture[str]) -> None:
    render.status(_status())
    out = capsys.readouterr().out
    assert "up 2h3m4s" in out and "probes attached" in out and "4,999 events stored" in out
    assert "pid:181 (2 sessions, payload up to 256 B)" in out
    assert "s1-abc alice: 1,234 events, ends in 1m" in out
    assert "losses:     none counted" in out
    assert "audit:      42 records" in out
    assert "export:" not in out  # no exporter enabled
    assert "{" not in out, "a dict was dumped instead of summarised"


def test_status_shows_the_exporters(capsys: pytest.CaptureFixture[str]) -> None:
    render.status(_status(export={"to": ["otlp http://127.0.0.1:4318"], "backlog": {},
                                  "counters": {"export_sent": 1200, "export_dropped": 3,
                                               "export_failed": 2, "jsonlog_written": 5}}))
    out = capsys.readouterr().out
    assert "export:     to otlp http://127.0.0.1:4318; 1,205 sent, 3 dropped, 2 failed" in out


def test_status_names_every_loss(capsys: pytest.CaptureFixture[str]) -> None:
    render.status(_status(kernel={"drop_ringbuf": 12, "skipped_rate": 3000, "emitted": 9},
                          pipeline={"payload_shed": 4, "decode_short": 2, "events": 9},
                          router={"slow_reader_dropped": 1}, tls_attach_failed=1,
                          server={"connections": 3, "fault_denied": 2}))
    out = capsys.readouterr().out
    for text in ("12 " + render.LOSS_TEXT["drop_ringbuf"],
                 "3,000 " + render.LOSS_TEXT["skipped_rate"],
                 "4 " + render.LOSS_TEXT["payload_shed"],
                 "2 records not decodable (short)",
                 "1 " + render.LOSS_TEXT["slow_reader_dropped"],
                 "1 " + render.LOSS_TEXT["tls_attach_failed"],
                 "refused: 2 denied"):
        assert text in out, text
    assert "none counted" not in out and "emitted" not in out


def test_every_loss_the_daemon_reports_has_words() -> None:
    from collector.protocol import LOSSES

    for name, _where, _text in LOSSES:
        assert render.loss_text(name) != name, name


def test_tables_align_and_cut(capsys: pytest.CaptureFixture[str]) -> None:
    render.top([{"pid": 7, "comm": "nginx", "syscall": "read", "count": 1200, "errors": 3,
                 "bytes": 2048, "total_us": 1500.0, "p50_us": 1.2, "p99_us": 2500.0},
                {"pid": 12345, "comm": "x" * 80, "syscall": "write", "count": 1, "errors": 0,
                 "bytes": 10, "total_us": 2.0, "p50_us": 2.0, "p99_us": 2.0}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PID", "COMM", "SYSCALL", "COUNT", "ERRORS", "BYTES",
                                "P50(µs)", "P99(µs)", "TOTAL(ms)"]
    assert lines[1].split() == ["7", "nginx", "read", "1200", "3", "2.0", "KiB", "1.2",
                                "2.50ms", "1.500"]
    assert lines[0].index("SYSCALL") == lines[1].index("read") == lines[2].index("write")
    assert lines[0].index("TOTAL(ms)") + len("TOTAL(ms)") == len(lines[1]) == len(lines[2])
    assert "x" * 60 in lines[2] and "x" * 61 not in lines[2]  # cut at the column's width


# -- connection and L7 queries -----------------------------------------------------------
def test_record_filters_reach_the_wire_only_when_given() -> None:
    a = parse("http", "-p", "7", "--status", "5xx", "--slow", "200ms", "--errors", "--method",
              "GET", "--peer", "10.0.0.5", "--until", "2026-11-29T10:00", "--before", "99")
    args = commands.record_args(a)
    assert args == {"targets": ["pid:7"], "limit": 100, "status": "5xx", "slow": 200.0,
                    "errors": True, "method": "GET", "peer": "10.0.0.5", "before": 99,
                    "until": dt.datetime(2026, 11, 29, 10, 0).timestamp()}
    assert commands.record_args(parse("dns")) == {"targets": [], "limit": 100}


def test_conns_takes_no_request_filters(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--slow", "--status", "--method"):
        with pytest.raises(SystemExit):
            parse("conns", flag, "1")
        assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "ms"), [("200ms", 200.0), ("1.5s", 1500.0), ("300", 300.0),
                                          ("0", 0.0), (" 2S ", 2000.0)])
def test_slow_takes_milliseconds_or_seconds(text: str, ms: float) -> None:
    assert argtypes.millis(text) == ms


@pytest.mark.parametrize("text", ["fast", "-1ms", "nan", "1e12", "ms", ""])
def test_slow_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="bad duration"):
        argtypes.millis(text)


def test_until_allows_a_time_to_come_since_does_not() -> None:
    later = dt.datetime(2999, 1, 1).timestamp()
    assert argtypes.until("2999-01-01T00:00", now=1e9) == later
    assert argtypes.until("10m", now=10_000.0) == 9_400.0
    with pytest.raises(argparse.ArgumentTypeError, match="in the future"):
        argtypes.since("2999-01-01T00:00", now=1e9)


def test_a_full_page_says_how_to_get_the_next(capsys: pytest.CaptureFixture[str]) -> None:
    from collector.cli import records

    rows = [{"ts": time.time(), "kind": "l7", "pid": 9, "comm": "nginx", "proto": "http",
             "method": "GET", "path": "/a", "status": 503, "latency_ms": 12.25,
             "req_bytes": 80, "resp_bytes": 2048, "peer": "127.0.0.1:4", "partial": True}]
    records.show("http", {"rows": rows, "more": True, "before": 41}, as_json=False)
    out, err = capsys.readouterr()
    head, row = out.splitlines()
    assert head.split()[:4] == ["TIME", "PID", "COMM", "METHOD"]
    assert row.split()[1:7] == ["9", "nginx", "GET", "/a", "503", "12.2"] and "partial" in row
    assert "--before 41" in err
    records.show("http", {"rows": rows, "more": False, "before": None}, as_json=True)
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and '"status":503' in out and err == ""
    records.show("conns", {"rows": [], "more": False}, as_json=False)
    assert capsys.readouterr().out == "(no stored connections match)\n"


def test_live_rows_of_records_say_what_happened() -> None:
    conn = {"ts": 1.0, "kind": "conn", "pid": 1, "state": "closed", "role": "client",
            "peer": "10.0.0.5:5432", "proto": "pgsql", "bytes_in": 10, "bytes_out": 20,
            "duration_ms": 4.5, "errors": {"reset": 1}}
    assert render.detail(conn) == ("closed client -> 10.0.0.5:5432 pgsql in=10 out=20 4.5ms "
                                   "errors=reset")
    req = {"ts": 1.0, "kind": "l7", "pid": 1, "proto": "pgsql", "query": "SELECT ?",
           "status": "SELECT 1", "latency_ms": 1.25}
    assert render.detail(req) == "pgsql SELECT ? -> SELECT 1 1.2ms"
