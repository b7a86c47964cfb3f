#!/usr/bin/env bash
# periscope's one install path: used by the README, .ci/run, vagrant/ and the VM tier.
#
#   provision.sh            install system packages, kernel headers, mounts and the dev venv
#   provision.sh demo       ... then start periscoped (embedded defaults) and trace a demo workload
#   provision.sh test       ... then run the full test suite (what .ci/run calls)
#
# Idempotent: every step checks before it acts. Needs root.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PERISCOPE_VENV:-$REPO/.venv}
PY=/usr/bin/python3   # Debian's python: the one python3-bpfcc is built for
export DEBIAN_FRONTEND=noninteractive

say()  { printf '\033[1m==> %s\033[0m\n' "$*"; }
note() { printf 'NOTICE: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 $*): loading eBPF programs needs CAP_BPF/CAP_PERFMON"

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
    # bcc from the distro (the PyPI "bcc" is another project); workloads the tests start.
    apt_install python3-bpfcc python3-venv python3-dev bpftool strace bpftrace make gcc libc6-dev \
        curl ca-certificates openssl redis-server nginx-light postgresql procps iproute2 util-linux
}

install_headers() {
    local kver build
    kver=$(uname -r)
    build=/lib/modules/$kver/build
    if [ -e "$build/include/linux/kconfig.h" ] || [ -e "$build/include/generated/autoconf.h" ]; then
        return 0
    fi
    if apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
        apt_install "linux-headers-$kver"
        return 0
    fi
    # No exact headers: our probes read only tracepoint args, user memory and
    # helpers, never kernel structs, so the distro's generic headers suffice.
    local generic=linux-headers-amd64
    [ "$(dpkg --print-architecture)" = arm64 ] && generic=linux-headers-arm64
    # shellcheck disable=SC1091
    . /etc/os-release
    [ "$ID" = ubuntu ] && generic=linux-headers-generic
    apt_install "$generic"
    local hdr
    hdr=$(find /usr/src -maxdepth 1 -name 'linux-headers-*' ! -name '*-common*' -type d | sort -V | tail -n 1)
    [ -n "$hdr" ] || die "no kernel headers found under /usr/src after installing $generic"
    mkdir -p "/lib/modules/$kver"
    ln -sfn "$hdr" "$build"
    ln -sfn "$hdr" "/lib/modules/$kver/source"
    note "no linux-headers-$kver package; linked generic headers $hdr at $build (fine: probes read no kernel structs)"
}

mount_fs() {
    mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null \
        || note "could not mount tracefs at /sys/kernel/tracing"
    mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null \
        || note "could not mount debugfs at /sys/kernel/debug"
}

make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating venv $VENV (sees the distro's bcc)"
        "$PY" -m venv --system-site-packages "$VENV"
    fi
    local stamp="$VENV/.periscope-deps"
    local want
    want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing periscope and its Python dependencies into $VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check -e "$REPO[dev]"
        echo "$want" >"$stamp"
    fi
    "$VENV/bin/python" -c 'import bcc' 2>/dev/null || die "venv cannot import bcc (python3-bpfcc)"
}

provision() {
    check_distro
    install_packages
    install_headers
    mount_fs
    make_venv
}

cmd=${1:-}
case "$cmd" in
    ""|install-deps) provision ;;
    demo) provision; cd "$REPO"; exec make demo ;;
    test) provision; shift; cd "$REPO"; exec make test ;;
    -h|--help) sed -n '2,8p' "$0" ;;
    *) die "unknown command '$cmd' (try --help)" ;;
esac
