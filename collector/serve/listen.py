"""Create the client socket race-free: bind in a private dir, set mode/owner, rename into place."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import socket
import stat
import tempfile

from collector.errors import SocketPathError

log = logging.getLogger("periscope.listen")

def _check_existing(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise SocketPathError(f"{path} is a symlink; refusing to start (possible hijack)")
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(f"{path} exists and is not a socket; refusing to replace it")
    if st.st_uid != os.geteuid():
        raise SocketPathError(f"{path} is owned by uid {st.st_uid}, not us; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(path)
    except OSError:
        log.info("removing stale socket %s", path)  # nobody listens: left by a crash
        return
    finally:
        probe.close()
    raise SocketPathError(f"{path} is live: another periscoped is running")


def listen_unix(path: str, group: str | None, backlog: int = 512) -> socket.socket:
    """Return a listening socket at `path`, mode 0660, group `group` (0600 if absent)."""
    fds = os.environ.get("LISTEN_FDS")
    if fds and os.environ.get("LISTEN_PID") == str(os.getpid()) and int(fds) >= 1:
        return socket.socket(fileno=3)  # systemd socket activation: it made the socket
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o755, exist_ok=True)
    pst = os.lstat(parent)
    if stat.S_ISLNK(pst.st_mode) or pst.st_uid != os.geteuid() or pst.st_mode & 0o022:
        raise SocketPathError(f"{parent} must be a real directory owned by us, not group/world "
                              "writable")
    _check_existing(path)
    gid = None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            log.warning("group %r does not exist: socket is root-only (0600)", group)
    private = tempfile.mkdtemp(prefix=".periscope-", dir=parent)  # 0700
    tmp = os.path.join(private, "sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp)
        if gid is not None:
            os.chown(tmp, -1, gid)
        os.chmod(tmp, 0o660 if gid is not None else 0o600)
        sock.listen(backlog)
        os.rename(tmp, path)  # atomic: the path never names a socket with the wrong mode
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(private)
    return sock
