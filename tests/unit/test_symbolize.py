"""Symbolization without root: ELF tables (synthetic and gcc-built), debug files,
MiniDebugInfo, perf maps, kallsyms, /proc/PID/maps, and hostile files."""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from probes import elftab
from probes.elfsym import ElfError
from probes.elftab import BytesSource, FdSource, mini_debuginfo, parse
from probes.symbolize import KERNEL, UNKNOWN, Symbolizer, parse_kallsyms, parse_maps, parse_perf_map
from tests.unit.elfbuild import Elf

FUNCS = [("main", 0x1100, 0x40), ("hot_function", 0x1200, 0x80), ("tail", 0x1300, 0)]


def table(elf: Elf) -> elftab.FuncTable:
    return parse(BytesSource(elf.build())).table


def test_lookup_respects_symbol_sizes() -> None:
    t = table(Elf(FUNCS))
    assert t.lookup(0x1200) == "hot_function"
    assert t.lookup(0x127F) == "hot_function"
    # past hot_function's end: a function without a symbol, not hot_function
    assert t.lookup(0x1280) is None
    assert t.lookup(0x10FF) is None
    assert t.lookup(0x1350) == "tail"  # size 0: covers up to the next symbol


def test_aliases_prefer_global_then_shortest() -> None:
    t = table(Elf([("__libc_malloc", 0x2000, 16), ("malloc", 0x2000, 16),
                   ("local_alias", 0x2000, 16)], local={"local_alias"}))
    assert t.lookup(0x2004) == "malloc"


def test_build_id_debuglink_and_dynsym_only() -> None:
    img = parse(BytesSource(Elf(FUNCS, symtab=False, build_id=b"\xab\xcd\x01",
                                debuglink=("x.debug", 0x1234)).build()))
    assert not img.has_symtab and img.table.lookup(0x1210) == "hot_function"
    assert img.build_id == b"\xab\xcd\x01"
    assert (img.debuglink, img.debuglink_crc) == ("x.debug", 0x1234)


def test_mini_debuginfo_is_decompressed_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    inner = Elf([("static_helper", 0x1400, 0x20)]).build()
    img = parse(BytesSource(Elf(FUNCS[:1], symtab=False,
                                debugdata=lzma.compress(inner)).build()))
    assert mini_debuginfo(img).lookup(0x1410) == "static_helper"
    bomb = parse(BytesSource(Elf(FUNCS[:1], debugdata=lzma.compress(bytes(1 << 20))).build()))
    monkeypatch.setattr(elftab, "MAX_DEBUGDATA", 4096)
    with pytest.raises(ElfError, match="decompresses past"):
        mini_debuginfo(bomb)
    junk = parse(BytesSource(Elf(FUNCS[:1], debugdata=b"not xz at all").build()))
    with pytest.raises(ElfError):
        mini_debuginfo(junk)


@pytest.mark.parametrize("mutate", [
    lambda b: b[:40],                                          # truncated header
    lambda b: b[:-200],                                        # section headers cut off
    lambda b: b"\x7fELF\x01" + b[5:],                          # 32-bit
    lambda b: b[:0x28] + (2**62).to_bytes(8, "little") + b[0x30:],  # shoff far past the end
    lambda b: b[:0x3C] + (0xFFFF).to_bytes(2, "little") + b[0x3E:],  # 65535 sections
])
def test_hostile_files_raise_elf_error(mutate: object) -> None:
    data = Elf(FUNCS).build()
    with pytest.raises(ElfError):
        parse(BytesSource(mutate(data)))  # type: ignore[operator]


def test_read_budget_bounds_repeated_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elftab, "MAX_READ", 256)
    with pytest.raises(ElfError, match="bytes of tables"):
        parse(BytesSource(Elf([(f"f{i}", 0x1000 + 16 * i, 16) for i in range(64)]).build()))


def test_perf_map_parse() -> None:
    t = parse_perf_map("7f0000001000 40 py::hot:/app/x.py\n"
                       "garbage line\n"
                       "0x7f0000002000 10 jit stub\n"
                       "7f0000001000 40 py::hot_v2:/app/x.py\n")  # later wins
    assert t.lookup(0x7F0000001010) == "py::hot_v2:/app/x.py"
    assert t.lookup(0x7F0000002008) == "jit stub"
    assert t.lookup(0x7F0000002010) is None


def test_kallsyms_and_hidden_addresses() -> None:
    t, hidden = parse_kallsyms("ffffffff81000000 T _stext\nffffffff81000100 t do_thing\n"
                               "ffffffff82000000 D some_data\n")
    assert not hidden and t.lookup(0xFFFFFFFF81000110) == "do_thing"
    t, hidden = parse_kallsyms("0000000000000000 T _stext\n0000000000000000 t do_thing\n")
    assert hidden and len(t) == 0


def test_parse_maps_keeps_executable_mappings() -> None:
    maps = parse_maps(
        "55d0c0000000-55d0c0001000 r--p 00000000 08:01 1234 /usr/bin/app\n"
        "55d0c0001000-55d0c0002000 r-xp 00001000 08:01 1234 /usr/bin/app\n"
        "7f0000000000-7f0000010000 rwxp 00000000 00:00 0 \n"
        "7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]\n"
        "7fe000000000-7fe000001000 r-xp 00000000 08:01 99 /tmp/lib with space.so (deleted)\n")
    assert [(m.start, m.path) for m in maps] == [
        (0x55D0C0001000, "/usr/bin/app"), (0x7F0000000000, ""),
        (0x7FE000000000, "/tmp/lib with space.so (deleted)"), (0x7FFD00000000, "[vdso]")]


def fake_proc(tmp: Path, pid: int, files: dict[str, bytes], maps: list[tuple[int, int, int, str]],
              uid: int = 1000, perf_map: str | None = None, perf_uid: int | None = None) -> str:
    """A procfs with pid's maps/status and a root holding files; maps: start, end, off, path."""
    procfs = tmp / "proc"
    root = procfs / str(pid) / "root"
    for path, data in files.items():
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    lines = []
    for start, end, off, path in maps:
        ino = (root / path.lstrip("/")).stat().st_ino if path.startswith("/") else 0
        lines.append(f"{start:x}-{end:x} r-xp {off:08x} 08:01 {ino} {path}")
    (procfs / str(pid) / "maps").write_text("\n".join(lines) + "\n")
    (procfs / str(pid) / "status").write_text(f"Name:\tapp\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
                                              f"NSpid:\t{pid}\t7\n")
    if perf_map is not None:
        pm = root / "tmp" / "perf-7.map"
        pm.parent.mkdir(parents=True, exist_ok=True)
        pm.write_text(perf_map)
        os.chown(pm, perf_uid if perf_uid is not None else uid, -1)
    (procfs / "modules").write_text("")
    return str(procfs)


def test_symbolizer_pie_offsets_debuglink_and_fallbacks(tmp_path: Path) -> None:
    # A PIE: code at file offset 0x1000 is vaddr 0x1000; mapped at 0x5000_0000 + 0x1000.
    stripped = Elf(FUNCS[:1], symtab=False, loads=[(0, 0x3000, 0)],
                   debuglink=("app.debug", 0)).build()
    debug = Elf(FUNCS, loads=[(0, 0x3000, 0)]).build()
    # The debuglink CRC is over the debug file: fix it up now that we know its bytes.
    stripped = Elf(FUNCS[:1], symtab=False, loads=[(0, 0x3000, 0)],
                   debuglink=("app.debug", zlib.crc32(debug))).build()
    procfs = fake_proc(tmp_path, 42, {"/usr/bin/app": stripped,
                                      "/usr/lib/debug/usr/bin/app.debug": debug},
                       [(0x50001000, 0x50003000, 0x1000, "/usr/bin/app"),
                        (0x7F0000000000, 0x7F0000010000, 0, "")],
                       perf_map="7f0000000100 80 jitted_fn\n")
    sym = Symbolizer(procfs=procfs, kallsyms=str(tmp_path / "nokallsyms"))
    frame = sym.user_frames(42)
    assert frame(0x50001210, True) == ("hot_function", True)
    assert frame(0x50001104, True) == ("main", True)
    # a return address just past main's end is a call from main's last bytes
    assert frame(0x50001140, False) == ("main", True)
    assert frame(0x50001290, True) == ("[app+0x1290]", False)  # no symbol covers it
    assert frame(0x7F0000000120, True) == ("jitted_fn", True)  # perf map, anonymous memory
    assert frame(0x7F0000000400, True) == (UNKNOWN, False)
    assert frame(0x10, True) == (UNKNOWN, False)
    assert sym.stats.debug_files == 1 and sym.stats.perf_maps == 1
    assert sym.kernel_frame(0xFFFFFFFF81000000) == (KERNEL, False)


def test_symbolizer_refuses_foreign_perf_map_and_swapped_file(tmp_path: Path) -> None:
    procfs = fake_proc(tmp_path, 43, {"/usr/bin/app": Elf(FUNCS).build()},
                       [(0x400000, 0x402000, 0, "/usr/bin/app"),
                        (0x7F0000000000, 0x7F0000010000, 0, "")],
                       uid=1000, perf_map="7f0000000100 80 planted\n", perf_uid=1001)
    # The file at the mapped path was replaced after the process mapped it.
    app = Path(procfs, "43", "root", "usr", "bin", "app")
    new = app.with_name("app.new")
    new.write_bytes(Elf([("impostor", 0x1200, 0x80)]).build())
    new.rename(app)
    sym = Symbolizer(procfs=procfs)
    frame = sym.user_frames(43)
    assert frame(0x7F0000000120, True) == (UNKNOWN, False)
    assert sym.stats.perf_map_errors == 1
    assert frame(0x401210, True) == ("[app+0x1210]", False)
    assert sym.stats.file_errors == 1 and "another file" in sym.stats.errors["app"]


def test_symbolizer_survives_garbage_and_caches_by_inode(tmp_path: Path) -> None:
    procfs = fake_proc(tmp_path, 44, {"/lib/libbad.so": b"\x7fELF" + os.urandom(4000)},
                       [(0x400000, 0x401000, 0, "/lib/libbad.so")])
    sym = Symbolizer(procfs=procfs)
    for _ in range(3):
        assert sym.user_frames(44)(0x400010, True) == ("[libbad.so+0x10]", False)
    assert sym.stats.file_errors == 1  # parsed (and failed) once, then cached


def test_exited_process_has_only_unknown_frames(tmp_path: Path) -> None:
    sym = Symbolizer(procfs=str(tmp_path))
    assert sym.user_frames(999999)(0x401000, True) == (UNKNOWN, False)


def test_a_warm_reading_names_frames_after_the_process_exits(tmp_path: Path) -> None:
    procfs = fake_proc(tmp_path, 45, {"/usr/bin/app": Elf(FUNCS).build()},
                       [(0x400000, 0x402000, 0, "/usr/bin/app")])
    sym = Symbolizer(procfs=procfs)
    reading = sym.process(45)
    reading.warm()
    assert sym.stats.files == 1
    shutil.rmtree(Path(procfs, "45"))  # the process exits: /proc/45/root is gone
    assert reading.frame(0x401210, True) == ("hot_function", True)
    assert sym.user_frames(45)(0x401210, True) == (UNKNOWN, False)  # a fresh reading: none
    assert sym.stats.file_errors == 0


def test_profile_namer_falls_back_to_the_kept_reading_only_once_exited(tmp_path: Path) -> None:
    from collector.profile import _Namer

    procfs = fake_proc(tmp_path, 46, {"/usr/bin/app": Elf(FUNCS).build()},
                       [(0x400000, 0x402000, 0, "/usr/bin/app")])
    sym = Symbolizer(procfs=procfs)
    kept = sym.process(46)
    kept.warm()
    # Alive: the current maps are read (a library mapped since the start is found there).
    maps = Path(procfs, "46", "maps")
    maps.write_text(maps.read_text().replace("400000-402000", "500000-502000"))
    namer = _Namer(sym, {46: kept})
    assert namer.user_frames(46)(0x501210, True) == ("hot_function", True)
    maps.unlink()  # exited: no maps left, the kept reading answers
    assert namer.user_frames(46)(0x401210, True) == ("hot_function", True)


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("objcopy") and shutil.which("xz")),
                    reason="needs gcc, objcopy and xz")
def test_real_pie_stripped_with_mini_debuginfo(tmp_path: Path) -> None:
    """gcc's PIE, stripped, with a MiniDebugInfo section made the way distributions do."""
    src = tmp_path / "t.c"
    src.write_text("static int __attribute__((noinline)) secret_static(int x) { return x * 3; }\n"
                   "int exported_fn(int x) { return secret_static(x) + 1; }\n"
                   "int main(int c, char **v) { return exported_fn(c); }\n")
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-O1", "-pie", "-fPIE", "-o", exe, src], check=True)
    nm = subprocess.run(["nm", exe], capture_output=True, text=True, check=True).stdout
    addr = {ln.split()[2]: int(ln.split()[0], 16) for ln in nm.splitlines()
            if len(ln.split()) == 3}
    mini = tmp_path / "mini"
    subprocess.run(["objcopy", "--only-keep-debug", exe, mini], check=True)
    subprocess.run(["xz", "-k", mini], check=True)
    subprocess.run(["strip", "--strip-all", exe], check=True)
    subprocess.run(["objcopy", "--add-section", f".gnu_debugdata={mini}.xz", exe], check=True)
    fd = os.open(exe, os.O_RDONLY)
    try:
        img = parse(FdSource(fd))
    finally:
        os.close(fd)
    assert not img.has_symtab and img.table.lookup(addr["secret_static"]) is None
    tab = mini_debuginfo(img)
    assert tab.lookup(addr["secret_static"] + 1) == "secret_static"
    assert tab.lookup(addr["exported_fn"]) == "exported_fn"
