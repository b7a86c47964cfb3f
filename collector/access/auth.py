"""Peer identity from the kernel (SO_PEERCRED at connect time), never from the request."""

from __future__ import annotations

import contextlib
import grp
import os
import platform
import pwd
import select
import socket
import struct
from dataclasses import dataclass

from collector.errors import AuthError

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
# SO_PEERPIDFD (Linux >= 6.5) hands us a pidfd for the very process that called
# connect(), closing the pid-reuse window entirely. Python may not export the
# constant yet; 77 is its value in asm-generic, used by these architectures.
_GENERIC_ARCHES = {"x86_64", "i686", "i386", "aarch64", "armv7l", "riscv64", "s390x"}
SO_PEERPIDFD: int | None = getattr(socket, "SO_PEERPIDFD", None) or (
    77 if platform.machine() in _GENERIC_ARCHES else None
)


@dataclass(frozen=True)
class IdpIdentity:
    """An identity-provider login the daemon verified (OIDC ID token), on top of SO_PEERCRED.

    Never the token itself: only what may be audited (subject, issuer, a hash prefix).
    """

    subject: str
    issuer: str
    username: str                  # the claim that matched the Unix user
    groups: frozenset[str]         # IdP groups (policy [idp_groups] can bind them to roles)
    token_hash: str                # first 16 hex digits of the token's SHA-256
    expires: float

    def audit(self) -> dict[str, str]:
        """What an audit record carries about this login."""
        return {"sub": self.subject, "iss": self.issuer, "token_sha256": self.token_hash}


@dataclass(frozen=True)
class Principal:
    """Who is on the other end of a connection, as the kernel and user database say.

    `idp` is set once the connection presented a verified ID token: an extra proof for the
    same Unix user, never a replacement for SO_PEERCRED.
    """

    uid: int
    gid: int
    user: str
    groups: frozenset[int]
    group_names: frozenset[str]
    pid: int
    exe: str | None
    idp: IdpIdentity | None = None

    def describe(self) -> str:
        return f"{self.user} (uid {self.uid})"


def _user_name(uid: int) -> tuple[str, int | None]:
    """(name, primary gid) from the user database; "#UID" when the uid has no entry."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        # A uid without a passwd entry (container, deleted user): it can match no
        # user binding, since policy names never contain '#'.
        return f"#{uid}", None
    return pw.pw_name, pw.pw_gid


def _group_names(gids: frozenset[int]) -> frozenset[str]:
    names = set()
    for gid in gids:
        with contextlib.suppress(KeyError):  # unnamed gid: cannot be bound by name
            names.add(grp.getgrgid(gid).gr_name)
    return frozenset(names)


def principal_from_cred(pid: int, uid: int, gid: int, exe: str | None) -> Principal:
    """Build a Principal from kernel credentials plus the user database.

    groups = the peer's gid at connect time, the user's primary gid and the
    supplementary groups the user database lists for the user (getgrouplist).
    """
    user, primary = _user_name(uid)
    gids = {gid}
    if primary is not None:
        gids.add(primary)
        with contextlib.suppress(OSError):  # NSS failure: fall back to the kernel's gids
            gids.update(os.getgrouplist(user, primary))
    groups = frozenset(gids)
    return Principal(uid, gid, user, groups, _group_names(groups), pid, exe)


def _pidfd_alive(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def _pid_of_pidfd(pidfd: int) -> int | None:
    try:
        with open(f"/proc/self/fdinfo/{pidfd}", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pid:"):
                    pid = int(line.split()[1])
                    return pid if pid > 0 else None
    except (OSError, ValueError):
        return None
    return None


def exe_of(pid: int, pidfd: int | None = None) -> str | None:
    """Path of the executable of `pid`, or None if it can't be read reliably.

    The pidfd pins the process: we read /proc/PID/exe, then check the pidfd is
    still alive. If the process exited meanwhile the pid may already name
    another process, so the path read is not trusted and None is returned.
    """
    own = pidfd is None
    if pidfd is None:
        try:
            pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):  # exited already, or no pidfd support
            return None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        return exe if _pidfd_alive(pidfd) else None
    except OSError:  # kernel thread, gone, or no permission: no exe rather than a guess
        return None
    finally:
        if own:
            os.close(pidfd)


def _peer_pidfd(sock: socket.socket) -> int | None:
    if SO_PEERPIDFD is None:
        return None
    try:
        return int(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
    except OSError:  # kernel < 6.5 (ENOPROTOOPT): fall back to pidfd_open(pid)
        return None


def peer_principal(sock: socket.socket, *, use_peer_pidfd: bool = True) -> Principal:
    """Identify the peer of a connected AF_UNIX socket.

    uid/gid/pid are the credentials the kernel recorded when the peer called
    connect() (or socketpair()); nothing the client sends can change them.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError as err:
        raise AuthError(f"cannot read peer credentials: {err.strerror}") from err
    pid, uid, gid = _UCRED.unpack(raw)
    if uid < 0 or gid < 0:  # the kernel reports (uid_t)-1 when there is no peer
        raise AuthError("peer credentials unavailable")
    pidfd = _peer_pidfd(sock) if use_peer_pidfd else None
    try:
        # A pidfd naming another pid: the peer exited, or lives in another pid namespace.
        stale = pidfd is not None and _pid_of_pidfd(pidfd) != pid
        exe = exe_of(pid, pidfd) if pid > 0 and not stale else None
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return principal_from_cred(pid, uid, gid, exe)
