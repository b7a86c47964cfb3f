"""Fixtures for snapshot unit tests: the fake procfs (tests/data/proc), copied when a test
needs to change it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from redact import Redactor
from tests.unit.snapshot.fakeproc import PROC


@pytest.fixture(scope="session")
def redactor() -> Redactor:
    return Redactor.default()


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    """A private copy of tests/data/proc (symlinks kept as links)."""
    dst = tmp_path / "proc"
    shutil.copytree(PROC, dst, symlinks=True)
    return dst
