"""The TLS library flag: `traceable` says exactly whether probes/tls.py would attach its
uprobes to the libssl the process maps (same candidate paths, same symbols, same file)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from collector.snapshot import collect
from collector.snapshot.libs import TLS_SYMBOLS
from probes import bpfsys, tls
from redact import Redactor
from tests.unit.snapshot.fakeproc import PID

LIBDIR = "/usr/lib/x86_64-linux-gnu"
FULL = "".join(f"int {s}(void) {{ return 0; }}\n" for s in TLS_SYMBOLS)
NO_EX = "int SSL_read(void) { return 0; }\nint SSL_write(void) { return 0; }\n"
needs_gcc = pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")


def _install(proc: Path, tmp_path: Path, src: str | None) -> Path:
    """Give the fake process a root with libssl.so.3 built from src (None: not an ELF)."""
    root = tmp_path / "root"
    lib = root / LIBDIR.lstrip("/") / "libssl.so.3"
    lib.parent.mkdir(parents=True, exist_ok=True)
    if src is None:
        lib.write_text("not an ELF\n")
    else:
        c = tmp_path / "ssl.c"
        c.write_text(src)
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(c)], check=True)
    (proc / str(PID) / "root").unlink()
    os.symlink(root, proc / str(PID) / "root")
    return lib


def _ssl(snap: dict[str, Any]) -> dict[str, Any]:
    return next(lib for lib in snap["libraries"] if lib.get("tls") == "openssl")


def _probe_attaches(proc: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    """What the real TLS probe code does for this process (uprobe syscall faked)."""
    real = tls.libssl_paths
    monkeypatch.setattr(tls, "libssl_paths", lambda pid: real(pid, str(proc)))
    monkeypatch.setattr(bpfsys, "attach_uprobe",
                        lambda *a: os.open("/dev/null", os.O_RDONLY))
    hooks = tls.TlsHooks()
    progs = {n: 100 + i for i, n in enumerate(
        ("tls_read_enter", "tls_read_ex_enter", "tls_write_enter", "tls_write_ex_enter",
         "tls_read_exit", "tls_write_exit"))}
    hooks.attach_for(progs, [PID])
    attached = bool(hooks.attached)
    hooks.close()
    return attached


@needs_gcc
@pytest.mark.parametrize(("src", "traceable", "why"), [
    (FULL, True, "exports SSL_read, SSL_read_ex, SSL_write, SSL_write_ex"),
    (NO_EX, False, "does not export SSL_read_ex, SSL_write_ex"),
    (None, False, "unreadable ELF"),
])
def test_traceable_matches_the_tls_probe(fake_proc: Path, tmp_path: Path, redactor: Redactor,
                                         monkeypatch: pytest.MonkeyPatch, src: str | None,
                                         traceable: bool, why: str) -> None:
    _install(fake_proc, tmp_path, src)
    ssl = _ssl(collect(PID, redactor, procfs=str(fake_proc)))
    assert ssl["traceable"] is traceable
    assert ssl["traceable"] is _probe_attaches(fake_proc, monkeypatch)
    assert ssl["why"] == why


@needs_gcc
def test_a_deleted_libssl_is_not_traceable(fake_proc: Path, tmp_path: Path,
                                           redactor: Redactor,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgraded library still mapped shows "(deleted)": the probe's path pattern does
    not take it, and the snapshot says so."""
    _install(fake_proc, tmp_path, FULL)
    maps = fake_proc / str(PID) / "maps"
    maps.write_text(maps.read_text().replace("libssl.so.3\n", "libssl.so.3 (deleted)\n"))
    ssl = _ssl(collect(PID, redactor, procfs=str(fake_proc)))
    assert (ssl["traceable"], ssl["deleted"]) == (False, True)
    assert "deleted" in ssl["why"]
    assert _probe_attaches(fake_proc, monkeypatch) is False


@needs_gcc
def test_the_library_is_read_through_the_process_root(fake_proc: Path, tmp_path: Path,
                                                      redactor: Redactor) -> None:
    """The file checked is the one in the process's own root (a container's libssl), not
    the path in ours: our /usr/lib has no stub exporting these from a fake root."""
    lib = _install(fake_proc, tmp_path, FULL)
    assert _ssl(collect(PID, redactor, procfs=str(fake_proc)))["traceable"] is True
    lib.write_text("replaced\n")
    assert _ssl(collect(PID, redactor, procfs=str(fake_proc)))["traceable"] is False
