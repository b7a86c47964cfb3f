"""vagrant/provision.sh pieces that run without root: package lists, the client link and the
probe cache warm-up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROVISION = Path(__file__).resolve().parents[2] / "vagrant" / "provision.sh"
# Servers, tracers and toolchains only the tests use: never on the demo's path.
TEST_ONLY = {"postgresql", "redis-server", "nginx-light", "bpftrace", "strace", "gcc", "make",
             "python3-dev", "mariadb-server", "dnsmasq", "dnsmasq-base", "wrk", "prometheus",
             "chromium"}


def packages(which: str) -> list[str]:
    r = subprocess.run(["bash", str(PROVISION), "packages", *([which] if which else [])],
                       capture_output=True, text=True, check=True)
    return r.stdout.split()


def test_package_lists_nest() -> None:
    runtime, demo, test, host = (packages(w) for w in ("runtime", "demo", "test", "host"))
    assert runtime and set(runtime) <= set(demo) <= set(test) < set(host)
    assert packages("") == test, "the VM image bakes `packages`: it must be the test list"
    assert len(host) == len(set(host)), "a package is listed twice"
    assert "python3-bpfcc" in runtime


def test_demo_installs_nothing_only_tests_use() -> None:
    assert not TEST_ONLY & set(packages("demo"))
    assert {"postgresql", "redis-server", "bpftrace", "strace"} <= set(packages("test"))
    assert "chromium" in packages("host") and "chromium" not in packages("test")


def test_unknown_list_is_refused() -> None:
    r = subprocess.run(["bash", str(PROVISION), "packages", "nope"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "usage: provision.sh packages" in r.stderr


# -- the client link (link_client / unlink_client, run on a temp tree) ---------------------
def shell(tmp: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Source provision.sh (it defines, does not run, when sourced) and run `script`."""
    env = {**os.environ, "PERISCOPE_CLIENT_LINK": str(tmp / "bin" / "periscope")}
    return subprocess.run(["bash", "-c", f'source "{PROVISION}"; APP_VENV="{tmp}/venv"; '
                           + script], capture_output=True, text=True, env=env, check=True)


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    client = tmp_path / "venv" / "bin" / "periscope"
    client.parent.mkdir(parents=True)
    client.write_text("#!/bin/sh\n")
    client.chmod(0o755)
    return client


def test_link_made_and_kept(tmp_path: Path, venv: Path) -> None:
    link = tmp_path / "bin" / "periscope"
    r = shell(tmp_path, "link_client")
    assert os.readlink(link) == str(venv) and "linked" in r.stdout
    r = shell(tmp_path, "link_client")  # an upgrade: nothing to say, nothing changed
    assert os.readlink(link) == str(venv) and r.stdout == r.stderr == ""


def test_dangling_link_is_replaced(tmp_path: Path, venv: Path) -> None:
    link = tmp_path / "bin" / "periscope"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "old-venv" / "bin" / "periscope")
    shell(tmp_path, "link_client")
    assert os.readlink(link) == str(venv)


@pytest.mark.parametrize("kind", ["file", "other_link"])
def test_someone_elses_periscope_is_kept(tmp_path: Path, venv: Path, kind: str) -> None:
    link = tmp_path / "bin" / "periscope"
    link.parent.mkdir()
    other = tmp_path / "elsewhere"
    other.write_text("mine\n")
    if kind == "file":
        link.write_text("mine\n")
    else:
        link.symlink_to(other)
    r = shell(tmp_path, "link_client")
    assert "kept" in r.stderr
    assert link.read_text() == "mine\n"
    shell(tmp_path, "unlink_client")  # uninstall never removes what is not ours
    assert link.read_text() == "mine\n"


def test_unlink_removes_only_our_link(tmp_path: Path, venv: Path) -> None:
    link = tmp_path / "bin" / "periscope"
    shell(tmp_path, "link_client")
    shell(tmp_path, "unlink_client")
    assert not link.exists() and not link.is_symlink()
    shell(tmp_path, "unlink_client")  # twice is fine


def test_promtool_is_for_test_setups_only(tmp_path: Path) -> None:
    """provision() extracts promtool (install_promtool) for the host's test run only: never
    on the demo's path, nor in the VM guest's offline provisioning (its image is built
    from `provision test`); every step stubbed, so this runs without root or apt."""
    stubs = "; ".join(f'{f}() {{ echo "{f} $*"; }}' for f in (
        "check_distro", "install_packages", "install_headers", "mount_fs", "make_venv",
        "install_promtool"))
    for which, wanted in (("demo", False), ("test", False), ("host", True)):
        r = shell(tmp_path, f"{stubs}; provision {which}")
        assert ("install_promtool" in r.stdout) is wanted, (which, r.stdout)


# -- the probe cache warm-up at install (warm_cache, with a stand-in periscoped) -----------
def _daemon(tmp: Path, rc: int) -> Path:
    """A periscoped that records its arguments and exits rc."""
    daemon = tmp / "venv" / "bin" / "periscoped"
    daemon.parent.mkdir(parents=True, exist_ok=True)
    daemon.write_text(f'#!/bin/sh\necho "$@" >"{tmp}/args"\nexit {rc}\n')
    daemon.chmod(0o755)
    return daemon


def test_the_install_warms_the_cache_with_the_installed_daemon(tmp_path: Path) -> None:
    _daemon(tmp_path, 0)
    r = shell(tmp_path, "warm_cache")
    # No path flags: it reads /etc/periscope/periscope.toml and its state dir like the unit.
    assert (tmp_path / "args").read_text().split() == ["--warm-cache"]
    assert "probe cache warm" in r.stdout and "NOTICE" not in r.stderr


def test_a_failed_warm_up_still_installs(tmp_path: Path) -> None:
    """A host where the compile fails: a notice, and the install goes on (set -e holds)."""
    _daemon(tmp_path, 1)
    r = shell(tmp_path, "set -euo pipefail; warm_cache; echo after")
    assert r.stdout.rstrip().endswith("after")
    assert "NOTICE: could not warm the probe cache" in r.stderr
    assert "probe cache warm (" not in r.stdout
