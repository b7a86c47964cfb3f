"""Pure parsers for the procfs files a snapshot reads (text in, typed values out)."""

from __future__ import annotations

import os
import re
from typing import NamedTuple


class Stat(NamedTuple):
    """The fields of /proc/PID/stat (or task/TID/stat) a snapshot uses; times in ticks."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int
    num_threads: int
    starttime: int
    processor: int | None


STATES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "Z": "zombie", "T": "stopped",
          "t": "tracing-stop", "X": "dead", "x": "dead", "I": "idle", "K": "wakekill",
          "W": "waking", "P": "parked"}


def parse_stat(text: str) -> Stat:
    """/proc/PID/stat. comm is in parentheses and may itself hold ')' and spaces, so the
    fields start after the LAST ')'."""
    open_, close = text.find("("), text.rfind(")")
    if open_ < 0 or close < open_:
        raise ValueError("malformed stat line")
    rest = text[close + 2:].split()
    if len(rest) < 20:
        raise ValueError("short stat line")
    # rest[0] is field 3 (state): field n is rest[n - 3]
    return Stat(int(text[:open_]), text[open_ + 1:close], rest[0], int(rest[1]), int(rest[11]),
                int(rest[12]), int(rest[17]), int(rest[19]),
                int(rest[36]) if len(rest) > 36 else None)


def parse_status(text: str) -> dict[str, str]:
    """/proc/PID/status as key -> raw value text."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def kb(value: str | None) -> int | None:
    """"1644 kB" -> 1683456 bytes."""
    if not value:
        return None
    num, _, unit = value.partition(" ")
    return int(num) * 1024 if unit.strip() == "kB" else int(num)


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """/proc/PID/smaps_rollup: field (lower case) -> bytes. The first line is the range."""
    out: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep and value.strip().endswith("kB"):
            out[key.strip().lower()] = int(value.split()[0]) * 1024
    return out


def parse_io(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip().isdigit():
            out[key.strip()] = int(value)
    return out


def parse_limits(text: str) -> dict[str, dict[str, int | str | None]]:
    """/proc/PID/limits. The kernel prints fixed columns ("%-25s %-20s %-20s %-10s"), and
    names hold spaces, so columns are cut by position. "unlimited" becomes None."""
    out: dict[str, dict[str, int | str | None]] = {}
    for line in text.splitlines()[1:]:
        name = line[:26].strip()
        if not name:
            continue
        soft, hard, units = line[26:47].strip(), line[47:68].strip(), line[68:].strip()
        key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        out[key] = {"soft": _limit(soft), "hard": _limit(hard), "units": units or None}
    return out


def _limit(text: str) -> int | None:
    if text == "unlimited":
        return None
    return int(text)


class Mapping(NamedTuple):
    """One line of /proc/PID/maps."""

    start: int
    end: int
    perms: str
    path: str  # "" for anonymous memory; "[heap]", "[stack]", ... for special ones


def parse_maps(text: str) -> list[Mapping]:
    out = []
    for line in text.splitlines():
        # address perms offset dev inode [path]; the path is the rest and may hold spaces
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, _, hi = parts[0].partition("-")
        out.append(Mapping(int(lo, 16), int(hi, 16), parts[1],
                           parts[5] if len(parts) > 5 else ""))
    return out


def parse_fdinfo(text: str) -> dict[str, int]:
    """/proc/PID/fdinfo/N: pos (decimal), flags (octal), mnt_id, ino."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        value = value.strip()
        if not sep or not value:
            continue
        try:
            if key == "flags":
                out["flags"] = int(value, 8)
            elif key in ("pos", "mnt_id", "ino"):
                out[key] = int(value)
        except ValueError:
            continue
    return out


_OPEN_FLAGS = tuple((name, getattr(os, name)) for name in (
    "O_APPEND", "O_NONBLOCK", "O_SYNC", "O_DSYNC", "O_DIRECT", "O_NOATIME", "O_PATH",
    "O_DIRECTORY", "O_CLOEXEC", "O_TMPFILE") if hasattr(os, name))


def open_mode(flags: int) -> tuple[str, list[str]]:
    """Access mode ("r", "w", "rw") and the names of the notable flags that are set."""
    mode = {os.O_RDONLY: "r", os.O_WRONLY: "w", os.O_RDWR: "rw"}.get(flags & os.O_ACCMODE, "?")
    # O_SYNC includes the O_DSYNC bit, O_TMPFILE includes O_DIRECTORY: test whole masks.
    names = [name for name, bit in _OPEN_FLAGS if flags & bit == bit]
    if "O_SYNC" in names:
        names.remove("O_DSYNC")
    if "O_TMPFILE" in names:
        names.remove("O_DIRECTORY")
    return mode, names


_NS_LINK = re.compile(r"^(\w+):\[(\d+)\]$")


def ns_inode(link: str) -> int | None:
    """"net:[4026531833]" -> 4026531833."""
    m = _NS_LINK.match(link)
    return int(m.group(2)) if m else None


def split_nul(data: bytes) -> list[bytes]:
    """A NUL-separated list (cmdline, environ); a missing final NUL is allowed."""
    if not data:
        return []
    items = data.split(b"\0")
    return items[:-1] if items[-1] == b"" else items
