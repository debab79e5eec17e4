#!/usr/bin/env bash
# Kernel vs `rbypass run`, side by side, in one go on this machine: the same
# unmodified programs, both ends on one host, first plainly (the kernel's
# loopback) and then both under `rbypass run --name S` (one shared stack).
# Prints a markdown table with the ratio per row (>1: rbypass is better).
#
# With --veth, the two ends are two hosts: network namespaces joined by a
# veth pair (scripts/veth.sh, 198.18.50.0/24, removed at exit), the server
# in one, the client in the other; first kernel to kernel, then rbypass to
# rbypass over AF_XDP (`rbypass run --nic xdp:IFACE` on each end, one stack
# per host). Needs root.
#
#   scripts/bench_preload.sh            # every row (about a minute)
#   BENCH_SECONDS=1 scripts/bench_preload.sh --quick   # latency rows only
#   scripts/bench_preload.sh --veth [--quick]          # between two namespaces
#
# Needs sockperf, iperf3, redis-server and redis-benchmark; as root on a
# Debian-like system it installs the missing ones, otherwise it skips their
# rows. Needs `cargo build --release` first.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${RBYPASS:-$PWD/target/release/rbypass}
SECS=${BENCH_SECONDS:-3}
QUICK=0
VETH=0
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    --veth) VETH=1 ;;
    *)
        echo "usage: $0 [--quick] [--veth]" >&2
        exit 2
        ;;
    esac
done
[[ -x $R && -e $(dirname "$R")/librbypass.so ]] || {
    echo "build first: cargo build --release" >&2
    exit 1
}
export PATH=$PATH:/usr/sbin:/sbin

missing=()
for pair in sockperf:sockperf iperf3:iperf3 redis-server:redis-server redis-benchmark:redis-tools; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair##*:}")
done
if ((${#missing[@]})) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} (apt-get)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
have() { command -v "$1" >/dev/null; }

TMP=$(mktemp -d)
PIDS=()
STACKS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
    for s in "${STACKS[@]}"; do rm -f "/dev/shm/rbypass-$s" "/dev/shm/rbypass-$s-c" "/dev/shm/rbypass-$s-s"; done
    ((VETH)) && scripts/veth.sh down "$VETH_TAG" >/dev/null 2>&1
    [[ -n ${BENCH_KEEP:-} ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

# Where the ends run. Loopback: both here, one shared stack per run. Veth:
# the server in namespace b, the client in a, each on its own stack.
ADDR=127.0.0.1
VETH_TAG=bench$$
VETH_TAG=${VETH_TAG:0:11}
SRV=()
CLI=()
if ((VETH)); then
    [[ $(id -u) == 0 ]] || {
        echo "--veth needs root (network namespaces, AF_XDP)" >&2
        exit 1
    }
    scripts/veth.sh up "$VETH_TAG" >&2
    ADDR=198.18.50.2
    SRV=(ip netns exec "rbt${VETH_TAG}b")
    CLI=(ip netns exec "rbt${VETH_TAG}a")
fi
# rbypass_args SIDE NAME: the `rbypass run` options of one end.
rbypass_args() {
    if ((VETH)); then
        local ifname="rbt${VETH_TAG}1"
        [[ $1 == client ]] && ifname="rbt${VETH_TAG}0"
        echo "--name $2-${1:0:1} --nic xdp:$ifname"
    else
        echo "--name $2"
    fi
}

# launch MODE PROFILE CMD...: MODE is "kernel" or a stack name.
launch() {
    local mode=$1 profile=$2
    shift 2
    if [[ $mode == kernel ]]; then
        "${CLI[@]}" "$@"
    else
        # shellcheck disable=SC2046
        "${CLI[@]}" "$R" run $(rbypass_args client "$mode") --profile "$profile" -- "$@"
    fi
}

# serve MODE PROFILE CMD...: a background server in its own session.
serve() {
    local mode=$1 profile=$2
    shift 2
    if [[ $mode == kernel ]]; then
        setsid "${SRV[@]}" "$@" >"$TMP/server.log" 2>&1 &
    else
        # shellcheck disable=SC2046
        setsid "${SRV[@]}" "$R" run $(rbypass_args server "$mode") --profile "$profile" -- "$@" \
            >"$TMP/server.log" 2>&1 &
    fi
    PIDS+=($!)
}
stop_servers() {
    for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
    PIDS=()
}
wait_port() { # PROTO PORT
    local hex
    hex=$(printf ':%04X' "$2")
    for _ in $(seq 100); do
        if [[ $1 == T ]]; then
            "${SRV[@]}" awk -v h="$hex" '$2 ~ h"$" && $4 == "0A" {f=1} END {exit !f}' /proc/net/tcp /proc/net/tcp6 && return
        else
            "${SRV[@]}" awk -v h="$hex" '$2 ~ h"$" {f=1} END {exit !f}' /proc/net/udp /proc/net/udp6 && return
        fi
        sleep 0.05
    done
    echo "nothing on port $2" >&2
    return 1
}

ROWS=()
row() { # NAME UNIT KERNEL RBYPASS LOWER_IS_BETTER
    local ratio
    if [[ -z $3 || -z $4 || $3 == 0 || $4 == 0 ]]; then
        ratio="n/a"
    elif [[ $5 == 1 ]]; then
        ratio=$(awk -v k="$3" -v r="$4" 'BEGIN {printf "%.2fx", k / r}')
    else
        ratio=$(awk -v k="$4" -v r="$3" 'BEGIN {printf "%.2fx", k / r}')
    fi
    ROWS+=("| $1 | $2 | ${3:-failed} | ${4:-failed} | $ratio |")
    printf '%-44s %-14s kernel %-12s rbypass %-12s %s\n' "$1" "$2" "${3:-failed}" "${4:-failed}" "$ratio" >&2
}

PORT=22000
next_port() { PORT=$((PORT + 1)); }
# stack_name TAG: sets SNAME (in this shell, so cleanup sees it).
stack_name() { SNAME="bench-$1-$$"; STACKS+=("$SNAME"); }

# sockperf ping-pong: prints "p50 p99.9" half round trip in microseconds.
sockperf_pp() { # MODE PROFILE PROTO PORT
    local feed="$TMP/feed.$4"
    echo "$3:$ADDR:$4" >"$feed"
    # The latency rows spin on both sides, the kernel's too: epoll_wait
    # with a zero timeout in a loop (sockperf --timeout 0), so the kernel is
    # not charged a wakeup the stack does not pay. The safe rows block.
    local spin=()
    [[ $2 == latency ]] && spin=(--timeout 0)
    serve "$1" "$2" sockperf server -f "$feed" -F epoll "${spin[@]}"
    wait_port "$3" "$4" || { stop_servers; return; }
    launch "$1" "$2" sockperf ping-pong -f "$feed" -F epoll "${spin[@]}" -t "$SECS" -m 64 >"$TMP/pp" 2>&1 || true
    stop_servers
    local p50 p999
    p50=$(awk '/percentile 50.000/ {print $NF}' "$TMP/pp")
    p999=$(awk '/percentile 99.900/ {print $NF}' "$TMP/pp")
    echo "$p50 $p999"
}

sockperf_rows() { # PROTO LABEL PROFILE
    next_port
    local k r
    k=$(sockperf_pp kernel "$3" "$1" "$PORT")
    stack_name "pp$1$3"
    r=$(sockperf_pp "$SNAME" "$3" "$1" "$PORT")
    local how=blocking
    [[ $3 == latency ]] && how=spin
    row "sockperf $2 64 B ping-pong ($how), p50" "us half-RTT" "${k%% *}" "${r%% *}" 1
    row "sockperf $2 64 B ping-pong ($how), p99.9" "us half-RTT" "${k##* }" "${r##* }" 1
}

sockperf_tp() { # MODE PORT: UDP 64 B messages per second received by the server
    local feed="$TMP/feed.$2"
    echo "U:$ADDR:$2" >"$feed"
    serve "$1" throughput sockperf server -f "$feed" -F epoll
    wait_port U "$2" || { stop_servers; return; }
    launch "$1" throughput sockperf throughput -f "$feed" -F epoll -t "$SECS" -m 64 >"$TMP/tp" 2>&1 || true
    stop_servers
    awk '/Summary: Message Rate is/ {for (i = 1; i <= NF; i++) if ($i == "is") print $(i + 1)}' "$TMP/tp"
}

iperf() { # MODE PORT: Gbit/s received
    serve "$1" throughput iperf3 -s -B "$ADDR" -p "$2" -1
    wait_port T "$2" || { stop_servers; return; }
    launch "$1" throughput iperf3 -c "$ADDR" -p "$2" -t "$SECS" -f g >"$TMP/ip" 2>&1 || true
    stop_servers
    awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i - 1)}' "$TMP/ip"
}

redis() { # MODE PORT PIPELINE CLIENTS: "GET SET" requests per second
    serve "$1" latency redis-server --bind "$ADDR" --protected-mode no --port "$2" --save "" --appendonly no
    wait_port T "$2" || { stop_servers; return; }
    launch "$1" latency redis-benchmark -h "$ADDR" -p "$2" -n $((20000 * SECS)) -c "$4" -P "$3" -t get,set -q \
        >"$TMP/rb" 2>&1 || true
    stop_servers
    local get set
    get=$(tr '\r' '\n' <"$TMP/rb" | awk '/^GET: .*requests per second/ {print $2}' | tail -1)
    set=$(tr '\r' '\n' <"$TMP/rb" | awk '/^SET: .*requests per second/ {print $2}' | tail -1)
    echo "${get:-0} ${set:-0}"
}

WHERE="one host, loopback"
((VETH)) && WHERE="two namespaces over veth, rbypass on AF_XDP"
echo "kernel vs rbypass ($WHERE) on $(nproc) cores, $(uname -r), ${SECS}s per run" >&2
if have sockperf; then
    sockperf_rows U UDP latency
    sockperf_rows T TCP latency
    if ((!QUICK)); then
        sockperf_rows U UDP safe
        sockperf_rows T TCP safe
        next_port
        k=$(sockperf_tp kernel "$PORT")
        stack_name tp
        r=$(sockperf_tp "$SNAME" "$PORT")
        row "sockperf UDP 64 B throughput" "msg/s" "$k" "$r" 0
    fi
else
    echo "sockperf missing: its rows are skipped" >&2
fi
if ((!QUICK)) && have iperf3; then
    next_port
    k=$(iperf kernel "$PORT")
    stack_name iperf
    r=$(iperf "$SNAME" "$PORT")
    row "iperf3 TCP, 1 stream" "Gbit/s" "$k" "$r" 0
fi
if have redis-server && have redis-benchmark; then
    for spec in "1 1" "16 4"; do
        set -- $spec
        next_port
        k=$(redis kernel "$PORT" "$1" "$2")
        stack_name "redis$1"
        r=$(redis "$SNAME" "$PORT" "$1" "$2")
        row "redis GET -P $1 -c $2" "req/s" "${k%% *}" "${r%% *}" 0
        row "redis SET -P $1 -c $2" "req/s" "${k##* }" "${r##* }" 0
    done
fi

echo
echo "kernel vs rbypass ($WHERE; $(nproc) cores, $(uname -r), ${SECS}s per run; ratio > 1: rbypass better)"
echo
echo "| benchmark | unit | kernel | rbypass | ratio |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
