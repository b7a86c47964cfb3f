"""Peer identity from SO_PEERCRED, tested against ourselves and a forked child."""

from __future__ import annotations

import grp
import os
import pwd
import socket
from pathlib import Path

import pytest

from collector.access import auth
from collector.access.auth import AuthError, exe_of, peer_principal, principal_from_cred


@pytest.mark.parametrize("use_peer_pidfd", [True, False])
def test_socketpair_peer_is_us(use_peer_pidfd: bool) -> None:
    a, b = socket.socketpair()
    with a, b:
        p = peer_principal(a, use_peer_pidfd=use_peer_pidfd)
    assert (p.uid, p.gid, p.pid) == (os.getuid(), os.getgid(), os.getpid())
    assert p.user == pwd.getpwuid(os.getuid()).pw_name
    assert os.getgid() in p.groups
    assert grp.getgrgid(os.getgid()).gr_name in p.group_names
    assert p.exe == os.readlink("/proc/self/exe")
    assert p.describe() == f"{p.user} (uid {p.uid})"


def test_unconnected_socket_refused() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, pytest.raises(AuthError):
        peer_principal(s)


def test_credentials_are_those_of_the_connecting_process(tmp_path: Path) -> None:
    """Identity is captured at connect(): it names the child even after the child exits."""
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        go_r, go_w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover (child)
            try:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(path)
                os.read(go_r, 1)
            finally:
                os._exit(0)
        conn, _ = server.accept()
        with conn:
            alive = peer_principal(conn)
            assert alive.pid == child and alive.exe == os.readlink("/proc/self/exe")
            os.write(go_w, b"x")
            os.waitpid(child, 0)
            gone = peer_principal(conn)
            assert gone.pid == child and gone.uid == os.getuid()
            assert gone.exe is None  # never guess an exe for a pid that may be reused
            assert peer_principal(conn, use_peer_pidfd=False).exe is None
        os.close(go_r)
        os.close(go_w)


def test_exe_rejected_when_pidfd_is_dead() -> None:
    """Simulated pid reuse: /proc/PID/exe is readable but the pinned process is gone."""
    child = os.fork()
    if child == 0:  # pragma: no cover (child)
        os._exit(0)
    dead = os.pidfd_open(child)
    os.waitpid(child, 0)
    try:
        assert exe_of(os.getpid(), dead) is None
    finally:
        os.close(dead)
    assert exe_of(os.getpid()) == os.readlink("/proc/self/exe")
    assert exe_of(child) is None


def test_unknown_uid_gets_unbindable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(auth.pwd, "getpwuid", missing)
    p = principal_from_cred(123, 54321, 54321, None)
    assert p.user == "#54321" and p.groups == frozenset({54321})


def test_groups_come_from_user_database() -> None:
    me = pwd.getpwuid(os.getuid())
    p = principal_from_cred(os.getpid(), me.pw_uid, me.pw_gid, None)
    assert set(os.getgrouplist(me.pw_name, me.pw_gid)) <= p.groups
    assert me.pw_gid in p.groups


def test_falls_back_without_so_peerpidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "SO_PEERPIDFD", 9999)  # ENOPROTOOPT, as on kernels < 6.5
    a, b = socket.socketpair()
    with a, b:
        assert peer_principal(a).exe == os.readlink("/proc/self/exe")
