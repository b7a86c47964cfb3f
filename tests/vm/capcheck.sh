#!/usr/bin/env bash
# Measure which capabilities periscoped.service really needs (run inside the VM-tier guest).
#
#   capcheck.sh UNITFILE     runs capcheck.py in the unit's sandbox (systemd-run with the
#                            unit's [Service] settings): once as shipped, then once per
#                            capability removed, once without SupplementaryGroups=periscope.
#                            Fails unless the shipped set passes every step and each
#                            removal breaks one (no capability is kept that is not needed).
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
sleep 0.5

TMP=$(mktemp -d)
trap 'kill "$OTHER" 2>/dev/null || true; rm -rf "$TMP"' EXIT
LABELS=() EXPECT=() PIDS=()
# start EXPECT LABEL CAPS [extra -p ...]: start one row in the background (rows compile a
# probe each, ~10 s under emulation: side by side, 96 s of rows took 56-74 s).
# EXPECT: ok (every step passes) or FAILED.
start() {
    local expect=$1 label=$2 caps=$3; shift 3
    local p args=() out="$TMP/${#LABELS[@]}"
    for p in "${PROPS[@]}"; do args+=(-p "$p"); done
    # Side by side, a row that ends must not take /run/periscope away from the others.
    args+=(-p RuntimeDirectoryPreserve=yes)
    LABELS+=("$label"); EXPECT+=("$expect")
    { timeout 300 systemd-run --quiet --wait --pipe --collect --unit="periscope-capcheck-$RANDOM" \
        "${args[@]}" "$@" -p "CapabilityBoundingSet=$caps" \
        /usr/bin/python3 "$HERE/capcheck.py" "$OTHER" 2>&1 | tail -n 1 >"$out" || true; } &
    PIDS+=($!)
}
finish() {  # wait for the rows started so far
    wait "${PIDS[@]}" || true
    PIDS=()
}

echo "capcheck: each row is periscoped.service's sandbox with a change; fields are steps (ok or the error)"
echo "kernel.perf_event_paranoid = $(cat /proc/sys/kernel/perf_event_paranoid) (as make install leaves it)"
# Why make install lowers Debian's perf_event_paranoid default (3): show it. A host-wide
# setting, so these rows run on their own, first.
orig=$(cat /proc/sys/kernel/perf_event_paranoid)
if sysctl -q -w kernel.perf_event_paranoid=3 2>/dev/null; then
    start FAILED "as shipped, paranoid=3" "$CAPS"
    start ok "+CAP_SYS_ADMIN, paranoid=3" "$CAPS CAP_SYS_ADMIN"
    finish
    sysctl -q -w kernel.perf_event_paranoid="$orig"
fi
start ok "as shipped" "$CAPS"
for cap in $CAPS; do
    start FAILED "without $cap" "$(echo " $CAPS " | sed "s/ $cap / /; s/^ //; s/ \$//")"
done
noSG=()
for p in "${PROPS[@]}"; do [ "$p" = "SupplementaryGroups=periscope" ] || noSG+=("$p"); done
PROPS=("${noSG[@]}")
start FAILED "without SupplementaryGroups" "$CAPS"
finish

# Every capability the unit keeps must be needed, and the unit as shipped must do everything.
bad=0
for i in "${!LABELS[@]}"; do
    out=$(cat "$TMP/$i")
    printf '%-28s %s\n' "${LABELS[$i]}" "$out"
    case "${EXPECT[$i]}:$out" in
        ok:*": all "*" steps ok"|FAILED:*": FAILED "*) ;;
        *) echo "FAIL: '${LABELS[$i]}' should have ${EXPECT[$i]/ok/passed every step}"; bad=1 ;;
    esac
done
exit $bad
