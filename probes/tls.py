"""Attach the TLS uprobes (tls.bpf.c) to the OpenSSL libraries that target processes map.

The programs are loaded by the helper (probes/loader.py); the daemon resolves the
symbols' file offsets itself (probes/elfsym.py) and attaches through the uprobe PMU.

The library files belong to traced processes, whose users can swap them at any moment:
each is opened once, its symbols read from that fd, and the uprobes placed on that same
file through /proc/self/fd/N, so an offset is never applied to a file other than the one
it was read from (a misplaced breakpoint would corrupt every process mapping that file).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from probes import bpfsys
from probes.elfsym import fd_symbol_offsets, open_elf

log = logging.getLogger("periscope.tls")

_LIBSSL = re.compile(r"\s(/\S*/libssl\.so[.\d]*)$")
# (symbol, entry program, return program or None)
_HOOKS: tuple[tuple[str, str, str | None], ...] = (
    ("SSL_read", "tls_read_enter", "tls_read_exit"),
    ("SSL_read_ex", "tls_read_ex_enter", "tls_read_exit"),
    ("SSL_write", "tls_write_enter", "tls_write_exit"),
    ("SSL_write_ex", "tls_write_ex_enter", "tls_write_exit"),
    ("SSL_set_fd", "tls_set_fd_enter", None),  # the SSL's socket, before any byte moves
    # handshake and shutdown: their syscalls carry ciphertext (marked, not copied)
    ("SSL_do_handshake", "tls_quiet_enter", "tls_quiet_exit"),
    ("SSL_connect", "tls_quiet_enter", "tls_quiet_exit"),
    ("SSL_accept", "tls_quiet_enter", "tls_quiet_exit"),
    ("SSL_shutdown", "tls_quiet_enter", "tls_quiet_exit"),
)
# Without these there is no plaintext; the others only tie it to its socket sooner and
# keep handshake ciphertext out of the syscall payloads.
REQUIRED = frozenset(("SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"))


def libssl_paths(pid: int, procfs: str = "/proc") -> set[str]:
    """Dynamically linked OpenSSL libraries mapped by a process, as paths in its own
    mount namespace (/proc/PID/root/...): the same path in ours may be another file."""
    try:
        maps = Path(procfs, str(pid), "maps").read_text()
    except OSError:
        return set()  # exited, or hidden from us
    out = set()
    for line in maps.splitlines():
        m = _LIBSSL.search(line)
        if m:
            out.add(f"{procfs}/{pid}/root{m.group(1)}")
    return out


# Where a distribution keeps the libssl that dynamically linked programs load.
SYSTEM_LIBSSL = ("/usr/lib/*/libssl.so.*", "/usr/lib64/libssl.so.*", "/usr/lib/libssl.so.*",
                 "/lib/*/libssl.so.*", "/lib64/libssl.so.*")
_VERSIONED = re.compile(r"libssl\.so\.\d+(\.\d+)*$")


def system_libssl_paths() -> set[str]:
    """The host's own libssl files (one path per file): programs that start later load
    these, and a uprobe placed now catches their first calls."""
    out: dict[tuple[int, int], str] = {}
    for pattern in SYSTEM_LIBSSL:
        for path in sorted(glob.glob(pattern)):
            if not _VERSIONED.search(path):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            out.setdefault((st.st_dev, st.st_ino), path)
    return set(out.values())


class TlsHooks:
    """Uprobes on each libssl once; closing the perf event fds (close()) detaches them."""

    def __init__(self) -> None:
        self.attached: set[str] = set()
        self.failed: dict[str, str] = {}
        self._fds: list[int] = []
        self._inodes: set[tuple[int, int]] = set()  # (st_dev, st_ino) with uprobes
        self._failed_inodes: set[tuple[int, int]] = set()

    def attach_for(self, progs: Mapping[str, int], pids: list[int]) -> None:
        """progs: TLS program name -> prog fd (from the loader's manifest)."""
        for pid in pids:
            self.attach_paths(progs, libssl_paths(pid))

    def attach_paths(self, progs: Mapping[str, int], paths: set[str]) -> None:
        """Uprobes on these libssl files (each file once, whatever path names it)."""
        for lib in sorted(paths - self.attached - set(self.failed)):
            fds: list[int] = []
            lib_fd = -1
            inode: tuple[int, int] | None = None
            try:
                lib_fd = open_elf(lib)
                st = os.fstat(lib_fd)
                inode = (st.st_dev, st.st_ino)
                if inode in self._inodes:  # the same file, seen through another process
                    self.attached.add(lib)
                    continue
                if inode in self._failed_inodes:
                    self.failed[lib] = "failed before under another path"
                    continue
                offsets = fd_symbol_offsets(lib_fd, [sym for sym, _e, _r in _HOOKS])
                same = f"/proc/self/fd/{lib_fd}"
                for sym, enter, ret in _HOOKS:
                    if sym not in offsets:
                        if sym in REQUIRED:
                            raise LookupError(f"{sym} not found in {lib}")
                        continue
                    fds.append(bpfsys.attach_uprobe(progs[enter], same, offsets[sym], False))
                    if ret is not None:
                        fds.append(bpfsys.attach_uprobe(progs[ret], same, offsets[sym],
                                                        True))
            except (OSError, ValueError, LookupError) as err:
                for fd in fds:
                    os.close(fd)
                self.failed[lib] = str(err)
                if inode is not None:
                    self._failed_inodes.add(inode)
                log.warning("TLS uprobes on %s failed: %s", lib, err)
                continue
            finally:
                if lib_fd >= 0:
                    os.close(lib_fd)
            self._fds += fds
            assert inode is not None
            self._inodes.add(inode)
            self.attached.add(lib)
            log.info("TLS plaintext uprobes attached to %s", lib)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self._inodes.clear()
        self.attached.clear()
