#!/usr/bin/env bash
# Measure which capabilities periscoped.service really needs (run inside the VM-tier guest).
#
#   capcheck.sh UNITFILE     runs capcheck.py in the unit's sandbox (systemd-run with the
#                            unit's [Service] settings): once as shipped, then once per
#                            capability removed, once without SupplementaryGroups=periscope.
set -euo pipefail
UNITFILE=${1:?usage: capcheck.sh UNITFILE}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The unit's sandbox as systemd-run properties; lifecycle settings are dropped.
PROPS=()
CAPS=""
while IFS= read -r line; do
    case "$line" in
        ""|"#"*|"["*) continue ;;
        Type=*|NotifyAccess=*|ExecStart=*|Restart=*|RestartSec=*|WatchdogSec=*|Timeout*) continue ;;
        CapabilityBoundingSet=*) CAPS=${line#CapabilityBoundingSet=}; continue ;;
    esac
    PROPS+=("$line")
done < <(sed -n '/^\[Service\]/,/^\[/p' "$UNITFILE")

# A process owned by another user, with an fd 0, for the procfs reads.
setpriv --reuid=nobody --regid=nogroup --clear-groups sleep 300 </dev/null &
OTHER=$!
trap 'kill "$OTHER" 2>/dev/null || true' EXIT
sleep 0.5

run() {  # run LABEL CAPS [extra -p ...]
    local label=$1 caps=$2; shift 2
    local out p args=()
    for p in "${PROPS[@]}"; do args+=(-p "$p"); done
    out=$(timeout 120 systemd-run --quiet --wait --pipe --collect --unit="periscope-capcheck-$RANDOM" \
        "${args[@]}" "$@" -p "CapabilityBoundingSet=$caps" \
        /usr/bin/python3 "$HERE/capcheck.py" "$OTHER" 2>&1 | tail -n 1) || true
    printf '%-28s %s\n' "$label" "$out"
}

echo "capcheck: each row is periscoped.service's sandbox with a change; fields are steps (ok or the error)"
echo "kernel.perf_event_paranoid = $(cat /proc/sys/kernel/perf_event_paranoid) (as make install leaves it)"
run "as shipped" "$CAPS"
# Why make install lowers Debian's perf_event_paranoid default (3): show it.
orig=$(cat /proc/sys/kernel/perf_event_paranoid)
if sysctl -q -w kernel.perf_event_paranoid=3 2>/dev/null; then
    run "as shipped, paranoid=3" "$CAPS"
    run "+CAP_SYS_ADMIN, paranoid=3" "$CAPS CAP_SYS_ADMIN"
    sysctl -q -w kernel.perf_event_paranoid="$orig"
fi
for cap in $CAPS; do
    run "without $cap" "$(echo " $CAPS " | sed "s/ $cap / /; s/^ //; s/ \$//")"
done
noSG=()
for p in "${PROPS[@]}"; do [ "$p" = "SupplementaryGroups=periscope" ] || noSG+=("$p"); done
PROPS=("${noSG[@]}")
run "without SupplementaryGroups" "$CAPS"
