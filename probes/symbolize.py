"""Stack addresses -> frame names: user frames from the ELF files a process maps (and its
perf map), kernel frames from /proc/kallsyms.

User frames: /proc/PID/maps gives the mapping of an address (file offset = address -
start + pgoff); the file is opened once through /proc/PID/root (the target's mount
namespace), checked to be the mapped inode, and its PT_LOADs turn the file offset into
the virtual address its symbol tables use (PIE executables and shared libraries alike).
Tables come from .symtab/.dynsym, else .gnu_debugdata, else a debug file found by
build id or .gnu_debuglink under /usr/lib/debug (probes/elftab.py), and are cached per
(dev, inode, mtime, size). Addresses in anonymous memory (JIT code) are looked up in
/tmp/perf-PID.map, the perf-map format CPython 3.12 `-X perf`, node --perf-basic-prof and
other JITs write. What cannot be named becomes `[libfoo.so+0x1234]` (the module's
virtual address) or `[unknown]`, and is counted.

Every file here belongs to a traced user: failures of any kind are counted and cached,
never raised.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import logging
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from probes.elfsym import ElfError
from probes.elftab import ElfImage, FdSource, FuncTable, merge, mini_debuginfo, parse
from probes.symtext import Mapping, parse_kallsyms, parse_maps, parse_perf_map

__all__ = ["KERNEL", "UNKNOWN", "Mapping", "ProcessSymbols", "SymbolStats", "Symbolizer",
           "parse_kallsyms", "parse_maps", "parse_perf_map"]

log = logging.getLogger("periscope.symbolize")

MAX_PERF_MAP = 64 << 20     # bytes of one perf map
MAX_DEBUG_CRC = 512 << 20   # bytes hashed to check a .gnu_debuglink file
CACHE_FILES = 256           # symbol tables kept (LRU)
UNKNOWN = "[unknown]"
KERNEL = "[kernel]"
KERNEL_SUFFIX = "_[k]"      # flamegraph.pl's annotation of kernel frames
_ERRORS = (OSError, ValueError, ElfError, LookupError, EOFError, MemoryError)
Loads = tuple[tuple[int, int, int], ...]  # a file's PT_LOADs: (p_offset, p_filesz, p_vaddr)


@dataclass
class SymbolStats:
    files: int = 0           # ELF files parsed
    file_errors: int = 0     # unreadable, changed or malformed: their frames are [module+off]
    debug_files: int = 0     # separate debug files or MiniDebugInfo used
    perf_maps: int = 0
    perf_map_errors: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # module -> reason (bounded)

    def fail(self, what: str, err: BaseException) -> None:
        self.file_errors += 1
        if len(self.errors) < 64:
            self.errors[os.path.basename(what)] = f"{type(err).__name__}: {err}"[:200]


class Symbolizer:
    """Names frames of many processes; keeps ELF tables (by inode) and kallsyms cached."""

    def __init__(self, procfs: str = "/proc", debug_dir: str = "/usr/lib/debug",
                 kallsyms: str = "/proc/kallsyms") -> None:
        self.procfs = procfs
        self.debug_dir = debug_dir
        self.kallsyms_path = kallsyms
        self.stats = SymbolStats()
        self._tables: collections.OrderedDict[tuple[int, ...], FuncTable | None] = \
            collections.OrderedDict()
        self._images: dict[tuple[int, ...], tuple[tuple[int, int, int], ...]] = {}
        self._kernel: tuple[str, FuncTable, bool] | None = None

    # -- kernel ---------------------------------------------------------------
    def kernel_table(self) -> tuple[FuncTable, bool]:
        """(kallsyms text symbols, hidden); reloaded when the module list changes."""
        try:
            modules = Path(self.procfs, "modules").read_bytes()
        except OSError:
            modules = b""
        key = hashlib.sha256(modules).hexdigest()
        if self._kernel is None or self._kernel[0] != key:
            try:
                table, hidden = parse_kallsyms(Path(self.kallsyms_path).read_text())
            except OSError:
                table, hidden = FuncTable(), True
            self._kernel = (key, table, hidden)
        return self._kernel[1], self._kernel[2]

    def kernel_frame(self, addr: int) -> tuple[str, bool]:
        table, _hidden = self.kernel_table()
        name = table.lookup(addr)
        return (name + KERNEL_SUFFIX, True) if name else (KERNEL, False)

    # -- user -----------------------------------------------------------------
    def process(self, pid: int) -> ProcessSymbols:
        """A snapshot of pid's mappings and perf map (empty if it has exited)."""
        try:
            maps = parse_maps(Path(self.procfs, str(pid), "maps").read_text())
        except OSError:
            maps = []
        return ProcessSymbols(self, pid, maps, self._perf_map(pid))

    def user_frames(self, pid: int) -> Callable[[int, bool], tuple[str, bool]]:
        """frame(addr, leaf) -> (name, resolved) for pid, from one read of its maps."""
        return self.process(pid).frame

    def _root(self, pid: int) -> str:
        return f"{self.procfs}/{pid}/root"

    def _status(self, pid: int) -> dict[str, list[str]]:
        try:
            text = Path(self.procfs, str(pid), "status").read_text()
        except OSError:
            return {}
        return {k: v.split() for k, _, v in (ln.partition(":") for ln in text.splitlines())}

    def _perf_map(self, pid: int) -> FuncTable:
        status = self._status(pid)
        nspid = status.get("NSpid", [str(pid)])[-1]  # the pid the process knows itself by
        uids = {int(u) for u in status.get("Uid", [])[:2]} | {0}
        path = f"{self._root(pid)}/tmp/perf-{nspid}.map"
        try:
            # O_NOFOLLOW + owner check: /tmp is shared, and a map planted or symlinked
            # there by someone else must not name the target's frames (or leak a file).
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return FuncTable()
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid not in uids:
                raise ValueError(f"perf map {path} is not a regular file of the target's user")
            data = os.pread(fd, MAX_PERF_MAP + 1, 0)
            if len(data) > MAX_PERF_MAP:
                raise ValueError(f"perf map over {MAX_PERF_MAP} bytes")
            table = parse_perf_map(data.decode("utf-8", "replace"))
            self.stats.perf_maps += 1
            return table
        except _ERRORS as err:
            self.stats.perf_map_errors += 1
            log.debug("perf map of %d unusable: %s", pid, err)
            return FuncTable()
        finally:
            os.close(fd)

    def module(self, pid: int, m: Mapping) -> tuple[FuncTable | None,
                                                      tuple[tuple[int, int, int], ...]]:
        """(function table or None, PT_LOADs) of the file behind a mapping."""
        path = self._root(pid) + m.path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as err:
            self.stats.fail(m.path, err)
            return None, ()
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if key in self._tables:
                self._tables.move_to_end(key)
                return self._tables[key], self._images.get(key, ())
            table: FuncTable | None = None
            loads: tuple[tuple[int, int, int], ...] = ()
            try:
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError("not a regular file")
                if st.st_ino != m.inode:
                    raise ValueError("the path holds another file than the one mapped")
                image = parse(FdSource(fd))
                loads = image.loads
                table = image.table
                if not image.has_symtab:
                    extra = mini_debuginfo(image) or self._debug_file(pid, m.path, image)
                    if extra:
                        self.stats.debug_files += 1
                        table = merge(table, extra)
                self.stats.files += 1
            except _ERRORS as err:
                self.stats.fail(m.path, err)
            self._tables[key] = table
            self._images[key] = loads
            while len(self._tables) > CACHE_FILES:
                old, _ = self._tables.popitem(last=False)
                self._images.pop(old, None)
            return table, loads
        finally:
            os.close(fd)

    def _debug_file(self, pid: int, path: str, image: ElfImage) -> FuncTable:
        """Symbols of the separate debug file of a stripped ELF, if installed."""
        candidates: list[str] = []
        bid = image.build_id
        if bid:
            rel = f"{self.debug_dir}/.build-id/{bid[:1].hex()}/{bid[1:].hex()}.debug"
            candidates += [self._root(pid) + rel, rel]
        if image.debuglink and "/" not in image.debuglink:
            d = os.path.dirname(path)
            candidates += [self._root(pid) + p for p in (
                f"{d}/{image.debuglink}", f"{d}/.debug/{image.debuglink}",
                f"{self.debug_dir}{d}/{image.debuglink}")]
        for cand in candidates:
            try:
                fd = os.open(cand, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                dbg = parse(FdSource(fd))
                if bid and dbg.build_id != bid:
                    continue  # another build's debug file
                if not bid and not _crc_matches(fd, image.debuglink_crc):
                    continue
                return dbg.table
            except _ERRORS as err:
                self.stats.fail(cand, err)
            finally:
                os.close(fd)
        return FuncTable()


def _crc_matches(fd: int, want: int) -> bool:
    crc, off = 0, 0
    while off <= MAX_DEBUG_CRC:
        chunk = os.pread(fd, 1 << 20, off)
        if not chunk:
            return crc == want
        crc = zlib.crc32(chunk, crc)
        off += len(chunk)
    return False


class ProcessSymbols:
    """Frame names for one process, from one read of its maps and perf map."""

    def __init__(self, sym: Symbolizer, pid: int, maps: list[Mapping], perf: FuncTable) -> None:
        self._sym = sym
        self.pid = pid
        self.maps = maps
        self._starts = [m.start for m in maps]
        self.perf = perf
        # Tables of files already opened for this reading (warm): kept here because the
        # files are opened through /proc/PID/root, which is gone once the process exits.
        self._modules: dict[Mapping, tuple[FuncTable | None, Loads]] = {}

    def warm(self) -> None:
        """Open and parse every file mapped now, and keep their tables in this reading, so
        that its frames are still named after the process exits (a profile's target that
        is killed before its samples are symbolized)."""
        for m in self.maps:
            if m.path.startswith("/") and m not in self._modules:
                self._modules[m] = self._sym.module(self.pid, m)

    def _mapping(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.maps[i].end:
            return self.maps[i]
        return None

    def frame(self, addr: int, leaf: bool) -> tuple[str, bool]:
        """(name, resolved) of a user address. A caller's address is a return address,
        which may be the first byte after its function: look up addr - 1 for those."""
        look = addr if leaf else addr - 1
        m = self._mapping(addr)
        if m is None or not m.path.startswith("/"):
            name = self.perf.lookup(look) if len(self.perf) else None
            if name:
                return name, True
            if m is not None and m.path.startswith("["):
                return m.path, False  # [vdso], [vsyscall]
            return UNKNOWN, False
        base = os.path.basename(m.path.removesuffix(" (deleted)"))
        kept = self._modules.get(m)
        table, loads = kept if kept is not None else self._sym.module(self.pid, m)
        file_off = addr - m.start + m.offset
        vaddr = _vaddr(loads, file_off)
        if table is not None and vaddr is not None:
            name = table.lookup(vaddr if leaf else vaddr - 1)
            if name:
                return name, True
        return f"[{base}+{(vaddr if vaddr is not None else file_off):#x}]", False


def _vaddr(loads: tuple[tuple[int, int, int], ...], file_off: int) -> int | None:
    for p_offset, p_filesz, p_vaddr in loads:
        if p_offset <= file_off < p_offset + p_filesz:
            return file_off - p_offset + p_vaddr
    return None
