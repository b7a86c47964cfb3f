"""Attach the TLS uprobes (tls.bpf.c) to the OpenSSL libraries that target processes map.

The programs are loaded by the helper (probes/loader.py); the daemon resolves the
symbols' file offsets itself (probes/elfsym.py) and attaches through the uprobe PMU.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from probes import bpfsys
from probes.elfsym import file_symbol_offsets

log = logging.getLogger("periscope.tls")

_LIBSSL = re.compile(r"\s(/\S*/libssl\.so[.\d]*)$")
# (symbol, entry program, return program)
_HOOKS = (
    ("SSL_read", "tls_read_enter", "tls_read_exit"),
    ("SSL_read_ex", "tls_read_ex_enter", "tls_read_exit"),
    ("SSL_write", "tls_write_enter", "tls_write_exit"),
    ("SSL_write_ex", "tls_write_ex_enter", "tls_write_exit"),
)


def libssl_paths(pid: int, procfs: str = "/proc") -> set[str]:
    """Dynamically linked OpenSSL libraries mapped by a process (seen from our namespace)."""
    try:
        maps = Path(procfs, str(pid), "maps").read_text()
    except OSError:
        return set()  # exited, or hidden from us
    out = set()
    for line in maps.splitlines():
        m = _LIBSSL.search(line)
        if m:  # a library in another mount namespace is reached through /proc/PID/root
            path = m.group(1)
            out.add(path if Path(path).exists() else f"{procfs}/{pid}/root{path}")
    return out


class TlsHooks:
    """Uprobes on each libssl once; closing the perf event fds (close()) detaches them."""

    def __init__(self) -> None:
        self.attached: set[str] = set()
        self.failed: dict[str, str] = {}
        self._fds: list[int] = []

    def attach_for(self, progs: Mapping[str, int], pids: list[int]) -> None:
        """progs: TLS program name -> prog fd (from the loader's manifest)."""
        for pid in pids:
            for lib in libssl_paths(pid) - self.attached - set(self.failed):
                fds: list[int] = []
                try:
                    offsets = file_symbol_offsets(lib, [sym for sym, _e, _r in _HOOKS])
                    for sym, enter, ret in _HOOKS:
                        if sym not in offsets:
                            raise LookupError(f"{sym} not found in {lib}")
                        fds.append(bpfsys.attach_uprobe(progs[enter], lib, offsets[sym], False))
                        fds.append(bpfsys.attach_uprobe(progs[ret], lib, offsets[sym], True))
                except (OSError, ValueError, LookupError) as err:
                    for fd in fds:
                        os.close(fd)
                    self.failed[lib] = str(err)
                    log.warning("TLS uprobes on %s failed: %s", lib, err)
                    continue
                self._fds += fds
                self.attached.add(lib)
                log.info("TLS plaintext uprobes attached to %s", lib)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self.attached.clear()
