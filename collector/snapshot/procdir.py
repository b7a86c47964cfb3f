"""One process's /proc/PID directory, opened once, read through that directory fd."""

from __future__ import annotations

import errno
import os

from collector.errors import PeriscopeError

MAX_READ = 8 << 20  # bytes read from one procfs file at most (maps of a huge process ~6 MiB)

# errnos that mean "the process (or the thread, fd, ...) is gone": expected races.
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH})


class SnapshotError(PeriscopeError):
    """A snapshot could not be taken at all (per-section problems are reported, not raised)."""


class NoSuchProcess(SnapshotError):
    """No process with that pid (or it exited before the snapshot began)."""


class ProcDir:
    """/proc/PID opened as a directory fd; every read is relative to it.

    A /proc/PID directory fd stays bound to the process it was opened for: once that
    process is gone, reads through it fail with ESRCH/ENOENT. Opening each file by path
    instead could, after the pid is reused, read another process the caller may not be
    allowed to see. Only regular procfs reads and readlinks: never a debugger attach, never
    /proc/PID/mem.
    """

    def __init__(self, procfs: str, pid: int) -> None:
        self.procfs = procfs
        self.pid = pid
        try:
            self.fd = os.open(f"{procfs}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            if err.errno in GONE_ERRNOS or err.errno == errno.ENOTDIR:
                raise NoSuchProcess(f"no process with pid {pid}") from err
            raise SnapshotError(f"cannot open {procfs}/{pid}: {err.strerror}") from err

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ProcDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def magic(self) -> str:
        """A path that reaches this directory through our fd (for APIs that take a path)."""
        return f"/proc/self/fd/{self.fd}"

    def read(self, name: str, limit: int = MAX_READ) -> tuple[bytes, bool]:
        """Up to limit bytes of a file, and whether it was longer."""
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK,
                     dir_fd=self.fd)
        try:
            chunks: list[bytes] = []
            total = 0
            while total <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        return data[:limit], len(data) > limit

    def text(self, name: str, limit: int = MAX_READ) -> str:
        """A procfs text file (truncated at limit); bytes that are not UTF-8 kept as
        surrogate escapes, so redaction sees them and clean() shows them."""
        return self.read(name, limit)[0].decode("utf-8", "surrogateescape")

    def head(self, name: str, size: int = 4096) -> str:
        """The start of a file in one read(): enough for stat and fdinfo, whose fields
        of interest come first. Half the syscalls of read(), which goes on to EOF: it
        shows with 1,000 fds."""
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK,
                     dir_fd=self.fd)
        try:
            return os.read(fd, size).decode("utf-8", "surrogateescape")
        finally:
            os.close(fd)

    def readlink(self, name: str) -> str:
        return os.readlink(name, dir_fd=self.fd)

    def listdir(self, name: str) -> list[str]:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def stat(self, name: str) -> os.stat_result:
        """stat() following the link: for fd/N, the open file itself (nothing is opened)."""
        return os.stat(name, dir_fd=self.fd)

    def state(self) -> str | None:
        """The process state letter (R, S, D, Z, ...), or None once it is gone."""
        try:
            raw = self.head("stat")
        except OSError:
            return None
        end = raw.rfind(")")
        return raw[end + 2:end + 3] if end >= 0 else None

    def alive(self) -> bool:
        """Still running: not gone, not a zombie (a zombie's fds, maps and environ read as
        empty, which must not pass for a process with none)."""
        return self.state() not in (None, "Z", "X", "x")
