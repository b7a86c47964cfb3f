"""Symbol name → file offset in an ELF64 little-endian shared object (for uprobes).

A uprobe is placed at a file offset. A symbol's st_value is a virtual address; the
PT_LOAD segment that contains it maps it back: offset = vaddr - p_vaddr + p_offset.
Reads .dynsym (what a shared library exports) and .symtab when present. Only what
uprobes on libssl need: no relocation, no debuginfo, no 32-bit or big-endian files.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
PT_LOAD = 1
SHT_SYMTAB = 2
SHT_DYNSYM = 11
STT_FUNC = 2
STT_GNU_IFUNC = 10


class ElfError(ValueError):
    """Not an ELF file we can read, or the symbol is not there."""


def _cstr(buf: bytes | mmap.mmap, off: int) -> bytes:
    end = buf.find(b"\0", off)
    return bytes(buf[off:end if end >= 0 else len(buf)])


def symbol_offsets(data: bytes | mmap.mmap, names: Iterable[str]) -> dict[str, int]:
    """File offsets of the defined functions among names found in data (an ELF image)."""
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("only 64-bit little-endian ELF is supported")
    (_ident, _type, _mach, _ver, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
     shentsize, shnum, _shstrndx) = _EHDR.unpack_from(data, 0)
    loads = []
    for i in range(phnum):
        p_type, _pf, p_offset, p_vaddr, _pa, p_filesz, _memsz, _align = \
            _PHDR.unpack_from(data, phoff + i * phentsize)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
    shdrs = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    wanted = {n.encode(): n for n in names}
    found: dict[str, int] = {}
    for sh in shdrs:
        sh_type, sh_offset, sh_size, sh_link, sh_entsize = sh[1], sh[4], sh[5], sh[6], sh[9]
        if sh_type not in (SHT_DYNSYM, SHT_SYMTAB) or not sh_entsize:
            continue
        stroff = shdrs[sh_link][4]
        for j in range(sh_size // sh_entsize):
            st_name, st_info, _other, st_shndx, st_value, _size = \
                _SYM.unpack_from(data, sh_offset + j * sh_entsize)
            if not st_shndx or not st_value or (st_info & 0xF) not in (STT_FUNC, STT_GNU_IFUNC):
                continue
            name = _cstr(data, stroff + st_name)
            if name in wanted and wanted[name] not in found:
                found[wanted[name]] = vaddr_to_offset(loads, st_value)
    return found


def vaddr_to_offset(loads: list[tuple[int, int, int]], vaddr: int) -> int:
    """loads: (p_vaddr, p_filesz, p_offset) of each PT_LOAD segment."""
    for p_vaddr, p_filesz, p_offset in loads:
        if p_vaddr <= vaddr < p_vaddr + p_filesz:
            return vaddr - p_vaddr + p_offset
    raise ElfError(f"address {vaddr:#x} is in no PT_LOAD segment")


def file_symbol_offsets(path: str, names: Iterable[str]) -> dict[str, int]:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        return symbol_offsets(m, names)
