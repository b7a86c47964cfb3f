#!/usr/bin/env bash
# The VM tier's job, run inside the guest (systemd PID 1, Debian 12's stock kernel) from the share.
#
#   guest-job.sh [e2e]    provision.sh, make install, capability check, start the installed
#                         unit, e2e tests as several users, systemd-analyze security, stop, bpftool
#   guest-job.sh readme   the README's commands on this "fresh host": provision.sh demo, provision.sh test
#   guest-job.sh exec     run.sh's debugging aid: the script it copied to .vm-exec.sh
#
# Output goes to the host (out share); the wrapper reports the exit code.
set -euo pipefail
MODE=${1:-e2e}
SRC=/mnt/repo
WORK=/srv/periscope         # where the image's dev venv expects the repository
export PERISCOPE_IN_VM=1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Snapshot the repository first and run from the snapshot: edits on the host
# during a run must not change the job under its feet.
if [ "${PERISCOPE_VM_JOB_COPY:-}" != 1 ]; then
    mkdir -p "$WORK"
    find "$WORK" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
    tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./tests/vm/.cache --exclude=./build \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
        --exclude=.pytest_cache --exclude=.hypothesis -cf - . | tar -C "$WORK" -xf -
    PERISCOPE_VM_JOB_COPY=1 exec bash "$WORK/tests/vm/guest-job.sh" "$@"
fi

T0=$(date +%s)
STEP_T=$T0
STEP=""
TIMINGS=()
step() {
    local now; now=$(date +%s)
    [ -n "$STEP" ] && TIMINGS+=("$STEP=$(( now - STEP_T ))s")
    STEP=$1; STEP_T=$now
    printf '\n===== [guest +%ss] %s\n' "$(( now - T0 ))" "$1"
}
finish() {
    local rc=$?
    step "end"
    echo "guest timings: ${TIMINGS[*]}"
    echo "guest kernel: $(uname -r)"
    if [ $rc -ne 0 ] && systemctl list-unit-files periscoped.service >/dev/null 2>&1; then
        echo "--- journalctl -u periscoped (last 60 lines)"
        journalctl -u periscoped --no-pager -n 60 -o short-monotonic 2>/dev/null || true
    fi
    echo "guest job: exit $rc"
}
trap finish EXIT

echo "guest boot: job started $(cut -d' ' -f1 /proc/uptime)s after the kernel"
echo "guest kernel: $(uname -r) ($(sed -n "s/^PRETTY_NAME=//p" /etc/os-release)), PID 1: $(ps -o comm= -p 1)"
echo "guest systemd: $(systemctl --version | head -n 1); state: $(systemctl is-system-running || true)"

echo "guest repository: snapshot of the host's checkout at $WORK"
cd "$WORK"

if [ "$MODE" = exec ]; then
    step "exec: run.sh's script"
    bash .vm-exec.sh
    exit
fi

if [ "$MODE" = readme ]; then
    step "README: sudo ./vagrant/provision.sh demo"
    rc=0; timeout 300 ./vagrant/provision.sh demo || rc=$?
    echo "provision.sh demo: exit $rc"
    step "README: sudo ./vagrant/provision.sh test"
    rc2=0; timeout 1500 ./vagrant/provision.sh test || rc2=$?
    echo "provision.sh test: exit $rc2"
    [ $rc -eq 0 ] && [ $rc2 -eq 0 ]
    exit
fi

step "vagrant/provision.sh (must find everything baked in: offline, fast)"
bash vagrant/provision.sh

step "make install"
# The host's build of this checkout, when it left one (run.sh): same release as this guest.
for whl in /mnt/out/wheel/periscope-*.whl; do
    [ -f "$whl" ] && export PERISCOPE_WHEEL=$whl
done
make install
systemctl is-enabled periscoped.service
ls -l /opt/periscope/venv/bin/periscoped /usr/local/lib/systemd/system/periscoped.service \
    /usr/local/bin/periscope
ls -la /etc/periscope
getent group periscope

step "capability check in the unit's sandbox"
bash tests/vm/capcheck.sh /usr/local/lib/systemd/system/periscoped.service

step "systemd-analyze security periscoped.service"
systemd-analyze security periscoped.service --no-pager | grep -E '✗|→' || true
score=$(systemd-analyze security periscoped.service --no-pager | sed -n 's/.*Overall exposure level for periscoped.service: //p')
echo "SYSTEMD-ANALYZE SECURITY periscoped.service: $score"
case "$score" in
    [0-3].*|4.0*) ;;
    *) echo "FAIL: exposure $score is above 4.0 (OK)"; exit 1 ;;
esac

if [ ! -f collector/daemon/main.py ]; then
    step "periscoped: SKIP (collector/daemon/main.py is not in this checkout yet)"
    echo "SKIP: start/e2e/stop need the daemon; infrastructure, install and capabilities were checked"
    exit 0
fi

step "periscoped --check (as root, outside the sandbox)"
/opt/periscope/venv/bin/periscoped --check

step "systemctl start periscoped (Type=notify: returns after READY=1)"
systemctl start periscoped.service
systemctl show periscoped.service -p ActiveState -p SubState -p MainPID -p WatchdogUSec -p NRestarts
ls -l /run/periscope/
echo "BPF programs loaded now: $(bpftool prog list | grep -c 'name tracepoint__' || true) (probes attach per trace session)"

step "e2e tests as several Unix users against the installed unit's socket"
.venv/bin/python -m pytest tests/vm -m vm -q -p no:cacheprovider -o addopts="" --timeout=300

step "systemctl stop periscoped; no BPF programs of ours may remain"
systemctl is-active periscoped.service
systemctl stop periscoped.service
sleep 1
left=$(bpftool prog list | grep -c 'name tracepoint__' || true)
echo "BPF programs left after stop: $left"
[ "$left" -eq 0 ] || { bpftool prog list; echo "FAIL: BPF programs remain after stop"; exit 1; }
