"""`python -m redact` streams stdin to stdout with the same engine."""

from __future__ import annotations

import subprocess
import sys


def test_cli_redacts_stdin() -> None:
    data = b"GET /?token=Zq9hunter2Xv HTTP/1.1\r\nHost: a\r\n\r\n"
    proc = subprocess.run(
        [sys.executable, "-m", "redact", "--protocol", "http"],
        input=data, capture_output=True, check=True, timeout=60,
    )
    assert proc.stdout == b"GET /?token=[REDACTED:secret] HTTP/1.1\r\nHost: a\r\n\r\n"


def test_cli_bad_rules_file_exits_2(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "redact", "--rules", "/nonexistent/rules.toml"],
        input=b"", capture_output=True, timeout=60,
    )
    assert proc.returncode == 2 and b"redact:" in proc.stderr
