#!/usr/bin/env bash
# Two network namespaces joined by a veth pair, for benchmarks and manual runs
# (tests build the same topology with tests/support/veth.rs).
#
# Namespaces rbt${TAG}a and rbt${TAG}b; veth rbt${TAG}0 in a with
# 198.18.50.1/24, its peer rbt${TAG}1 in b with 198.18.50.2/24. The veth ends
# are created directly inside the namespaces, never on the host. IPv6 is
# disabled in both so nothing is sent outside 198.18.0.0/15.
#
# Usage:
#   veth.sh up   TAG [QUEUES]      create both namespaces and the veth pair
#                                  (QUEUES rx and tx queues per end, default
#                                  1; the kernel would give one per CPU);
#                                  replaces an existing pair of the same TAG
#   veth.sh down TAG               delete both namespaces (absent is fine)
#   veth.sh exec TAG a|b CMD [ARGS...]   run CMD inside namespace a or b
set -euo pipefail

prog=$(basename "$0")

ADDR_A=198.18.50.1/24
ADDR_B=198.18.50.2/24

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
        die "link name '$name' is longer than 15 bytes (use a TAG of at most 11 characters)"
    fi
}

# check_tag TAG: the names derived from it must all pass check_name.
check_tag() {
    local tag=$1
    [[ -n $tag ]] || die "TAG must not be empty"
    check_name "rbt${tag}a" namespace
    check_name "rbt${tag}b" namespace
    check_name "rbt${tag}0" link
    check_name "rbt${tag}1" link
}

need_ip() {
    command -v ip >/dev/null 2>&1 ||
        die "'ip' not found: install iproute2 (apt-get install -y iproute2)"
}

# no_ipv6 NS: bringing links up would otherwise send RS/MLD/DAD traffic to
# addresses outside 198.18.0.0/15. Fine if the kernel has no IPv6.
no_ipv6() {
    local ns=$1 knob
    for knob in all default; do
        ip netns exec "$ns" sh -c \
            "f=/proc/sys/net/ipv6/conf/$knob/disable_ipv6; [ ! -e \$f ] || echo 1 > \$f"
    done
}

cmd_up() {
    (($# == 1 || $# == 2)) || usage
    local tag=$1 queues=${2:-1}
    check_tag "$tag"
    [[ $queues =~ ^[0-9]+$ ]] && ((10#$queues >= 1 && 10#$queues <= 1024)) ||
        die "QUEUES '$queues' must be a number from 1 to 1024"
    queues=$((10#$queues))
    need_ip
    local ns_a=rbt${tag}a ns_b=rbt${tag}b if_a=rbt${tag}0 if_b=rbt${tag}1
    # Always explicit: the kernel's default for a veth is one queue per
    # possible CPU, not one.
    local qa=(numtxqueues "$queues" numrxqueues "$queues")

    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    # From here on, undo both namespaces (and so the veths) if any step fails.
    trap 'ip netns del "$ns_a" 2>/dev/null || true; ip netns del "$ns_b" 2>/dev/null || true' ERR
    ip netns add "$ns_a"
    ip netns add "$ns_b"
    no_ipv6 "$ns_a"
    no_ipv6 "$ns_b"
    # Created inside a with its peer inside b: no name on the host can clash.
    ip -n "$ns_a" link add "$if_a" "${qa[@]}" type veth peer name "$if_b" "${qa[@]}" netns "$ns_b"
    ip -n "$ns_a" addr add "$ADDR_A" dev "$if_a"
    ip -n "$ns_b" addr add "$ADDR_B" dev "$if_b"
    local ns
    for ns in "$ns_a" "$ns_b"; do
        ip -n "$ns" link set dev lo up
    done
    ip -n "$ns_a" link set dev "$if_a" up
    ip -n "$ns_b" link set dev "$if_b" up
    trap - ERR
    echo "$prog: $ns_a $if_a $ADDR_A <-> $ns_b $if_b $ADDR_B ($queues queue(s))"
}

cmd_down() {
    (($# == 1)) || usage
    check_tag "$1"
    need_ip
    ip netns del "rbt${1}a" 2>/dev/null || true
    ip netns del "rbt${1}b" 2>/dev/null || true
}

cmd_exec() {
    (($# >= 3)) || usage
    local tag=$1 side=$2
    shift 2
    check_tag "$tag"
    [[ $side == a || $side == b ]] || die "side '$side' must be a or b"
    need_ip
    exec ip netns exec "rbt${tag}${side}" "$@"
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
