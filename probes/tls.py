"""Attach the TLS uprobes (tls.bpf.c) to the OpenSSL libraries that target processes map."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

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
    """Uprobes on each libssl once; bcc detaches them with the rest at cleanup()."""

    def __init__(self) -> None:
        self.attached: set[str] = set()
        self.failed: dict[str, str] = {}

    def attach_for(self, bpf: Any, pids: list[int]) -> None:
        for pid in pids:
            for lib in libssl_paths(pid) - self.attached - set(self.failed):
                try:
                    for sym, enter, ret in _HOOKS:
                        bpf.attach_uprobe(name=lib, sym=sym, fn_name=enter)
                        bpf.attach_uretprobe(name=lib, sym=sym, fn_name=ret)
                except Exception as err:  # bcc raises bare Exception on attach failure
                    self.failed[lib] = str(err)
                    log.warning("TLS uprobes on %s failed: %s", lib, err)
                    continue
                self.attached.add(lib)
                log.info("TLS plaintext uprobes attached to %s", lib)
