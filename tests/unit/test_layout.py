"""Decode golden files (real captured records) and malformed input."""

from __future__ import annotations

import ast
import re
import struct
from pathlib import Path

import pytest

from probes.layout import (
    C_LAYOUT,
    HDR,
    LAYOUT_VERSION,
    SYS,
    SYS_HDR_SIZE,
    SYS_HOT,
    SYS_HOT_FIELDS,
    SYS_REC,
    SYS_REC_FIELDS,
    DecodeError,
    ExecRecord,
    Op,
    decode,
    kernel_cgroup_id,
    kernel_comm,
)
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


def _hdr(op: int, version: int = LAYOUT_VERSION) -> bytes:
    return HDR.pack(op, version, 0, 1, 2, 3, 4, 5, b"comm")


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


def _offsets(fmt: str) -> list[tuple[int, int]]:
    """(offset, size) of each field of a little-endian struct format, as struct lays it out."""
    out, at = [], 0
    for code in re.findall(r"\d*[A-Za-z?]", fmt.lstrip("<")):
        size = struct.calcsize("<" + code)
        out.append((at, size))
        at += size
    return out


def test_struct_formats_match_the_c_layout() -> None:
    """HDR and SYS (what decode and the hot path unpack) put every field at the offset and
    size C_LAYOUT records for the C structs (the root tier checks C_LAYOUT against bcc)."""
    hdr = C_LAYOUT["event_hdr"]
    sys_ = {k: v for k, v in C_LAYOUT["sys_event"].items() if k not in ("hdr", "data")}
    assert _offsets(HDR.format) == sorted(hdr.values())
    assert [(off + HDR.size, size) for off, size in _offsets(SYS.format)] == sorted(sys_.values())
    assert HDR.size == C_LAYOUT["sys_event"]["hdr"][1]
    assert C_LAYOUT["sys_event"]["data"][0] == SYS_HDR_SIZE


def test_the_hot_view_names_each_field_of_a_record() -> None:
    """SYS_REC and SYS_HOT read, by name, the values written at the C offsets."""
    values: dict[str, int | bytes] = {
        "op": 1, "version": 1, "size": 99, "cookie": 7, "ktime": 123456789, "tgid": 4242,
        "tid": 4243, "cgroup_id": 0x1234, "comm": b"nginx: worker\0\0\0", "nr": 2, "flags": 6,
        "fd": -3, "ret": -11, "latency_ns": 1500, "arg": 0x7F00AA00, "data_len": 0, "aux": 1}
    raw = bytearray(SYS_HDR_SIZE)
    for struct_name in ("event_hdr", "sys_event"):
        for name, (off, size) in C_LAYOUT[struct_name].items():
            v = values.get(name)
            if isinstance(v, bytes):
                raw[off:off + size] = v
            elif v is not None:
                raw[off:off + size] = v.to_bytes(size, "little", signed=True)
    assert dict(zip(SYS_REC_FIELDS, SYS_REC.unpack_from(raw), strict=True)) == values
    hot = dict(zip(SYS_HOT_FIELDS, SYS_HOT.unpack_from(raw), strict=True))
    assert hot == {k: values[k] for k in SYS_HOT_FIELDS}


def test_the_pipeline_unpacks_the_hot_view_by_its_names() -> None:
    """The I/O fast path (capture/iobuild.py) assigns SYS_HOT's values to variables named as in
    layout.SYS_HOT_FIELDS, in that order: a new field or a reorder fails here, not in a
    golden file."""
    source = (Path(__file__).parents[2] / "collector/capture/iobuild.py").read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "unpack" \
                and isinstance(node.targets[0], ast.Tuple):
            found.append(tuple(t.id for t in node.targets[0].elts if isinstance(t, ast.Name)))
    assert found == [SYS_HOT_FIELDS]


def test_the_kernel_names_of_a_record() -> None:
    """kernel_comm and kernel_cgroup_id read the header's comm and cgroup id (what names a
    process that exited before /proc could be read)."""
    raw = HDR.pack(Op.EXIT, LAYOUT_VERSION, HDR.size + 8, 1, 2, 3, 3, 0xABCDEF, b"short-lived") \
        + bytes(8)
    assert kernel_comm(raw) == "short-lived"
    assert kernel_cgroup_id(raw) == 0xABCDEF
    full = HDR.pack(Op.EXIT, LAYOUT_VERSION, HDR.size + 8, 1, 2, 3, 3, 0, b"\xffsixteen-bytes!!")
    assert kernel_comm(full) == "\ufffdsixteen-bytes!!"  # 16 bytes, no NUL; not UTF-8
    rec = decode(raw)
    assert rec.hdr.comm == b"short-lived" and rec.hdr.cgroup_id == 0xABCDEF
