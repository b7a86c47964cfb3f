# shellcheck shell=bash disable=SC2034
# Helpers shared by the VM-tier scripts (sourced, not run).

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# run.sh snapshots the checkout and points PERISCOPE_VM_REPO at the snapshot: the
# image recipe, the image and the guest then all see one consistent tree, even
# while people keep editing the real one.
REPO=${PERISCOPE_VM_REPO:-$(cd "$VM_DIR/../.." && pwd)}
RVM=$REPO/tests/vm
SUITE=bookworm            # the guest: Debian 12 with its stock 6.1 kernel
CACHE=${PERISCOPE_VM_CACHE:-$VM_DIR/.cache}

log()  { printf '[vm %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
skip() { printf 'SKIP vm tier: %s\n' "$*"; exit 0; }
fail() { printf 'FAIL vm tier: %s\n' "$*" >&2; exit 1; }

# host_mirror SUITE: the first URI the host's apt configuration uses for SUITE
# (one-line .list and deb822 .sources). PERISCOPE_VM_MIRROR overrides.
host_mirror() {
    local suite=$1
    if [ "$suite" = "$SUITE" ] && [ -n "${PERISCOPE_VM_MIRROR:-}" ]; then
        echo "$PERISCOPE_VM_MIRROR"; return 0
    fi
    local files=()
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    local f
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 1
    awk -v want="$suite" '
        function flush() {
            if (isdeb && uris != "") {
                n = split(suites, s, " ")
                for (i = 1; i <= n; i++) if (s[i] == want) { split(uris, u, " "); print u[1]; found = 1; exit }
            }
            isdeb = 0; uris = ""; suites = ""
        }
        FNR == 1 { flush() }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^#/) next
            if (tolower($1) == "types:") { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
            if (tolower($1) == "uris:") { $1 = ""; uris = $0 }
            if (tolower($1) == "suites:") { $1 = ""; suites = $0 }
            if (tolower($1) == "enabled:" && tolower($2) == "no") { isdeb = 0; uris = "x"; suites = "" }
            next
        }
        $1 == "deb" {
            i = 2
            if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == want) { print $i; found = 1; exit }
        }
        END { if (!found) flush(); exit !found }
    ' "${files[@]}"
}

# recipe_hash: everything that goes into the guest image. Change any of it
# and the next run builds a fresh image.
recipe_hash() {
    {
        cat "$RVM/build-image.sh" "$RVM/lib.sh" "$RVM"/guest/*
        bash "$REPO/vagrant/provision.sh" packages
        bash "$REPO/vagrant/provision.sh" deps-stamp
        host_mirror "$SUITE"; host_mirror "$SUITE-updates"; host_mirror "$SUITE-security"
    } 2>/dev/null | sha256sum | cut -c1-16
}

# remaining: seconds left before the tier's deadline ($DEADLINE, epoch seconds).
remaining() { echo $(( DEADLINE - $(date +%s) )); }
