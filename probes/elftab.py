"""Address -> function name tables from ELF files (for stack symbolization), bounded.

Reads a 64-bit little-endian ELF through pread(2) on an fd (never mmap: a file truncated
under a mapping raises SIGBUS in the daemon), and only the parts it needs: the headers,
the PT_LOAD segments (file offset <-> virtual address, for PIE executables and shared
libraries), .dynsym and .symtab, the build id, .gnu_debuglink and .gnu_debugdata (the
xz-compressed MiniDebugInfo ELF some distributions embed in stripped binaries).

These files belong to traced users, who can craft them: every count and offset is
checked against the file and against a cap, decompression is capped, and any failure is
an ElfError that the caller turns into an `[unknown]` frame. Hand-written on purpose:
the parsing primitives are the ones probes/elfsym.py already bounds, and a general ELF
library would add a dependency whose section iteration trusts the header sizes.
"""

from __future__ import annotations

import bisect
import lzma
import os
import struct
from dataclasses import dataclass, field
from typing import Protocol

from probes.elfsym import _EHDR, _PHDR, _SHDR, _SYM, PT_LOAD, SHT_DYNSYM, SHT_SYMTAB, ElfError

MAX_SECTION = 64 << 20     # bytes read for one symbol or string table
MAX_SYMBOLS = 1 << 20      # function symbols kept per file (all tables together)
MAX_DEBUGDATA = 64 << 20   # decompressed .gnu_debugdata
MAX_NAME = 512             # characters of one symbol name
MAX_READ = 256 << 20       # bytes read from one file over all its tables
STT_FUNC = 2
STT_GNU_IFUNC = 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
NT_GNU_BUILD_ID = 3
_NOTE = struct.Struct("<III")
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1, STB_LOCAL: 2}


class Source(Protocol):
    size: int
    left: int  # bytes this parse may still read

    def read(self, off: int, size: int) -> bytes: ...


class FdSource:
    """An open regular file, read with pread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.left = MAX_READ

    def read(self, off: int, size: int) -> bytes:
        out = []
        got = 0
        while got < size:
            chunk = os.pread(self.fd, min(size - got, 1 << 20), off + got)
            if not chunk:  # truncated since fstat
                raise ElfError(f"file ends at {off + got:#x}, wanted {off + size:#x}")
            out.append(chunk)
            got += len(chunk)
        return b"".join(out)


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.left = MAX_READ

    def read(self, off: int, size: int) -> bytes:
        return self.data[off:off + size]


def _read(src: Source, off: int, size: int, what: str, cap: int = MAX_SECTION) -> bytes:
    if size > cap:
        raise ElfError(f"{what}: {size} bytes is over the {cap} byte cap")
    if off < 0 or size < 0 or off + size > src.size:
        raise ElfError(f"{what} at {off:#x}+{size:#x} is past the end of the file")
    if size > src.left:
        raise ElfError(f"more than {MAX_READ} bytes of tables")
    src.left -= size
    return src.read(off, size)


@dataclass(frozen=True)
class FuncTable:
    """Sorted function symbols: starts[i] .. ends[i] (end 0: size unknown) is names[i]."""

    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    names: tuple[str, ...] = ()

    def lookup(self, vaddr: int) -> str | None:
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i < 0:
            return None
        end = self.ends[i]
        # A sized symbol that ends before vaddr does not cover it: the address is in a
        # function with no symbol here (a static one in a stripped file), not in this one.
        if end and vaddr >= end:
            return None
        return self.names[i]

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True)
class ElfImage:
    """What symbolization needs from one ELF file."""

    loads: tuple[tuple[int, int, int], ...]  # (p_offset, p_filesz, p_vaddr) of PT_LOADs
    table: FuncTable
    build_id: bytes = b""
    debuglink: str = ""
    debuglink_crc: int = 0
    has_symtab: bool = False
    debugdata: bytes = field(default=b"", repr=False)  # .gnu_debugdata, still compressed


def _cstr(buf: bytes, off: int) -> bytes:
    stop = buf.find(b"\0", off)
    return buf[off:stop if stop >= 0 else len(buf)]


def _symbols(src: Source, shdrs: list[tuple[int, ...]], sh: tuple[int, ...], budget: int,
             out: list[tuple[int, int, int, str]]) -> int:
    """Append (start, end, bind rank, name) of each defined function in one symbol table;
    returns the remaining symbol budget."""
    sh_offset, sh_size, sh_link, sh_entsize = sh[4], sh[5], sh[6], sh[9]
    if sh_entsize < _SYM.size or sh_link >= len(shdrs):
        raise ElfError("bad symbol table header")
    count = sh_size // sh_entsize
    if not count:
        return budget
    if count > budget:
        raise ElfError(f"more than {MAX_SYMBOLS} symbols")
    syms = _read(src, sh_offset, count * sh_entsize, "symbol table")
    strs = _read(src, shdrs[sh_link][4], shdrs[sh_link][5], "string table")
    for j in range(count):
        st_name, st_info, _other, st_shndx, st_value, st_size = \
            _SYM.unpack_from(syms, j * sh_entsize)
        if not st_shndx or not st_value or (st_info & 0xF) not in (STT_FUNC, STT_GNU_IFUNC):
            continue
        if st_name >= len(strs):
            continue
        name = _cstr(strs, st_name)[:MAX_NAME].decode("utf-8", "replace")
        if name:
            out.append((st_value, st_value + st_size if st_size else 0,
                        _BIND_RANK.get(st_info >> 4, 3), name))
    return budget - count


def build_table(entries: list[tuple[int, int, int, str]]) -> FuncTable:
    """One name per start address: global before weak before local, then the shortest."""
    entries.sort(key=lambda e: (e[0], e[2], len(e[3]), e[3]))
    starts: list[int] = []
    ends: list[int] = []
    names: list[str] = []
    for start, end, _rank, name in entries:
        if starts and starts[-1] == start:
            if not ends[-1] and end:  # keep a size that another alias knows
                ends[-1] = end
            continue
        starts.append(start)
        ends.append(end)
        names.append(name)
    return FuncTable(tuple(starts), tuple(ends), tuple(names))


def parse(src: Source) -> ElfImage:
    """The PT_LOADs, function symbols and debug references of the ELF in src."""
    head = _read(src, 0, _EHDR.size, "ELF header")
    if len(head) < _EHDR.size or head[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if head[4] != 2 or head[5] != 1:
        raise ElfError("only 64-bit little-endian ELF is supported")
    (_ident, _type, _mach, _ver, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
     shentsize, shnum, shstrndx) = _EHDR.unpack(head)
    if (phnum and phentsize < _PHDR.size) or (shnum and shentsize < _SHDR.size):
        raise ElfError("program or section header entries too small")
    phdrs = _read(src, phoff, phnum * phentsize, "program headers")
    loads = []
    for i in range(phnum):
        p_type, _pf, p_offset, p_vaddr, _pa, p_filesz, _memsz, _align = \
            _PHDR.unpack_from(phdrs, i * phentsize)
        if p_type == PT_LOAD:
            loads.append((p_offset, p_filesz, p_vaddr))
    raw = _read(src, shoff, shnum * shentsize, "section headers") if shnum else b""
    shdrs = [_SHDR.unpack_from(raw, i * shentsize) for i in range(shnum)]
    names = b""
    if shdrs and shstrndx < len(shdrs):
        names = _read(src, shdrs[shstrndx][4], shdrs[shstrndx][5], "section names")
    entries: list[tuple[int, int, int, str]] = []
    budget = MAX_SYMBOLS
    build_id = b""
    debuglink, crc = "", 0
    debugdata = b""
    has_symtab = False
    for sh in shdrs:
        name = _cstr(names, sh[0]) if sh[0] < len(names) else b""
        sh_type, sh_offset, sh_size = sh[1], sh[4], sh[5]
        if sh_type in (SHT_SYMTAB, SHT_DYNSYM):
            has_symtab |= sh_type == SHT_SYMTAB
            budget = _symbols(src, shdrs, sh, budget, entries)
        elif name == b".note.gnu.build-id":
            build_id = _build_id(_read(src, sh_offset, sh_size, "build-id note", 4096))
        elif name == b".gnu_debuglink":
            data = _read(src, sh_offset, sh_size, ".gnu_debuglink", 4096)
            link = _cstr(data, 0)
            off = (len(link) + 4) & ~3  # the CRC follows the name, 4-byte aligned
            if link and off + 4 <= len(data):
                debuglink = link.decode("utf-8", "replace")
                (crc,) = struct.unpack_from("<I", data, off)
        elif name == b".gnu_debugdata":
            debugdata = _read(src, sh_offset, sh_size, ".gnu_debugdata")
    return ElfImage(tuple(loads), build_table(entries), build_id, debuglink, crc, has_symtab,
                    debugdata)


def _build_id(note: bytes) -> bytes:
    off = 0
    while off + _NOTE.size <= len(note):
        namesz, descsz, ntype = _NOTE.unpack_from(note, off)
        name_end = off + _NOTE.size + ((namesz + 3) & ~3)
        desc_end = name_end + descsz
        if desc_end > len(note):
            break
        if ntype == NT_GNU_BUILD_ID and note[off + _NOTE.size:off + _NOTE.size + namesz] \
                == b"GNU\0":
            return note[name_end:desc_end]
        off = name_end + ((descsz + 3) & ~3)
    return b""


def mini_debuginfo(image: ElfImage) -> FuncTable:
    """The function symbols of the image's .gnu_debugdata (an xz-compressed ELF holding
    only .symtab), decompressed up to MAX_DEBUGDATA bytes (an xz bomb stops there)."""
    if not image.debugdata:
        return FuncTable()
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        data = dec.decompress(image.debugdata, max_length=MAX_DEBUGDATA)
    except lzma.LZMAError as err:
        raise ElfError(f".gnu_debugdata: {err}") from err
    if not dec.eof:
        raise ElfError(f".gnu_debugdata decompresses past {MAX_DEBUGDATA} bytes, or is cut")
    return parse(BytesSource(data)).table


def merge(*tables: FuncTable) -> FuncTable:
    entries = [(s, e, 0, n) for t in tables for s, e, n in zip(t.starts, t.ends, t.names,
                                                                 strict=True)]
    return build_table(entries)
