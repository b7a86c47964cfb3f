"""Read-only promise, source side: no BPF helper that writes to or signals a task, and no
Python path that signals or ptraces one (the demo stopping its own daemon is the exception)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
FORBIDDEN_BPF = ("bpf_probe_write_user", "bpf_override_return", "bpf_send_signal")
FORBIDDEN_PY = re.compile(r"os\.kill\(|killpg\(|pidfd_send_signal|ptrace|\.send_signal\(")


def test_bpf_sources_use_no_writing_or_signalling_helper() -> None:
    sources = sorted((ROOT / "probes").glob("*.bpf.c")) + sorted((ROOT / "probes").glob("*.h"))
    assert sources
    for src in sources:
        text = src.read_text()
        for helper in FORBIDDEN_BPF:
            assert helper not in text, f"{src.name} uses {helper}"


def test_daemon_code_never_signals_or_ptraces() -> None:
    for pkg in ("collector", "probes", "redact"):
        for py in (ROOT / pkg).rglob("*.py"):
            if py.name == "demo.py":
                continue  # stops the daemon it started itself, never a traced process
            for n, line in enumerate(py.read_text().splitlines(), 1):
                assert not FORBIDDEN_PY.search(line), f"{py.relative_to(ROOT)}:{n}: {line.strip()}"
