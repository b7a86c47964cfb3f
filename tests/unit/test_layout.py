"""Decode golden files (real captured records) and malformed input."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from probes.layout import HDR, SYS, SYS_HDR_SIZE, DecodeError, ExecRecord, Op, decode
from tests.unit.golden import load, to_jsonable

GOLDEN = sorted((Path(__file__).parents[1] / "data" / "golden").glob("*.golden"))


def test_golden_files_exist() -> None:
    assert {p.stem for p in GOLDEN} >= {"openat", "write_payload", "connect_inet", "exec_argv",
                                        "exit"}


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    raw, expect = load(path.read_text())
    assert to_jsonable(decode(raw)) == expect


def test_golden_values_by_hand() -> None:
    raw, _ = load((GOLDEN[0].parent / "exec_argv.golden").read_text())
    rec = decode(raw)
    assert isinstance(rec, ExecRecord)
    assert rec.filename == b"/bin/true"
    assert rec.argv == (b"true", b"--golden", b"arg two")


def _hdr(op: int, version: int = 1) -> bytes:
    return HDR.pack(op, version, 0, 1, 2, 3, 4)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "short"),
    (b"\x01" * 10, "short"),
    (_hdr(99), "unknown_op"),
    (_hdr(Op.SYSCALL, version=7), "version"),
    (_hdr(Op.SYSCALL), "short"),
    (_hdr(Op.SYSCALL) + SYS.pack(1, 0, 3, 5, 0, 5, 200, 0), "short"),  # data_len beyond buffer
    (_hdr(Op.SYSCALL) + SYS.pack(999, 0, 3, 5, 0, 5, 0, 0), "unknown_syscall"),
])
def test_malformed_records_raise_decode_error(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(raw)
    assert err.value.reason == reason


def test_header_sizes_match_c() -> None:
    assert HDR.size == 24
    assert SYS_HDR_SIZE == 64
    assert struct.calcsize("<HHiqQQII") == 40
