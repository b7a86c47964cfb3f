"""Pure parsers of the text sources symbolization reads: /proc/PID/maps, perf maps
(/tmp/perf-PID.map) and /proc/kallsyms."""

from __future__ import annotations

import re
from typing import NamedTuple

from probes.elftab import FuncTable, build_table

MAX_PERF_ENTRIES = 1 << 20
_MAPS = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ (\d+)\s*(.*)$")


class Mapping(NamedTuple):
    start: int
    end: int
    offset: int
    inode: int
    path: str  # "" for anonymous memory, "[vdso]" and the like for special mappings


def parse_maps(text: str) -> list[Mapping]:
    """The executable mappings of a /proc/PID/maps text, sorted by start."""
    out = []
    for line in text.splitlines():
        m = _MAPS.match(line)
        if m and m.group(3)[2] == "x":
            out.append(Mapping(int(m.group(1), 16), int(m.group(2), 16), int(m.group(4), 16),
                               int(m.group(5)), m.group(6)))
    out.sort()
    return out


def parse_perf_map(text: str) -> FuncTable:
    """A perf map ("START SIZE name" per line, hex): later lines win at the same start."""
    entries: dict[int, tuple[int, int, int, str]] = {}
    for n, line in enumerate(text.splitlines()):
        if n >= MAX_PERF_ENTRIES:
            break
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue
        try:
            start, size = int(parts[0], 16), int(parts[1], 16)
        except ValueError:
            continue
        name = parts[2].strip()[:512]
        if start > 0 and size > 0 and name:
            entries[start] = (start, start + size, 0, name)
    return build_table(list(entries.values()))


def parse_kallsyms(text: str) -> tuple[FuncTable, bool]:
    """Text symbols of /proc/kallsyms, and whether addresses are hidden (kptr_restrict)."""
    entries = []
    zero = 0
    for line in text.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) < 3 or parts[1] not in ("t", "T", "w", "W"):
            continue
        addr = int(parts[0], 16)
        if not addr:
            zero += 1
            continue
        entries.append((addr, 0, 0, parts[2]))
    return build_table(entries), zero > 0 and not entries
