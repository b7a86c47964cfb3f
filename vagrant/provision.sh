#!/usr/bin/env bash
# periscope's one install path: used by the README, .ci/run, vagrant/ and the VM tier.
#
#   provision.sh            install system packages (the test list), kernel headers, mounts
#                           and the dev venv
#   provision.sh demo       only what the daemon and the demo need (no test servers, no dev
#                           tools), then start periscoped (embedded defaults) and trace a demo
#   provision.sh test       everything (plus the host-only test packages), then run the full
#                           test suite (what .ci/run calls)
#   provision.sh install    install periscoped for production: /opt/periscope/venv, the systemd
#                           unit, /etc/periscope defaults (never overwriting edits), group
#                           periscope, the client on PATH (/usr/local/bin/periscope), and
#                           the probes compiled into the state dir's cache
#                           (PERISCOPE_WHEEL=FILE: from a wheel of this checkout built on
#                           another host of the same release, instead of building here)
#   provision.sh uninstall [--purge]
#                           remove that again; state and audit log stay unless --purge
#   provision.sh packages [runtime|demo|test|host]
#                           print a package list (default: test, the VM image's); no root
#   provision.sh deps-stamp what the dev venv's install is stamped with; no root
#
# Idempotent: every step checks before it acts. Needs root. Offline works when
# the packages are already installed (and pip has a local index or wheelhouse).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PERISCOPE_VENV:-$REPO/.venv}
PY=/usr/bin/python3   # Debian's python: the one python3-bpfcc is built for
export DEBIAN_FRONTEND=noninteractive

say()  { printf '\033[1m==> %s\033[0m\n' "$*"; }
note() { printf 'NOTICE: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Four lists, each adding to the one before: `install` takes RUNTIME, `demo` adds DEMO,
# the bare command (the dev setup, and the VM image) adds TEST, `test` adds HOST_TEST.
# Keep the demo's path short: anything only a test uses (a server it starts, a tracer
# it compares with, a compiler) goes in TEST.
#
# RUNTIME: what the daemon needs on a production host: bcc from the distro (the PyPI
# "bcc" is another project), venv support, the distro's pip and setuptools (the
# production venv borrows them instead of bootstrapping its own), python3-systemd
# (audit anchors as structured journal fields), bpftool for the operator.
RUNTIME_PACKAGES=(python3-bpfcc python3-venv python3-pip python3-setuptools python3-wheel
    python3-systemd bpftool)
# DEMO: what `provision.sh demo` adds. Its workload is Python's own http.server and
# http.client, so nothing today; a demo that needs more adds it here.
DEMO_PACKAGES=()
# TEST: what development and the test suite add, one line per purpose; extend here.
# The VM tier bakes RUNTIME + DEMO + TEST into its guest image.
TEST_PACKAGES=(
    python3-dev make gcc libc6-dev            # toolchain: bench workloads, C probes' unit tests
    strace bpftrace                           # differential tests against other tracers
    redis-server nginx-light postgresql       # workloads the root tier traces
    curl ca-certificates openssl              # clients and TLS material the tests use
    procps iproute2 util-linux                # tools the tests and the VM tier call
)
# HOST_TEST: only the host's test run (`provision.sh test`), not the VM guest image:
# headless chromium opens the profile's flame graph in the root tier; binutils
# (objcopy, strip) and xz-utils build the MiniDebugInfo file of a unit test.
# The L7 root tests and bench (tests/root/test_l7_*.py, bench/l7_http.py) add MariaDB, a
# DNS server and client, and an HTTP load generator.
HOST_TEST_PACKAGES=(chromium binutils xz-utils
    mariadb-server mariadb-client dnsmasq-base bind9-dnsutils wrk)

# packages LIST: runtime, demo, test (the default: what the VM image bakes, and what the
# bare command installs) or host (test + HOST_TEST: what `provision.sh test` installs).
packages() {
    case "${1:-test}" in
        runtime) printf '%s\n' "${RUNTIME_PACKAGES[@]}" ;;
        demo) printf '%s\n' "${RUNTIME_PACKAGES[@]}" "${DEMO_PACKAGES[@]}" ;;
        test) printf '%s\n' "${RUNTIME_PACKAGES[@]}" "${DEMO_PACKAGES[@]}" "${TEST_PACKAGES[@]}" ;;
        host) packages test; printf '%s\n' "${HOST_TEST_PACKAGES[@]}" ;;
        *) die "usage: provision.sh packages [runtime|demo|test|host]" ;;
    esac
}

# deps_stamp: what the dev venv's editable install was made from (its dependencies and
# build config: pyproject.toml, setup.py); the VM image stamps its baked venv with it.
deps_stamp() {
    cat "$REPO/pyproject.toml" "$REPO/setup.py" | sha256sum | cut -d' ' -f1
}

# `packages` and `deps-stamp` need no root: the VM tier bakes the test list and a venv
# stamped this way into its guest image.
if [ "${1:-}" = packages ]; then
    packages "${2:-test}"
    exit 0
fi
if [ "${1:-}" = deps-stamp ]; then
    deps_stamp
    exit 0
fi

check_distro() {
    [ -r /etc/os-release ] || die "cannot read /etc/os-release; supported: Debian 12, Ubuntu 22.04/24.04"
    # shellcheck disable=SC1091
    . /etc/os-release
    case "${ID}:${VERSION_ID:-}" in
        debian:12|debian:13|ubuntu:22.04|ubuntu:24.04) ;;
        *) die "unsupported distribution '${PRETTY_NAME:-$ID}'; supported: Debian 12, Ubuntu 22.04/24.04" ;;
    esac
}

APT_UPDATED=0
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ $APT_UPDATED -eq 0 ]; then apt-get update -q; APT_UPDATED=1; fi
    say "apt-get install ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_packages() {
    local list
    mapfile -t list < <(packages "$1")
    apt_install "${list[@]}"
}

headers_ok() {
    # bcc needs the arch build tree (generated headers) and the source tree (kconfig.h).
    local m=/lib/modules/$1
    [ -e "$m/build/include/generated/autoconf.h" ] && [ -e "$m/source/include/linux/kconfig.h" ]
}

install_headers() {
    local kver
    kver=$(uname -r)
    headers_ok "$kver" && return 0
    if apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
        apt_install "linux-headers-$kver"
        headers_ok "$kver" && return 0
    fi
    # No exact headers: our probes read only tracepoint args, user memory and
    # helpers, never kernel structs, so the distro's generic headers suffice.
    # shellcheck disable=SC1091
    . /etc/os-release
    local generic=linux-headers-amd64
    [ "$(dpkg --print-architecture)" = arm64 ] && generic=linux-headers-arm64
    [ "$ID" = ubuntu ] && generic=linux-headers-generic
    apt_install "$generic"
    local build src
    build=$(find /usr/src -maxdepth 1 -name 'linux-headers-*' -type d -exec test -e '{}/include/generated/autoconf.h' ';' -print | sort -V | tail -n 1)
    src=$(find /usr/src -maxdepth 1 -name 'linux-headers-*' -type d -exec test -e '{}/include/linux/kconfig.h' ';' -print | sort -V | tail -n 1)
    { [ -n "$build" ] && [ -n "$src" ]; } || die "no usable kernel headers under /usr/src after installing $generic"
    mkdir -p "/lib/modules/$kver"
    ln -sfn "$build" "/lib/modules/$kver/build"
    ln -sfn "$src" "/lib/modules/$kver/source"
    note "no linux-headers-$kver package; linked generic headers $build (+ $src) at /lib/modules/$kver (fine: probes read no kernel structs)"
    headers_ok "$kver" || die "kernel headers still incomplete at /lib/modules/$kver"
}

mount_fs() {
    mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null \
        || note "could not mount tracefs at /sys/kernel/tracing"
    mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null \
        || note "could not mount debugfs at /sys/kernel/debug"
}

# Prints which hot-path pieces run as C and which as their Python twins (setup.py).
NATIVE_CHECK='from collector.serve.native import native; print(" ".join(f"{k}={v}" for k, v in native().items()))'
# The dev setup needs every C twin; the mypyc build of the L7 parsers only on Python >= 3.11
# (the version pyproject.toml's mypy targets), where its `make unit` then tests both builds.
DEV_NATIVE_CHECK='import sys; from collector.serve.native import native
sys.exit(any(v == "python" and (k != "l7_parsers" or sys.version_info >= (3, 11)) for k, v in native().items()))'

# make_venv [runtime]: the repository's venv, editable. With "runtime" (the demo) only
# the daemon's dependencies, without the dev tools (linters, test runner, plotting).
# The stamp is deps_stamp, plus " runtime" when only those are installed.
make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating venv $VENV (sees the distro's bcc, pip and setuptools)"
        # --without-pip, as for the production venv: bootstrapping a private pip took
        # 8-23 s here, a third of the demo's setup; the distro's pip does the job.
        "$PY" -m venv --system-site-packages --without-pip "$VENV"
    fi
    local stamp="$VENV/.periscope-deps" want have
    want=$(deps_stamp)
    have=$(cat "$stamp" 2>/dev/null || true)
    # With build isolation (unlike `install`): an editable install needs setuptools >= 64,
    # newer than Ubuntu 22.04's.
    local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
    if [ "${1:-}" = runtime ]; then
        if [ "$have" != "$want" ] && [ "$have" != "$want runtime" ]; then
            say "installing periscope and its runtime dependencies into $VENV"
            "${pip[@]}" -e "$REPO"
            echo "$want runtime" >"$stamp"
        fi
    elif [ "$have" != "$want" ]; then
        say "installing periscope and its Python dependencies into $VENV"
        "${pip[@]}" -e "${REPO}[dev]"
        echo "$want" >"$stamp"
    fi
    "$VENV/bin/python" -c 'import bcc' 2>/dev/null || die "venv cannot import bcc (python3-bpfcc)"
    # The C twins in place, rebuilt only where a source is newer than its built module (a
    # C change needs no reinstall; optional: no compiler is a warning, not a failure).
    (cd "$REPO" && "$VENV/bin/python" setup.py -q build_ext --inplace >/dev/null 2>&1) \
        || note "the C twins did not build here: the Python ones will run"
    # The test setup has gcc and python3-dev (TEST_PACKAGES): its C twins must have built,
    # or the suite would test only the Python ones.
    if [ "${1:-}" != runtime ]; then
        "$VENV/bin/python" -c "$DEV_NATIVE_CHECK" \
            || die "the C twins did not build: $("$VENV/bin/python" -c "$NATIVE_CHECK")"
    fi
}

# promtool, which the root tier runs on a live /metrics scrape (`promtool check metrics`),
# is extracted from Debian's (or Ubuntu's) prometheus package rather than installed: the
# package would also create and start a prometheus service and pull in its web UI's
# JavaScript, none of which a test needs. The host's test run only (`provision.sh test`).
PROMTOOL=${PERISCOPE_PROMTOOL:-/usr/local/bin/promtool}
install_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    [ -x "$PROMTOOL" ] && return 0
    local tmp
    tmp=$(mktemp -d)
    chmod 0755 "$tmp"   # apt's download sandbox user writes here
    if ! (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1); then
        if [ $APT_UPDATED -eq 0 ]; then apt-get update -q; APT_UPDATED=1; fi
        (cd "$tmp" && apt-get download -q prometheus) || { rm -rf "$tmp"; die "cannot download the prometheus package (for promtool)"; }
    fi
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    install -D -m 0755 "$tmp/root/usr/bin/promtool" "$PROMTOOL"
    rm -rf "$tmp"
    say "installed $PROMTOOL (extracted from the prometheus package; no service)"
}

# provision LIST: the packages of LIST (demo, test or host), kernel headers, mounts and
# the venv (with the runtime dependencies only, for the demo).
provision() {
    check_distro
    install_packages "$1"
    install_headers
    mount_fs
    if [ "$1" = demo ]; then make_venv runtime; else make_venv; fi
    # Like chromium, only the host's test run uses it: the VM guest provisions offline.
    if [ "$1" = host ]; then install_promtool; fi
}

# --- production install (make install / make uninstall) -------------------------------------
PREFIX=/opt/periscope
APP_VENV=$PREFIX/venv
SHARE=$PREFIX/share
ETC=/etc/periscope
STATE=/var/lib/periscope
UNIT=periscoped.service
UNIT_DIR=/usr/local/lib/systemd/system      # local installs; /etc/systemd/system stays the admin's
SYSUSERS=/usr/local/lib/sysusers.d/periscope.conf
SYSCTL=/usr/local/lib/sysctl.d/60-periscope.conf
# The client on every user's PATH; the daemon stays in the venv (the unit names it).
CLIENT_LINK=${PERISCOPE_CLIENT_LINK:-/usr/local/bin/periscope}
# Default config files shipped in the repository, installed into /etc/periscope.
CONFFILES=(periscope.toml policy.toml)

have_systemd() { [ -d /run/systemd/system ]; }

# link_client: CLIENT_LINK -> the venv's periscope. A link of ours (or a dangling one)
# is replaced; a file, or a link to another periscope that exists, is left alone.
link_client() {
    local target=$APP_VENV/bin/periscope current
    current=$(readlink "$CLIENT_LINK" 2>/dev/null || true)
    if [ "$current" = "$target" ]; then
        return 0
    elif [ -L "$CLIENT_LINK" ] && [ -e "$CLIENT_LINK" ]; then
        note "kept $CLIENT_LINK -> $current (not ours); the client is $target"
    elif [ -e "$CLIENT_LINK" ]; then
        note "kept $CLIENT_LINK (not a link of ours); the client is $target"
    else
        mkdir -p "$(dirname "$CLIENT_LINK")"
        ln -sfn "$target" "$CLIENT_LINK"
        say "linked $CLIENT_LINK -> $target"
    fi
}

# unlink_client: remove CLIENT_LINK only if it still points at our venv.
unlink_client() {
    if [ "$(readlink "$CLIENT_LINK" 2>/dev/null || true)" = "$APP_VENV/bin/periscope" ]; then
        rm -f "$CLIENT_LINK"
    fi
}

# install_conffile NAME: dpkg-style. A missing file is installed; a file that
# still equals the previously shipped default is upgraded; a locally edited
# file is kept, and if the default changed, the new one lands next to it as NAME.new.
install_conffile() {
    local name=$1 src dst old
    src=$REPO/collector/defaults/$name
    dst=$ETC/$name
    old=$SHARE/defaults/$name
    if [ ! -f "$src" ]; then
        note "no collector/defaults/$name in this checkout; periscoped uses its embedded defaults"
        return 0
    fi
    if [ ! -e "$dst" ]; then
        install -m 0644 "$src" "$dst"; say "installed $dst"
    elif cmp -s "$src" "$dst"; then
        rm -f "$dst.new"
    elif [ -f "$old" ] && cmp -s "$old" "$src"; then
        :   # locally edited, and the default did not change: nothing to say
    elif [ -f "$old" ] && cmp -s "$old" "$dst"; then
        install -m 0644 "$src" "$dst"; rm -f "$dst.new"; say "updated $dst (it had no local edits)"
    else
        install -m 0644 "$src" "$dst.new"
        note "kept your edited $dst; the new default is $dst.new (diff them and merge)"
    fi
    install -D -m 0644 "$src" "$old"
}

# warm_cache: compile the probes once, now, with the installed config into the unit's state
# dir (periscoped --warm-cache reads /etc/periscope/periscope.toml like the unit), so the
# unit's first start loads them from the cache instead of compiling (seconds on metal,
# 10-20 s under emulation). Attaches nothing. A host where the compile fails still installs:
# the daemon compiles at start, as without a warm-up, and its log says why.
warm_cache() {
    say "compiling the probes into the daemon's probe cache (once per kernel, bcc and periscope version)"
    local t0=$SECONDS
    if "$APP_VENV/bin/periscoped" --warm-cache; then
        say "probe cache warm ($((SECONDS - t0)) s): the first start and session need no compile"
    else
        note "could not warm the probe cache; periscoped will compile the probes when it starts" \
            "(check: sudo $APP_VENV/bin/periscoped --check)"
    fi
}

install_app() {
    check_distro
    apt_install "${RUNTIME_PACKAGES[@]}"
    install_headers
    mount_fs
    if [ ! -x "$APP_VENV/bin/python" ]; then
        say "creating $APP_VENV (sees the distro's bcc, pip and setuptools)"
        mkdir -p "$PREFIX"
        # --without-pip: the distro's pip, seen through --system-site-packages,
        # installs into the venv; bootstrapping a private pip costs more than
        # the whole install on a slow machine.
        "$PY" -m venv --system-site-packages --without-pip "$APP_VENV"
    fi
    local pip=("$APP_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir)
    if [ -n "${PERISCOPE_WHEEL:-}" ]; then
        # A wheel of this checkout built elsewhere (same distro release: no compiler needed
        # here). Forced in: its version is this checkout's, installed or not.
        [ -f "$PERISCOPE_WHEEL" ] || die "PERISCOPE_WHEEL=$PERISCOPE_WHEEL: no such file"
        say "installing periscope from $PERISCOPE_WHEEL into $APP_VENV"
        "${pip[@]}" --no-deps --force-reinstall "$PERISCOPE_WHEEL"
        "${pip[@]}" "$PERISCOPE_WHEEL"  # its dependencies
    else
        say "installing periscope from $REPO into $APP_VENV"
        # --no-build-isolation: build with the distro's setuptools instead of
        # downloading one: faster, and works offline. mypy (its mypyc compiles the L7
        # parsers, setup.py) is fetched for the build only, outside the venv; without
        # it the parsers run from their sources.
        local build_deps
        build_deps=$(mktemp -d)
        if ! "$APP_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir \
                --target "$build_deps" "mypy>=1.8" >/dev/null 2>&1; then
            note "mypy could not be fetched: the L7 parsers will run from their sources"
        fi
        PYTHONPATH="$build_deps" "${pip[@]}" --no-build-isolation --upgrade "$REPO"
        rm -rf "$build_deps"
    fi
    "$APP_VENV/bin/python" -c 'import bcc' 2>/dev/null || die "$APP_VENV cannot import bcc (python3-bpfcc)"
    local hot
    hot=$("$APP_VENV/bin/python" -c "$NATIVE_CHECK")
    case "$hot" in
        *python*) say "hot path: $hot (the C twins did not build: no gcc or python3-dev" \
            "here; the daemon works, at more CPU per event)" ;;
        *) say "hot path: $hot" ;;
    esac
    [ -x "$APP_VENV/bin/periscoped" ] || die "$APP_VENV/bin/periscoped missing after pip install"
    link_client
    if ! "$APP_VENV/bin/periscoped" --check >/dev/null 2>&1; then
        note "periscoped --check reports a problem on this host; see: sudo $APP_VENV/bin/periscoped --check"
    fi
    mkdir -p "$SHARE/doc"
    for d in install.md operations.md; do
        if [ -f "$REPO/docs/$d" ]; then install -m 0644 "$REPO/docs/$d" "$SHARE/doc/$d"; fi
    done

    # The group that may use the client socket (sysusers.d keeps it on image-based systems).
    install -D -m 0644 "$REPO/systemd/periscope.sysusers" "$SYSUSERS"
    if ! getent group periscope >/dev/null; then
        if command -v systemd-sysusers >/dev/null; then systemd-sysusers "$SYSUSERS"; fi
        getent group periscope >/dev/null || groupadd --system periscope
        say "created group periscope (add users with: usermod -aG periscope USER)"
    fi

    # Debian/Ubuntu kernels: perf_event_paranoid > 2 would force CAP_SYS_ADMIN on
    # the daemon (see systemd/periscope-sysctl.conf); 2 is the upstream default.
    install -D -m 0644 "$REPO/systemd/periscope-sysctl.conf" "$SYSCTL"
    local paranoid
    paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 2)
    if [ "$paranoid" -gt 2 ]; then
        sysctl -q -w kernel.perf_event_paranoid=2
        note "set kernel.perf_event_paranoid from $paranoid to 2 (kept across reboots by $SYSCTL)," \
            "so periscoped needs CAP_PERFMON, not CAP_SYS_ADMIN; see docs/operations.md"
    fi

    install -d -m 0755 "$ETC"
    local f
    for f in "${CONFFILES[@]}"; do install_conffile "$f"; done

    # After the config (its capture settings are in the cache key), before a restart
    # of a running daemon (which then starts warm).
    warm_cache

    install -D -m 0644 "$REPO/systemd/$UNIT" "$UNIT_DIR/$UNIT"
    if have_systemd; then
        systemctl daemon-reload
        systemctl enable "$UNIT" >/dev/null 2>&1
        # An upgrade: restart a running daemon so it runs the new code and unit.
        systemctl try-restart "$UNIT"
        say "installed and enabled $UNIT; start it with: systemctl start periscoped"
    else
        note "systemd is not PID 1 here: installed $UNIT_DIR/$UNIT but did not enable it"
    fi
}

uninstall_app() {
    local purge=0
    case "${1:-}" in
        "") ;;
        --purge) purge=1 ;;
        *) die "usage: provision.sh uninstall [--purge]" ;;
    esac
    if have_systemd && [ -e "$UNIT_DIR/$UNIT" ]; then
        systemctl disable --now "$UNIT" >/dev/null 2>&1 || true
    fi
    rm -f "$UNIT_DIR/$UNIT" "$SYSUSERS"
    unlink_client
    if [ -e "$SYSCTL" ]; then
        rm -f "$SYSCTL"
        note "removed $SYSCTL; kernel.perf_event_paranoid stays $(cat /proc/sys/kernel/perf_event_paranoid)" \
            "until reboot (or: sysctl --system)"
    fi
    if have_systemd; then
        systemctl daemon-reload
        systemctl reset-failed "$UNIT" >/dev/null 2>&1 || true
    fi
    local f
    for f in "${CONFFILES[@]}"; do
        rm -f "$ETC/$f.new"     # a shipped default, never local data
        [ -e "$ETC/$f" ] || continue
        if [ $purge -eq 1 ] || { [ -f "$SHARE/defaults/$f" ] && cmp -s "$SHARE/defaults/$f" "$ETC/$f"; }; then
            rm -f "$ETC/$f"
        else
            note "kept your edited $ETC/$f (uninstall --purge removes it)"
        fi
    done
    rm -rf "$PREFIX"
    if [ $purge -eq 1 ]; then
        rm -rf "$ETC" "$STATE"
        if getent group periscope >/dev/null; then groupdel periscope; fi
        say "purged periscope: program, unit, config, state, audit log and group"
    else
        rmdir "$ETC" 2>/dev/null || true
        say "removed periscope; kept $STATE (events, audit log, grants) and group periscope"
    fi
}

main() {
    local cmd=${1:-}
    case "$cmd" in
        -h|--help) sed -n '2,21p' "$0"; return 0 ;;
        ""|install-deps|demo|test|install|uninstall) ;;
        *) die "unknown command '$cmd' (try --help)" ;;
    esac
    [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 $*): loading eBPF programs needs CAP_BPF/CAP_PERFMON"
    case "$cmd" in
        ""|install-deps) provision test ;;
        # The demo runs from the venv directly: `make` is a test-only package.
        demo) provision demo; cd "$REPO"; exec "$VENV/bin/python" -m collector.daemon.demo ;;
        test) provision host; shift; cd "$REPO"; exec make test ;;
        install) install_app ;;
        uninstall) shift; uninstall_app "$@" ;;
    esac
}

# Sourced (by a test of its functions), define them and stop here.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
