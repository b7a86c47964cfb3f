"""`periscoped --warm-cache` (collector.daemon.probecache): its flag, the probe options it
shares with the daemon (else it would warm a key the daemon never looks up), and its exit
codes when the cache is warm already, gets warm, or cannot be warmed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from collector import config
from collector.daemon import logs, probecache
from collector.daemon.main import build, main, parse_args
from probes import trace
from probes.loader import ProbeError


def cfg_for(tmp: Path, text: str = "") -> config.Config:
    return config.with_paths(config.load(text=text), state_dir=str(tmp / "state"),
                             socket=str(tmp / "s.sock"), policy=str(tmp / "policy.toml"))


def test_the_flag() -> None:
    assert parse_args(["--warm-cache"]).warm_cache
    assert not parse_args([]).warm_cache


def test_warm_cache_and_check_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--check", "--warm-cache"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("text,size", [("", 1024), ("[capture]\nl7 = false\n", 256),
                                       ("[capture]\nmax_payload_bytes = 4096\n", 4096)])
def test_trace_options_follow_the_config(tmp_path: Path, text: str, size: int) -> None:
    opts = probecache.trace_options(cfg_for(tmp_path, text))
    assert opts.max_payload == size and opts.ringbuf_pages == 1024
    assert opts.cache_dir == tmp_path / "state" / "probe-cache"


def test_the_daemon_loads_with_the_options_the_warm_up_compiles_with(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, '[metrics]\nlisten = ""\n[capture]\nl7_payload_bytes = 2048\n')
    svc, _pipeline = build(cfg, procfs=str(tmp_path))
    try:
        probe = svc.tracer._factory()  # unloaded: its options are all it has
        assert isinstance(probe, trace.TraceProbe)
        assert probe.options == probecache.trace_options(cfg)
    finally:
        svc.store.close()
        if svc.l7store is not None:
            svc.l7store.close()
        svc.gate.audit.close()


class FakeProbe:
    """TraceProbe without the kernel: prepare() fails with `error`, or "writes" the cache."""

    error: Exception | None = None
    made: list[FakeProbe] = []

    def __init__(self, options: trace.ProbeOptions, sink: object) -> None:
        self.options, self.prepared, self.closed = options, False, False
        FakeProbe.made.append(self)

    def prepare(self) -> None:
        if self.error is not None:
            raise self.error
        self.prepared = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeProbe]:
    FakeProbe.made, FakeProbe.error = [], None
    monkeypatch.setattr(trace, "TraceProbe", FakeProbe)
    # The cache holds the build once a probe was prepared (what load_probe leaves).
    monkeypatch.setattr(trace, "cached_file", lambda o: o.cache_dir / "trace-k.bpfobj"
                        if any(p.prepared for p in FakeProbe.made) else None)
    return FakeProbe


def test_warm_compiles_once_and_releases(tmp_path: Path, fake: type[FakeProbe],
                                         caplog: pytest.LogCaptureFixture) -> None:
    cfg = cfg_for(tmp_path)
    with caplog.at_level(logging.INFO):
        assert probecache.warm(cfg) == 0
        assert probecache.warm(cfg) == 0  # already warm: no second compile
    assert len(fake.made) == 1 and fake.made[0].closed
    assert fake.made[0].options == probecache.trace_options(cfg)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert "probe cache warm in" in caplog.text and "already warm" in caplog.text


@pytest.mark.parametrize("error", [ProbeError("loading trace.bpf.c failed: no headers"),
                                   OSError(1, "Operation not permitted")])
def test_a_failed_compile_is_exit_1_with_one_line(tmp_path: Path, fake: type[FakeProbe],
                                                  caplog: pytest.LogCaptureFixture,
                                                  error: Exception) -> None:
    fake.error = error
    assert probecache.warm(cfg_for(tmp_path)) == 1
    assert fake.made[0].closed
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "compile at its first start" in errors[0].getMessage()


def test_a_compile_that_left_no_cache_is_exit_1(tmp_path: Path, fake: type[FakeProbe],
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(trace, "cached_file", lambda o: None)  # e.g. the file was not written
    assert probecache.warm(cfg_for(tmp_path)) == 1
    assert "not warmed" in caplog.text


def test_a_bad_config_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "setup", lambda verbose=False: None)  # keep pytest's handlers
    bad = tmp_path / "p.toml"
    bad.write_text("[capture]\nmax_payload_bytes = 'lots'\n")
    assert main(["--warm-cache", "--config", str(bad), "--state-dir", str(tmp_path)]) == 2
