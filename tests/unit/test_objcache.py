"""The compiled-probe cache: what goes in comes out, and anything it cannot vouch for (torn,
corrupt, another key, loose permissions, a forbidden helper, an unrelocated map load) is
refused, not loaded; a rebuild can say why (cold, or what changed since the last build)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from probes import objcache
from probes.objcache import CacheError, MapDef, ProbeObject, ProgDef

# A tiny program: r1 = map fd 7 (ld_imm64, two slots); call 1 (map_lookup_elem); r0 = 0; exit
MAP_FD = 7


def insn(op: int, regs: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return objcache.INSN.pack(op, regs, off, imm)


def program(helper: int = 1, fd: int = MAP_FD, src: int = objcache.PSEUDO_MAP_FD) -> bytes:
    return (insn(objcache.LD_IMM64, (src << 4) | 1, 0, fd) + insn(0) +
            insn(objcache.CALL, 0, 0, helper) + insn(0xB7, 0, 0, 0) + insn(0x95))


def build(code: bytes, names: dict[int, str] | None = None) -> ProbeObject:
    insns, relocs = objcache.relocate(code, names or {MAP_FD: "targets"})
    return ProbeObject("GPL", 0, (MapDef("targets", 1, 4, 16, 8192, 0),),
                       (ProgDef("tracepoint__syscalls__sys_enter_read", "tracepoint",
                                "syscalls:sys_enter_read", insns, relocs),))


def test_relocate_zeroes_the_fd_and_names_the_map() -> None:
    insns, relocs = objcache.relocate(program(), {MAP_FD: "targets"})
    assert relocs == ((0, "targets"),)
    assert struct.unpack_from("<i", insns, 4)[0] == 0  # no fd number of the compiling process
    assert insns[8:] == program()[8:]


@pytest.mark.parametrize("code,why", [
    (program(fd=99), "a map the compile did not create"),
    (program(src=2), "a map value load (global data) this cache does not carry"),
    (insn(objcache.CALL, 1 << 4, 0, 3) + insn(0x95), "a BPF-to-BPF call"),
])
def test_relocate_refuses_what_it_cannot_carry(code: bytes, why: str) -> None:
    with pytest.raises(CacheError):
        objcache.relocate(code, {MAP_FD: "targets"})


def test_round_trip(tmp_path: Path) -> None:
    obj = build(program())
    path = objcache.path_for(tmp_path / "c", "trace", "ab" * 32)
    objcache.write(path, obj, "ab" * 32)
    assert objcache.read(path, "ab" * 32) == obj
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700


def test_a_missing_file_is_no_cache(tmp_path: Path) -> None:
    assert objcache.read(tmp_path / "none.bpfobj", "k") is None


def test_a_new_build_replaces_the_old_one(tmp_path: Path) -> None:
    old = objcache.path_for(tmp_path, "trace", "aa" * 32)
    objcache.write(old, build(program()), "aa" * 32)
    other = objcache.path_for(tmp_path, "profile", "cc" * 32)
    objcache.write(other, build(program()), "cc" * 32)
    new = objcache.path_for(tmp_path, "trace", "bb" * 32)
    objcache.write(new, build(program()), "bb" * 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new.name, other.name])


def _written(tmp_path: Path, obj: ProbeObject | None = None) -> Path:
    path = objcache.path_for(tmp_path / "c", "trace", "ab" * 32)
    objcache.write(path, obj or build(program()), "ab" * 32)
    return path


def test_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    path = _written(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-40] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="checksum"):
        objcache.read(path, "ab" * 32)


def test_a_torn_file_is_refused(tmp_path: Path) -> None:
    path = _written(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CacheError):
        objcache.read(path, "ab" * 32)


def test_another_key_is_refused(tmp_path: Path) -> None:
    path = _written(tmp_path)
    with pytest.raises(CacheError, match="another key"):
        objcache.read(path, "cd" * 32)


def test_loose_permissions_are_refused(tmp_path: Path) -> None:
    path = _written(tmp_path)
    os.chmod(path, 0o644)
    with pytest.raises(CacheError, match="0600"):
        objcache.read(path, "ab" * 32)
    os.chmod(path, 0o600)
    os.chmod(path.parent, 0o777)
    with pytest.raises(CacheError, match="writable by others"):
        objcache.read(path, "ab" * 32)


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    path = _written(tmp_path)
    link = path.parent / "link.bpfobj"
    link.symlink_to(path)
    with pytest.raises(CacheError):
        objcache.read(link, "ab" * 32)


def _rehash(path: Path, edit: bytes, to: bytes) -> None:
    """Edit the body and fix the checksum: what a writer with our rights could do."""
    head, body = path.read_bytes().split(b"\n", 1)
    assert edit in body
    body = body.replace(edit, to)
    meta = json.loads(head)
    meta.update(sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    path.write_bytes(json.dumps(meta).encode() + b"\n" + body)


def test_a_forbidden_helper_is_refused_even_with_a_good_checksum(tmp_path: Path) -> None:
    for helper in objcache.FORBIDDEN_HELPERS:
        path = objcache.path_for(tmp_path / str(helper), "trace", "ab" * 32)
        # relocate() does not judge helpers; read() does, before the kernel sees anything
        objcache.write(path, build(program(helper=helper)), "ab" * 32)
        with pytest.raises(CacheError, match=objcache.FORBIDDEN_HELPERS[helper]):
            objcache.read(path, "ab" * 32)


def test_an_unrelocated_map_load_is_refused(tmp_path: Path) -> None:
    path = _written(tmp_path)
    _rehash(path, b'"relocs":[[0,"targets"]]', b'"relocs":[]')
    with pytest.raises(CacheError, match="unrelocated"):
        objcache.read(path, "ab" * 32)


def test_a_relocation_to_an_unknown_map_is_refused(tmp_path: Path) -> None:
    path = _written(tmp_path)
    _rehash(path, b'"relocs":[[0,"targets"]]', b'"relocs":[[0,"nosuchmap"]]')
    with pytest.raises(CacheError, match="relocations"):
        objcache.read(path, "ab" * 32)


def test_the_key_follows_sources_flags_and_headers(tmp_path: Path) -> None:
    src, hdr = tmp_path / "t.bpf.c", tmp_path / "common.h"
    src.write_text("int x;")
    hdr.write_text("#define A 1")
    base = objcache.key("trace", [src], [hdr], ["-DMAX_DATA=256"])
    assert base == objcache.key("trace", [src], [hdr], ["-DMAX_DATA=256"])
    assert base != objcache.key("trace", [src], [hdr], ["-DMAX_DATA=512"])
    assert base != objcache.key("profile", [src], [hdr], ["-DMAX_DATA=256"])
    hdr.write_text("#define A 2")
    assert base != objcache.key("trace", [src], [hdr], ["-DMAX_DATA=256"])


def _facts(tmp_path: Path, **changed: str) -> dict[str, str]:
    src = tmp_path / "t.bpf.c"
    src.write_text("int x;")
    return {**objcache.build("trace", [src], [], ["-DMAX_DATA=256"]), **changed}


def test_the_header_names_what_the_key_covers(tmp_path: Path) -> None:
    facts = _facts(tmp_path)
    assert objcache.key_of(facts) == objcache.key("trace", [tmp_path / "t.bpf.c"], [],
                                                  ["-DMAX_DATA=256"])
    assert facts["kernel"] == os.uname().release and facts["cflags"] == "-DMAX_DATA=256"
    path = objcache.path_for(tmp_path / "c", "trace", objcache.key_of(facts))
    objcache.write(path, build(program()), objcache.key_of(facts), facts)
    assert json.loads(path.read_bytes().split(b"\n", 1)[0])["build"] == facts
    assert objcache.read(path, objcache.key_of(facts)) == build(program())


def test_why_compile_a_cold_cache(tmp_path: Path) -> None:
    other = objcache.path_for(tmp_path, "profile", "cc" * 32)  # another probe's file
    objcache.write(other, build(program()), "cc" * 32)
    assert objcache.why_compile(tmp_path, "trace", _facts(tmp_path)).startswith("cold cache")


def test_why_compile_names_what_changed(tmp_path: Path) -> None:
    """A kernel and bcc upgrade: both named with their versions, the rest unchanged."""
    old = _facts(tmp_path, kernel="6.1.0-25-amd64", bcc="0.25.0")
    objcache.write(objcache.path_for(tmp_path, "trace", objcache.key_of(old)),
                   build(program()), objcache.key_of(old), old)
    why = objcache.why_compile(tmp_path, "trace", _facts(tmp_path))
    assert why == (f"key changed: kernel 6.1.0-25-amd64 -> {os.uname().release}, "
                   f"bcc 0.25.0 -> {objcache.bcc_version()} since the last compile")
    old = _facts(tmp_path, cflags="-DMAX_DATA=512", sources="0" * 64)
    objcache.write(objcache.path_for(tmp_path, "trace", objcache.key_of(old)),
                   build(program()), objcache.key_of(old), old)
    assert objcache.why_compile(tmp_path, "trace", _facts(tmp_path)) == \
        "key changed: capture config (cflags), probe sources since the last compile"


@pytest.mark.parametrize("head", [b'{"format": 1, "key": "aa"}', b"not json", b"[1]"])
def test_why_compile_without_a_readable_build(tmp_path: Path, head: bytes) -> None:
    """A file from before the header named its build, or garbage: still "key changed"."""
    (tmp_path / f"trace-{'aa' * 16}{objcache.SUFFIX}").write_bytes(head + b"\n{}")
    why = objcache.why_compile(tmp_path, "trace", _facts(tmp_path))
    assert why.startswith("key changed: trace-") and "another build" in why
