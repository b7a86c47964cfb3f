#!/usr/bin/env bash
# The VM tier: boot Debian 12's stock kernel under QEMU with systemd as PID 1, run the job, report.
#
#   run.sh [e2e]      CI's tier (`make vm`, `make test-vm`; `make test` calls it last)
#   run.sh readme     the README's `provision.sh demo` and `provision.sh test` on the fresh guest
#   run.sh exec FILE  debugging aid: run the bash script FILE in the guest instead (from /srv/periscope)
#   run.sh image      only build (or find cached) the guest image; `make test` runs this in
#                     the background during the other tiers, so the tier itself boots at once
#
# Builds (and caches under tests/vm/.cache/, keyed by a hash of the recipe) a guest
# image from the host's Debian mirror, boots it with -nic none and the repository
# on a read-only 9p share, and runs tests/vm/guest-job.sh in it. KVM when the host
# has a real kvm_intel/kvm_amd, TCG otherwise. Budget: PERISCOPE_VM_BUDGET seconds
# (default 1200 for e2e) for everything; a skip prints one "SKIP vm tier: <reason>" line.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODE=${1:-e2e}
# e2e is CI's tier (~20 min of its 90); readme runs the whole suite inside the guest, by hand.
if [ "$MODE" = readme ]; then BUDGET=${PERISCOPE_VM_BUDGET:-3600}; else BUDGET=${PERISCOPE_VM_BUDGET:-1200}; fi
START=$(date +%s)
DEADLINE=$(( START + BUDGET ))

# SIGTERM/SIGINT (CI cancelling, Ctrl-C) reach the long-running child too: a
# non-interactive shell's background jobs ignore SIGINT, so forward SIGTERM.
CHILD=""
on_signal() {
    [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD" 2>/dev/null
    fail "interrupted"
}
trap on_signal TERM INT
bg_wait() {  # bg_wait CMD...: run CMD in the background, wait for it, return its status
    local rc=0
    "$@" & CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return $rc
}

case "$MODE" in
    e2e|readme|image) ;;
    exec) [ -f "${2:-}" ] || fail "usage: run.sh exec SCRIPT" ;;
    *) fail "unknown mode '$MODE' (e2e|readme|image|exec SCRIPT)" ;;
esac
[ -z "${PERISCOPE_IN_VM:-}" ] || skip "already inside the VM-tier guest (no nested QEMU)"
[ -z "${PERISCOPE_SKIP_VM:-}" ] || skip "PERISCOPE_SKIP_VM is set"
[ "$(uname -m)" = x86_64 ] || skip "host is $(uname -m); the guest image is x86_64"
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot, mkfs); run: sudo make test-vm"

# Tools: CI is a fresh machine, so install them when apt can.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || skip "missing ${need[*]} and no apt-get to install them"
    log "installing ${need[*]}"
    { timeout 120 apt-get update -q && DEBIAN_FRONTEND=noninteractive timeout 300 \
        apt-get install -y -q --no-install-recommends "${need[@]}"; } >"${TMPDIR:-/tmp}/periscope-vm-apt.log" 2>&1 \
        || skip "could not install ${need[*]} (see ${TMPDIR:-/tmp}/periscope-vm-apt.log)"
fi
{ mkfs.ext4 2>&1 || true; } | grep -q 'root-directory' || skip "mkfs.ext4 has no -d (e2fsprogs < 1.43)"

MIRROR=$(host_mirror "$SUITE") \
    || skip "no Debian '$SUITE' mirror in the host's apt configuration (set PERISCOPE_VM_MIRROR=URL)"

if [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; then
    ACCEL=(-accel kvm -cpu host); ACCEL_NAME=kvm
else
    # /dev/kvm without kvm_intel/kvm_amd is a paravirtual flavour that cannot run a stock kernel.
    ACCEL=(-accel "tcg,thread=multi" -cpu max); ACCEL_NAME=tcg
fi

# --- snapshot -------------------------------------------------------------------------------
mkdir -p "$CACHE"
OUT=$(mktemp -d "$CACHE/run.XXXXXX")
TAIL_PID=""
cleanup() {
    [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null
    rm -rf "$OUT"
}
trap cleanup EXIT
# One consistent tree for the recipe hash, the image and the guest (see lib.sh).
mkdir "$OUT/repo"
# tar exits 1 when a file changed or went while it read it: `make test` snapshots while the
# other tiers run (their caches are excluded, but the directories holding them change).
set +e
tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./tests/vm/.cache --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude=.hypothesis --warning=no-file-changed \
    --warning=no-file-removed -cf - . | tar -C "$OUT/repo" -xf -
snap=("${PIPESTATUS[@]}")
set -e
[ "${snap[0]}" -le 1 ] && [ "${snap[1]}" -eq 0 ] || fail "could not snapshot $REPO (tar: ${snap[*]})"
[ "$MODE" != exec ] || cp "$2" "$OUT/repo/.vm-exec.sh"
# This checkout's wheel, built here by Debian's python when the host runs the guest's release
# (same CPython and libc): the guest's `make install` takes it instead of a minute of
# building under emulation. The guest still builds the C twins itself, for the dev venv.
HOST_SUITE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
# The dev venv's mypy compiles the L7 parsers into it, as `make install` does (setup.py).
if [ "$MODE" != image ] && [ "$HOST_SUITE" = "$SUITE" ] \
    && PYTHONPATH=$(echo "$REPO"/.venv/lib/python3*/site-packages) /usr/bin/python3 -m pip wheel \
        -q --disable-pip-version-check --no-deps --no-build-isolation -w "$OUT/wheel" \
        "$OUT/repo" >"$OUT/wheel.log" 2>&1; then
    log "built $(basename "$OUT"/wheel/periscope-*.whl) on the host for the guest's make install"
else
    rm -rf "$OUT/wheel" "$OUT/repo/build" "$OUT"/repo/*.egg-info
fi
export PERISCOPE_VM_REPO=$OUT/repo
REPO=$PERISCOPE_VM_REPO
RVM=$REPO/tests/vm

# --- image ----------------------------------------------------------------------------------
KEY=$(recipe_hash)
IMG=$CACHE/img-$KEY
BUILD_S=cached
if [ ! -f "$IMG/rootfs.img" ]; then
    timeout 20 /usr/lib/apt/apt-helper download-file "$MIRROR/dists/$SUITE/Release" "$CACHE/.mirror-probe" \
        >/dev/null 2>&1 || skip "mirror $MIRROR is unreachable (no image cached for recipe $KEY)"
    rm -f "$CACHE/.mirror-probe"
    # Older images are dead weight: one recipe, one image.
    find "$CACHE" -maxdepth 1 -name 'img-*' ! -name "img-$KEY" -exec rm -rf {} +
    find "$CACHE" -maxdepth 1 -name 'run.*' ! -path "$OUT" -mmin +120 -exec rm -rf {} +
    log "building guest image $KEY (budget $(( $(remaining) - 300 ))s)"
    t=$(date +%s)
    bg_wait timeout --signal=TERM --kill-after=20 $(( $(remaining) - 300 )) bash "$RVM/build-image.sh" "$IMG" \
        || fail "guest image build failed or exceeded its budget"
    BUILD_S=$(( $(date +%s) - t ))s
fi
KREL=$(cat "$IMG/kernel-release")
log "image $KEY: kernel $KREL (build: $BUILD_S), accel $ACCEL_NAME"
[ "$MODE" != image ] || exit 0

# --- boot -----------------------------------------------------------------------------------
GUEST_BUDGET=$(( $(remaining) - 60 ))
[ "$GUEST_BUDGET" -gt 120 ] || fail "only $(remaining)s of the budget left to boot the guest"
echo "$MODE" >"$OUT/args"
echo "$GUEST_BUDGET" >"$OUT/budget"
: >"$OUT/job.log"
tail -n +1 -F "$OUT/job.log" 2>/dev/null | sed -u 's/^/  guest| /' &
TAIL_PID=$!

log "booting $KREL under QEMU ($ACCEL_NAME), job '$MODE', guest budget ${GUEST_BUDGET}s"
t_boot=$(date +%s)
qrc=0
bg_wait timeout --signal=TERM --kill-after=10 $(( GUEST_BUDGET + 30 )) qemu-system-x86_64 \
    "${ACCEL[@]}" -smp 2 -m 3072 -machine pc \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
    -append "root=/dev/vda rw rootfstype=ext4 console=ttyS0 panic=-1 quiet loglevel=4 systemd.show_status=auto mitigations=off" \
    -drive "file=$IMG/rootfs.img,if=virtio,format=raw,snapshot=on" \
    -virtfs "local,path=$REPO,mount_tag=repo,security_model=none,readonly=on" \
    -virtfs "local,path=$OUT,mount_tag=out,security_model=none" \
    -nic none -display none -monitor none -no-reboot \
    -serial "file:$OUT/console.log" </dev/null >"$OUT/qemu.log" 2>&1 || qrc=$?
T_TOTAL=$(( $(date +%s) - t_boot ))
sleep 1
kill "$TAIL_PID" 2>/dev/null || true
TAIL_PID=""

# Boot time: the guest's uptime when systemd started the job.
BOOT_S=$(sed -n 's/^guest boot: job started \([0-9.]*\)s.*/\1/p' "$OUT/job.log" | head -n 1)
GUEST_RC=$(cat "$OUT/rc" 2>/dev/null || echo none)
echo
echo "vm tier: guest kernel $KREL, accel $ACCEL_NAME, image build $BUILD_S, boot ${BOOT_S:-?}s (kernel start to job start), QEMU total ${T_TOTAL}s, job rc $GUEST_RC, tier total $(( $(date +%s) - START ))s"
grep -h 'SYSTEMD-ANALYZE SECURITY' "$OUT/job.log" || true

if [ "$GUEST_RC" != 0 ]; then
    echo "--- QEMU (exit $qrc):"; cat "$OUT/qemu.log"
    echo "--- guest serial console (last 80 lines):"; tail -n 80 "$OUT/console.log"
    if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then fail "guest timed out (budget ${BUDGET}s)"; fi
    fail "guest job failed (rc $GUEST_RC)"
fi
echo "PASS vm tier"
