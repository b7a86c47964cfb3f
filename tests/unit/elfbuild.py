"""A tiny ELF64 writer for symbolization tests: PT_LOADs, symbols and debug sections."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")
SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_DYNSYM, SHT_PROGBITS = 2, 3, 7, 11, 1


@dataclass
class Elf:
    funcs: list[tuple[str, int, int]] = field(default_factory=list)  # name, vaddr, size
    loads: list[tuple[int, int, int]] = field(default_factory=lambda: [(0, 0x10000, 0)])
    symtab: bool = True       # .symtab (else .dynsym)
    build_id: bytes = b""
    debuglink: tuple[str, int] | None = None  # name, crc
    debugdata: bytes = b""
    local: set[str] = field(default_factory=set)

    def build(self) -> bytes:
        sections: list[tuple[str, int, bytes, int, int]] = []  # name, type, data, link, entsize
        strtab = b"\0"
        syms = SYM.pack(0, 0, 0, 0, 0, 0)
        for name, addr, size in self.funcs:
            bind = 0 if name in self.local else 1
            syms += SYM.pack(len(strtab), (bind << 4) | 2, 0, 1, addr, size)
            strtab += name.encode() + b"\0"
        # section indices: 1 strtab, 2 symtab, then the rest, last shstrtab
        sections.append((".dynstr" if not self.symtab else ".strtab", SHT_STRTAB, strtab, 0, 0))
        sections.append((".symtab" if self.symtab else ".dynsym",
                         SHT_SYMTAB if self.symtab else SHT_DYNSYM, syms, 1, SYM.size))
        if self.build_id:
            note = struct.pack("<III", 4, len(self.build_id), 3) + b"GNU\0" + self.build_id
            sections.append((".note.gnu.build-id", SHT_NOTE, note, 0, 0))
        if self.debuglink:
            name = self.debuglink[0].encode() + b"\0"
            name += bytes(-len(name) % 4)
            sections.append((".gnu_debuglink", SHT_PROGBITS,
                             name + struct.pack("<I", self.debuglink[1]), 0, 0))
        if self.debugdata:
            sections.append((".gnu_debugdata", SHT_PROGBITS, self.debugdata, 0, 0))
        shstr = b"\0"
        names = []
        for s in sections:
            names.append(len(shstr))
            shstr += s[0].encode() + b"\0"
        names.append(len(shstr))
        shstr += b".shstrtab\0"
        sections.append((".shstrtab", SHT_STRTAB, shstr, 0, 0))
        phoff = EHDR.size
        body = bytearray(phoff + PHDR.size * len(self.loads))
        offsets = []
        for s in sections:
            offsets.append(len(body))
            body += s[2]
        body += bytes(-len(body) % 8)
        shoff = len(body)
        ident = b"\x7fELF\x02\x01\x01".ljust(16, b"\0")
        EHDR.pack_into(body, 0, ident, 3, 62, 1, 0, phoff, shoff, 0, EHDR.size, PHDR.size,
                       len(self.loads), SHDR.size, len(sections) + 1, len(sections))
        for i, (p_offset, p_filesz, p_vaddr) in enumerate(self.loads):
            PHDR.pack_into(body, phoff + i * PHDR.size, 1, 5, p_offset, p_vaddr, p_vaddr,
                           p_filesz, p_filesz, 0x1000)
        body += SHDR.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        for i, (_name, stype, data, link, entsize) in enumerate(sections):
            body += SHDR.pack(names[i], stype, 0, 0, offsets[i], len(data), link, 0, 1, entsize)
        return bytes(body)
