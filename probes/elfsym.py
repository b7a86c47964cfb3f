"""Symbol name → file offset in an ELF64 little-endian shared object (for uprobes).

A uprobe is placed at a file offset. A symbol's st_value is a virtual address; the
PT_LOAD segment that contains it maps it back: offset = vaddr - p_vaddr + p_offset.
Reads .dynsym (what a shared library exports) and .symtab when present. Only what
uprobes on libssl need: no relocation, no debuginfo, no 32-bit or big-endian files.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterable
from typing import Any

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


# The files come from traced processes (/proc/PID/root/...), which their users control:
# every offset and count is checked against the file, and the work is bounded.
MAX_FILE = 64 << 20   # libssl is ~1 MB
MAX_SYMBOLS = 1 << 20  # symbol entries examined over all sections


def _unpack(st: struct.Struct, data: bytes, off: int, what: str) -> tuple[Any, ...]:
    if off < 0 or off + st.size > len(data):
        raise ElfError(f"truncated ELF: {what} at {off:#x} is past the end")
    return st.unpack_from(data, off)


def _cstr(buf: bytes, off: int, end: int) -> bytes:
    """The NUL-terminated string at off, not reading at or past end."""
    stop = buf.find(b"\0", off, end)
    return bytes(buf[off:stop if stop >= 0 else end])


def symbol_offsets(data: bytes, names: Iterable[str]) -> dict[str, int]:
    """File offsets of the defined functions among names found in data (an ELF image)."""
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("only 64-bit little-endian ELF is supported")
    (_ident, _type, _mach, _ver, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
     shentsize, shnum, _shstrndx) = _EHDR.unpack_from(data, 0)
    if (phnum and phentsize < _PHDR.size) or (shnum and shentsize < _SHDR.size):
        raise ElfError("program or section header entries too small")
    loads = []
    for i in range(phnum):
        p_type, _pf, p_offset, p_vaddr, _pa, p_filesz, _memsz, _align = \
            _unpack(_PHDR, data, phoff + i * phentsize, "program header")
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
    shdrs = [_unpack(_SHDR, data, shoff + i * shentsize, "section header")
             for i in range(shnum)]
    wanted = {n.encode(): n for n in names}
    found: dict[str, int] = {}
    budget = MAX_SYMBOLS
    for sh in shdrs:
        sh_type, sh_offset, sh_size, sh_link, sh_entsize = sh[1], sh[4], sh[5], sh[6], sh[9]
        if sh_type not in (SHT_DYNSYM, SHT_SYMTAB):
            continue
        if sh_entsize < _SYM.size or sh_offset + sh_size > len(data) or sh_link >= len(shdrs):
            raise ElfError("symbol table out of bounds")
        stroff, strsize = shdrs[sh_link][4], shdrs[sh_link][5]
        if stroff + strsize > len(data):
            raise ElfError("string table out of bounds")
        count = sh_size // sh_entsize
        budget -= count
        if budget < 0:
            raise ElfError(f"more than {MAX_SYMBOLS} symbols")
        for j in range(count):
            st_name, st_info, _other, st_shndx, st_value, _size = \
                _SYM.unpack_from(data, sh_offset + j * sh_entsize)
            if not st_shndx or not st_value or (st_info & 0xF) not in (STT_FUNC, STT_GNU_IFUNC):
                continue
            if st_name >= strsize:
                continue
            name = _cstr(data, stroff + st_name, stroff + strsize)
            if name in wanted and wanted[name] not in found:
                found[wanted[name]] = vaddr_to_offset(loads, st_value)
    return found


def vaddr_to_offset(loads: list[tuple[int, int, int]], vaddr: int) -> int:
    """loads: (p_vaddr, p_filesz, p_offset) of each PT_LOAD segment."""
    for p_vaddr, p_filesz, p_offset in loads:
        if p_vaddr <= vaddr < p_vaddr + p_filesz:
            return vaddr - p_vaddr + p_offset
    raise ElfError(f"address {vaddr:#x} is in no PT_LOAD segment")


def open_elf(path: str) -> int:
    """An O_RDONLY fd on path if it is a regular file (never blocks: a FIFO or device put
    in a library's place is refused, not waited on). The caller closes it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ElfError(f"{path} is not a regular file")
        if st.st_size > MAX_FILE:
            raise ElfError(f"{path} is larger than {MAX_FILE >> 20} MiB")
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_symbol_offsets(fd: int, names: Iterable[str]) -> dict[str, int]:
    """symbol_offsets() of the file open on fd. Read, not mmapped: a file truncated under
    an mmap raises SIGBUS on access, which would kill the daemon."""
    chunks = []
    total = 0
    while total <= MAX_FILE:
        chunk = os.pread(fd, 1 << 20, total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > MAX_FILE:
        raise ElfError(f"larger than {MAX_FILE >> 20} MiB")
    return symbol_offsets(b"".join(chunks), names)


def file_symbol_offsets(path: str, names: Iterable[str]) -> dict[str, int]:
    fd = open_elf(path)
    try:
        return fd_symbol_offsets(fd, names)
    finally:
        os.close(fd)
