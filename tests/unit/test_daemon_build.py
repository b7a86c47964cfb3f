"""The daemon's wiring (collector.daemon.main.build): export sinks after redaction, the
per-target metrics sink only when /metrics is served, and an exporter that cannot start
stopping the daemon with exit 2 and one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from collector import config
from collector.daemon.main import build

REPO = Path(__file__).resolve().parents[2]


def cfg_for(tmp: Path, text: str) -> config.Config:
    cfg = config.load(text=text)
    return config.with_paths(cfg, state_dir=str(tmp / "state"), socket=str(tmp / "s.sock"),
                             policy=str(tmp / "policy.toml"))


def test_defaults_export_nothing(tmp_path: Path) -> None:
    svc, pipeline = build(cfg_for(tmp_path, ""), procfs=str(tmp_path))
    try:
        assert svc.exporters is None and svc.gate.export_to == ()
        assert svc.red is not None  # metrics.listen is on by default
        assert pipeline.sinks == [svc.store, svc.router, svc.red]
    finally:
        svc.store.close()
        svc.gate.audit.close()


def test_exporters_are_sinks_after_the_store_and_sessions(tmp_path: Path) -> None:
    text = (f'[metrics]\nlisten = ""\n[export.jsonlog]\npath = "{tmp_path}/e.jsonl"\n'
            '[export.otlp]\nenabled = true\nendpoint = "http://127.0.0.1:9"\n')
    svc, pipeline = build(cfg_for(tmp_path, text), procfs=str(tmp_path))
    try:
        assert svc.red is None  # no /metrics: no per-event metrics work
        assert svc.exporters is not None
        assert pipeline.sinks == [svc.store, svc.router, svc.exporters]
        assert svc.gate.export_to == ("otlp http://127.0.0.1:9", f"jsonlog {tmp_path}/e.jsonl")
        assert svc.exporters.otlp is not None and svc.exporters.jsonlog is not None
    finally:
        if svc.exporters is not None:
            svc.exporters.close(0.5)
        svc.store.close()
        svc.gate.audit.close()


def test_an_exporter_that_cannot_start_is_exit_2_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[metrics]\nlisten = ""\n[export.jsonlog]\npath = "{tmp_path}/no/e.jsonl"\n')
    r = subprocess.run([sys.executable, "-m", "collector.daemon", "--config", str(cfg),
                        "--state-dir", str(tmp_path / "state"), "--socket",
                        str(tmp_path / "s.sock"), "--policy", str(tmp_path / "policy.toml")],
                       capture_output=True, text=True, timeout=60, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "ERROR" in ln or "error" in ln.lower()]
    assert len(errors) == 1 and "export.jsonlog.path" in errors[0] and "cannot open" in errors[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "state" / "audit.log").exists()  # stopped before opening anything
