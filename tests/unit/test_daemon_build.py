"""The daemon's wiring (collector.daemon.main.build): the store's sink (events and L7
records), export sinks after redaction, the per-target metrics sink only when /metrics is
served, and an exporter that cannot start stopping the daemon with exit 2 and one clear
line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from collector import config
from collector.daemon.main import build
from collector.serve.services import Services
from collector.store.split import SplitSink

REPO = Path(__file__).resolve().parents[2]


def cfg_for(tmp: Path, text: str) -> config.Config:
    cfg = config.load(text=text)
    return config.with_paths(cfg, state_dir=str(tmp / "state"), socket=str(tmp / "s.sock"),
                             policy=str(tmp / "policy.toml"))


def _stores(sink: object, svc: Services) -> bool:
    """The first sink is the store's: events to the blocks, conn and l7 records to theirs."""
    return isinstance(sink, SplitSink) and sink.events is svc.store and sink.l7 is svc.l7store


def close_stores(svc: Services) -> None:
    svc.store.close()
    if svc.l7store is not None:
        svc.l7store.close()


def test_defaults_export_nothing(tmp_path: Path) -> None:
    svc, pipeline = build(cfg_for(tmp_path, ""), procfs=str(tmp_path))
    try:
        assert svc.exporters is None and svc.gate.export_to == ()
        assert svc.red is not None  # metrics.listen is on by default
        assert _stores(pipeline.sinks[0], svc)
        assert pipeline.sinks[1:] == [svc.router, svc.red]
        assert pipeline.observers == [svc.stage] and svc.store.tenants == [svc.l7store]
    finally:
        close_stores(svc)
        svc.gate.audit.close()


def test_exporters_are_sinks_after_the_store_and_sessions(tmp_path: Path) -> None:
    text = (f'[metrics]\nlisten = ""\n[export.jsonlog]\npath = "{tmp_path}/e.jsonl"\n'
            '[export.otlp]\nenabled = true\nendpoint = "http://127.0.0.1:9"\n')
    svc, pipeline = build(cfg_for(tmp_path, text), procfs=str(tmp_path))
    try:
        assert svc.red is None  # no /metrics: no per-event metrics work
        assert svc.exporters is not None
        assert _stores(pipeline.sinks[0], svc)
        assert pipeline.sinks[1:] == [svc.router, svc.exporters]
        assert svc.gate.export_to == ("otlp http://127.0.0.1:9", f"jsonlog {tmp_path}/e.jsonl")
        assert svc.exporters.otlp is not None and svc.exporters.jsonlog is not None
    finally:
        if svc.exporters is not None:
            svc.exporters.close(0.5)
        close_stores(svc)
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
