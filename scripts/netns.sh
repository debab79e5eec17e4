#!/usr/bin/env bash
# Network-namespace helper for the rbypass demo.
#
# Puts the kernel side of a conversation with rbypass in a private namespace
# so nothing touches the host network. Only namespaces named rbt* and only
# addresses inside 198.18.0.0/15 (RFC 2544 benchmarking range) are allowed.
#
# Usage:
#   netns.sh up   NAME TAPNAME ADDR/PREFIX   create NAME, move the existing TAP
#                                            device TAPNAME into it, assign
#                                            ADDR/PREFIX, bring it and lo up
#   netns.sh down NAME                       delete NAME (absent is fine)
#   netns.sh exec NAME CMD [ARGS...]         run CMD inside NAME
set -euo pipefail

prog=$(basename "$0")

die() {
    echo "$prog: error: $*" >&2
    exit 1
}

usage() {
    sed -n '/^# Usage:/,/^set /p' "$0" | sed -e '/^set /d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

# check_name NAME KIND: KIND is "namespace" or "link" (links are <= 15 bytes).
check_name() {
    local name=$1 kind=$2
    [[ $name =~ ^rbt[A-Za-z0-9_.-]*$ ]] ||
        die "$kind name '$name' must start with 'rbt' and contain only [A-Za-z0-9_.-]"
    if [[ $kind == link ]] && ((${#name} > 15)); then
        die "link name '$name' is longer than 15 bytes"
    fi
}

# Accepts A.B.C.D/P only if the whole prefix lies inside 198.18.0.0/15.
check_addr() {
    local cidr=$1
    [[ $cidr =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})/([0-9]{1,2})$ ]] ||
        die "address '$cidr' is not of the form A.B.C.D/PREFIX"
    local a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]} c=${BASH_REMATCH[3]} d=${BASH_REMATCH[4]}
    local p=${BASH_REMATCH[5]}
    local o
    for o in "$a" "$b" "$c" "$d"; do
        ((10#$o <= 255)) || die "address '$cidr' has an octet above 255"
    done
    if ((10#$a != 198)) || { ((10#$b != 18)) && ((10#$b != 19)); } || ((10#$p < 15)) || ((10#$p > 32)); then
        die "address '$cidr' is outside 198.18.0.0/15; rbypass test networks must use only 198.18.0.0/15 (e.g. 198.18.0.1/24)"
    fi
}

need_ip() {
    command -v ip >/dev/null 2>&1 ||
        die "'ip' not found: install iproute2 (apt-get install -y iproute2)"
}

cmd_up() {
    (($# == 3)) || usage
    local ns=$1 tap=$2 addr=$3
    check_name "$ns" namespace
    check_name "$tap" link
    check_addr "$addr"
    need_ip
    ip link show dev "$tap" >/dev/null 2>&1 ||
        die "TAP device '$tap' does not exist in this namespace; start rbypass (which creates it) first"

    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    # From here on, undo the namespace if any step fails.
    trap 'ip netns del "$ns" 2>/dev/null || true' ERR
    ip link set dev "$tap" netns "$ns"
    # No IPv6: bringing links up would otherwise send RS/MLD/DAD traffic to
    # addresses outside 198.18.0.0/15.
    local knob
    for knob in all default; do
        ip netns exec "$ns" sh -c \
            "f=/proc/sys/net/ipv6/conf/$knob/disable_ipv6; [ ! -e \$f ] || echo 1 > \$f"
    done
    ip -n "$ns" addr add "$addr" dev "$tap"
    ip -n "$ns" link set dev "$tap" up
    ip -n "$ns" link set dev lo up
    trap - ERR
    echo "$prog: namespace $ns up: $tap $addr"
}

cmd_down() {
    (($# == 1)) || usage
    check_name "$1" namespace
    need_ip
    ip netns del "$1" 2>/dev/null || true
}

cmd_exec() {
    (($# >= 2)) || usage
    local ns=$1
    shift
    check_name "$ns" namespace
    need_ip
    exec ip netns exec "$ns" "$@"
}

(($# >= 1)) || usage
sub=$1
shift
case $sub in
up) cmd_up "$@" ;;
down) cmd_down "$@" ;;
exec) cmd_exec "$@" ;;
-h | --help | help) usage ;;
*) die "unknown subcommand '$sub' (expected up, down or exec)" ;;
esac
