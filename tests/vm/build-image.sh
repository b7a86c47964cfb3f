#!/usr/bin/env bash
# Build the VM-tier guest image from scratch: Debian 12, stock 6.1 kernel + matching headers,
# systemd as PID 1, provision.sh's packages, a Python wheelhouse and the dev venv baked in.
#
#   build-image.sh OUTDIR     writes OUTDIR/{rootfs.img,vmlinuz,initrd.img,kernel-release}
#
# Offline apart from the package mirrors: apt uses the host's Debian mirror (read
# from the host's apt configuration), pip runs on the host with the host's pip
# configuration. The guest itself never needs the network.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT=${1:?usage: build-image.sh OUTDIR}
[ "$(id -u)" -eq 0 ] || fail "build-image.sh needs root (debootstrap, chroot)"

MIRROR=$(host_mirror "$SUITE") || fail "no '$SUITE' mirror in the host's apt configuration (set PERISCOPE_VM_MIRROR)"
UPDATES=$(host_mirror "$SUITE-updates" || true)
SECURITY=$(host_mirror "$SUITE-security" || true)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$KEYRING" ] || fail "missing $KEYRING (apt-get install debian-archive-keyring)"

WORK=$OUT.tmp
ROOT=$WORK/root
mkdir -p "$CACHE/debs"

MOUNTS=()
cleanup() {
    local i
    [ -z "${WHEELS_PID:-}" ] || kill "$WHEELS_PID" 2>/dev/null || true
    for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$ROOT"

# A clean environment for everything run in the chroot: the host's PIP_*,
# proxies and locale must not leak into the guest's configuration.
in_root() {
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        chroot "$ROOT" "$@"
}

t0=$(date +%s)
log "debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase --keyring="$KEYRING" --cache-dir="$CACHE/debs" \
    --include=ca-certificates "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
log "debootstrap done in $(( $(date +%s) - t0 ))s"

{
    echo "deb $MIRROR $SUITE main"
    [ -n "$UPDATES" ] && echo "deb $UPDATES $SUITE-updates main"
    [ -n "$SECURITY" ] && echo "deb $SECURITY $SUITE-security main"
} >"$ROOT/etc/apt/sources.list"
# No daemons start inside the chroot; dpkg skips fsync (the image is rebuilt, never repaired).
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
echo force-unsafe-io >"$ROOT/etc/dpkg/dpkg.cfg.d/periscope-build-unsafe-io"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
for m in proc sys dev dev/pts; do
    mount --bind "/$m" "$ROOT/$m"; MOUNTS+=("$ROOT/$m")
done
mkdir -p "$ROOT/var/cache/apt/archives"
mount --bind "$CACHE/debs" "$ROOT/var/cache/apt/archives"; MOUNTS+=("$ROOT/var/cache/apt/archives")

# Python wheels for the guest, built on the host while apt works in the chroot (a minute
# each): the host's CPython must be the suite's (checked once apt has installed it).
WH=$ROOT/var/cache/periscope/wheels
mkdir -p "$WH"
HOST_PY=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
WHEELS_PID=""
if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip wheel -q --disable-pip-version-check -w "$WH" "${REPO}[dev]" setuptools wheel \
        >"$WORK/pip.log" 2>&1 &
    WHEELS_PID=$!
fi

mapfile -t PKGS < <(bash "$REPO/vagrant/provision.sh" packages)
# linux-image-amd64 and linux-headers-amd64 come from the same sources, so
# they resolve to the same ABI: bcc compiles against the running kernel.
PKGS+=(systemd-sysv udev kmod dbus initramfs-tools linux-image-amd64 linux-headers-amd64
    iproute2 procps less)
t1=$(date +%s)
log "apt-get install ${#PKGS[@]} packages (kernel, headers, systemd, provision.sh's list)"
in_root apt-get update -q >"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log" >&2; fail "apt-get update failed"; }
in_root apt-get install -y -q --no-install-recommends "${PKGS[@]}" >>"$WORK/apt.log" 2>&1 \
    || { tail -n 40 "$WORK/apt.log" >&2; fail "apt-get install failed"; }
log "packages done in $(( $(date +%s) - t1 ))s"

KREL=$(basename "$(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -n 1)")
[ -e "$ROOT/lib/modules/$KREL/build/include/generated/autoconf.h" ] \
    || fail "linux-headers for $KREL did not install (headers must match the kernel)"
[ -e "$ROOT/boot/initrd.img-$KREL" ] || in_root update-initramfs -c -k "$KREL" >>"$WORK/apt.log" 2>&1

# Python: a wheelhouse (built on the host with the host's pip config, same
# CPython minor as the guest) and the dev venv provision.sh would create.
GUEST_PY=$(in_root python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
t2=$(date +%s)
if [ "$GUEST_PY" = "$HOST_PY" ] && [ -n "$WHEELS_PID" ]; then
    log "pip wheel on the host (python $HOST_PY) into the guest's wheelhouse, begun before apt"
    wait "$WHEELS_PID" || { tail -n 30 "$WORK/pip.log" >&2; fail "pip wheel failed"; }
else
    [ -z "$WHEELS_PID" ] || { kill "$WHEELS_PID" 2>/dev/null; wait "$WHEELS_PID" || true; }
    rm -rf "$WH"; mkdir -p "$WH"
    log "pip wheel inside the chroot (host python $HOST_PY != guest $GUEST_PY)"
    in_root apt-get install -y -q --no-install-recommends python3-pip >>"$WORK/apt.log" 2>&1
    mkdir -p "$ROOT/tmp/src"; cp -a "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/collector" \
        "$REPO/probes" "$REPO/redact" "$ROOT/tmp/src/"
    in_root python3 -m pip wheel -q -w /var/cache/periscope/wheels "/tmp/src[dev]" setuptools wheel \
        >"$WORK/pip.log" 2>&1 || { tail -n 30 "$WORK/pip.log" >&2; fail "pip wheel (chroot) failed"; }
    rm -rf "$ROOT/tmp/src"
fi
rm -f "$WH"/periscope-*.whl
# From now on pip in the guest is offline: it installs from the wheelhouse only.
printf '[global]\nno-index = true\nfind-links = /var/cache/periscope/wheels\ndisable-pip-version-check = true\n' \
    >"$ROOT/etc/pip.conf"

# The dev venv, exactly where the job puts the repository (/srv/periscope),
# stamped the way provision.sh's make_venv stamps it, so provision.sh finds it.
SRV=$ROOT/srv/periscope
mkdir -p "$SRV"
cp -a "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/collector" "$REPO/probes" "$REPO/redact" "$SRV/"
in_root /usr/bin/python3 -m venv --system-site-packages /srv/periscope/.venv
in_root /srv/periscope/.venv/bin/pip install -q -e '/srv/periscope[dev]' >>"$WORK/pip.log" 2>&1 \
    || { tail -n 30 "$WORK/pip.log" >&2; fail "dev venv install failed"; }
bash "$REPO/vagrant/provision.sh" deps-stamp >"$SRV/.venv/.periscope-deps"
in_root /srv/periscope/.venv/bin/python -c 'import bcc' || fail "the guest venv cannot import bcc"
log "python done in $(( $(date +%s) - t2 ))s"

# systemd as PID 1, quiet and quick: fixed machine-id (no first-boot work),
# no gettys or timers, the test workloads installed but not started at boot.
echo periscope-vm >"$ROOT/etc/hostname"
echo 9e7b0c3a5d1f4e2a8b6c0d9e1f2a3b4c >"$ROOT/etc/machine-id"
printf '/dev/vda / ext4 rw,noatime 0 0\n' >"$ROOT/etc/fstab"
rm -f "$ROOT/etc/resolv.conf" "$ROOT/usr/sbin/policy-rc.d" "$ROOT/etc/dpkg/dpkg.cfg.d/periscope-build-unsafe-io"
install -m 0755 "$RVM/guest/periscope-vm-job" "$ROOT/usr/local/sbin/periscope-vm-job"
install -m 0644 "$RVM/guest/periscope-vm-job.service" "$ROOT/etc/systemd/system/periscope-vm-job.service"
in_root systemctl enable periscope-vm-job.service >/dev/null 2>&1
in_root systemctl set-default multi-user.target >/dev/null 2>&1
for u in redis-server nginx postgresql; do in_root systemctl disable "$u.service" >/dev/null 2>&1 || true; done
for u in getty@tty1.service serial-getty@ttyS0.service apt-daily.timer apt-daily-upgrade.timer \
    man-db.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service \
    systemd-networkd-wait-online.service; do
    in_root systemctl mask "$u" >/dev/null 2>&1 || true
done
in_root apt-get clean

for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do umount "${MOUNTS[$i]}"; done
MOUNTS=()

cp "$ROOT/boot/vmlinuz-$KREL" "$WORK/vmlinuz"
cp "$ROOT/boot/initrd.img-$KREL" "$WORK/initrd.img"
echo "$KREL" >"$WORK/kernel-release"
size_mb=$(( $(du -sm "$ROOT" | cut -f1) + 1536 ))
t3=$(date +%s)
mkfs.ext4 -q -F -L periscope-vm -d "$ROOT" "$WORK/rootfs.img" "${size_mb}M" \
    || fail "mkfs.ext4 -d failed (needs e2fsprogs >= 1.43)"
rm -rf "$ROOT"
log "rootfs.img (${size_mb} MiB) done in $(( $(date +%s) - t3 ))s; kernel $KREL"

rm -rf "$OUT"
mv "$WORK" "$OUT"
trap - EXIT
log "image built in $(( $(date +%s) - t0 ))s: $OUT"
