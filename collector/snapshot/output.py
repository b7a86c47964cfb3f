"""write_snapshot(): a snapshot as a JSON file, written atomically, readable by its owner only
(write_private: the same for any bytes, e.g. a flame graph)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import orjson


def write_snapshot(path: str | os.PathLike[str], snapshot: dict[str, Any]) -> None:
    """Write the snapshot as indented JSON to path: a temp file (mode 0600 from creation,
    whatever the umask) in the same directory, fsynced, then renamed over path, so a
    reader never sees half a file and the data is never world-readable, not even briefly."""
    write_private(path, orjson.dumps(snapshot,
                                     option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write data to path atomically, readable by its owner only (see write_snapshot)."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # the rename itself survives a crash
    finally:
        os.close(dfd)
