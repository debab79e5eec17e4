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
#   scripts/bench_preload.sh --mcast    # multicast fan-out only (under a minute, at most ~3)
#
# With --mcast, only the multicast fan-out rows: one publisher sends 64 B
# datagrams to a 239.0.0.0/8 group on 127.0.0.1 and N = 1, 2, 4, 8
# subscriber processes receive them (benches/mcast/, built here with cc -O2).
# Per N, the highest send rate with under 0.1% loss summed over the
# subscribers that the publisher also reaches (doubling from 50k/s, then
# bisecting; 400 ms trials, a failed one is tried once more), first with
# plain processes (the kernel), then with the publisher and every
# subscriber under `rbypass run --name mcbenchPID-T --profile safe` (one
# fresh shared stack per trial on the in-arena loopback NIC; safe sets
# RBYPASS_SPIN_USEC=0: blocking calls sleep at once, as the kernel's do,
# since up to 9 processes share the cores), and the CPU (user + sys of the
# publisher and subscribers) per delivered datagram. Knobs: MCAST_NS
# ("1 2 4 8"), MCAST_PROFILE (safe), MCAST_TRIAL_MS (400), MCAST_BISECT (3),
# MCAST_RETRY (1), MCAST_BUDGET (175 s for the whole search).
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
MCAST=0
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    --veth) VETH=1 ;;
    --mcast) MCAST=1 ;;
    *)
        echo "usage: $0 [--quick] [--veth] | $0 --mcast" >&2
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
if ((!MCAST && ${#missing[@]})) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
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
    ((MCAST)) && rm -f /dev/shm/rbypass-mcbench$$-*
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

# --mcast: the multicast fan-out rows (see the top of this file).
MC_GROUP=239.77.0.1
MC_MS=${MCAST_TRIAL_MS:-400}    # each trial sends for this long
MC_IDLE_MS=300                  # a subscriber gives up this long after its last datagram
MC_BISECT=${MCAST_BISECT:-3}    # bisection steps after the doubling
MC_MAX=${MCAST_MAX_RATE:-25600000}
MC_RETRY=${MCAST_RETRY:-1}      # a failed trial is run again this many times (other load on the host)
MC_PROFILE=${MCAST_PROFILE:-safe}
MC_NS=${MCAST_NS:-1 2 4 8}
MC_TRIAL=0
# mcast_trial MODE N RATE: one trial, "kernel" or "rbypass"; sets MC_RES to
# "OK ACHIEVED DELIVERED LOST CPU_US" (OK: 1 if the sender reached 97% of
# RATE and under 0.1% of the N x sent datagrams were lost). It runs in this
# shell, not a subshell, so the trap sees the subscribers' PIDs and the
# trial numbers (stack names, ports) stay unique.
mcast_trial() {
    local mode=$1 n=$2 rate=$3 pre=() i ready alive
    MC_TRIAL=$((MC_TRIAL + 1))
    next_port
    local stack=mcbench$$-$MC_TRIAL
    [[ $mode == rbypass ]] && pre=("$R" run --name "$stack" --profile "$MC_PROFILE" --)
    rm -f "$TMP"/mr.* "$TMP/ms"
    for ((i = 0; i < n; i++)); do
        setsid "${pre[@]}" "$TMP/mcast_recv" "$MC_GROUP" "$PORT" 0 "$MC_IDLE_MS" >"$TMP/mr.$i" 2>&1 &
        PIDS+=($!)
    done
    for _ in $(seq 200); do
        ready=0
        for ((i = 0; i < n; i++)); do grep -q '^ready' "$TMP/mr.$i" && ready=$((ready + 1)); done
        ((ready == n)) && break
        sleep 0.05
    done
    if ((ready == n)); then
        timeout 30 "${pre[@]}" "$TMP/mcast_send" "$MC_GROUP" "$PORT" "$rate" "$MC_MS" >"$TMP/ms" 2>&1 || true
        # The subscribers end on the end marker, or MC_IDLE_MS after their last datagram.
        for _ in $(seq 100); do
            alive=0
            for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.05
        done
    else
        echo "  $mode N=$n: only $ready of $n subscribers ready" >&2
    fi
    stop_servers
    rm -f "/dev/shm/rbypass-$stack" "/dev/shm/rbypass-$stack"-*
    MC_RES=$(cat "$TMP"/mr.* "$TMP/ms" 2>/dev/null | awk -v n="$n" -v rate="$rate" '
        function val(k,   i) { for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) return substr($i, length(k) + 2); return "" }
        /^recv=/ { got++; del += val("recv") - val("dup"); cpu += val("cpu_us") }
        /^sent=/ { sent = val("sent") + 0; ach = val("achieved_rate") + 0; cpu += val("cpu_us") }
        END {
            lost = n * sent - del
            ok = (got == n && sent > 0 && ach >= 0.97 * rate && lost * 1000 < n * sent) ? 1 : 0
            printf "%d %d %d %d %d\n", ok, ach + 0, del + 0, lost + 0, cpu + 0
        }')
}
# mcast_search MODE N: the highest passing rate; sets MC_BEST to "ACHIEVED
# CPU_US_PER_DATAGRAM" of that trial, or "- -" if none passed. A rate
# passes if one of 1 + MC_RETRY trials passes.
mcast_search() {
    local mode=$1 n=$2 rate=50000 lo=0 hi=0 best="- -" ok ach del lost cpu step=0 try
    while :; do
        if ((SECONDS > MC_DEADLINE)); then
            echo "  $mode N=$n: out of time, search cut short" >&2
            break
        fi
        if ((hi == 0)); then
            ((rate > MC_MAX)) && break
        else
            ((step >= MC_BISECT)) && break
            step=$((step + 1))
            rate=$(((lo + hi) / 2))
        fi
        for ((try = 0; try <= MC_RETRY; try++)); do
            mcast_trial "$mode" "$n" "$rate"
            read -r ok ach del lost cpu <<<"$MC_RES"
            awk -v m="$mode" -v n="$n" -v r="$rate" -v a="$ach" -v d="$del" -v l="$lost" -v c="$cpu" -v ok="$ok" 'BEGIN {
            printf "  %-7s N=%d rate %9d/s: achieved %9d/s, lost %.3f%%, %.3f us CPU per delivered datagram: %s\n",
                m, n, r, a, (d + l) ? 100 * l / (d + l) : 100, d ? c / d : 0, ok ? "pass" : "fail" }' >&2
            ((ok)) && break
        done
        if ((ok)); then
            lo=$rate
            best=$(awk -v a="$ach" -v d="$del" -v c="$cpu" 'BEGIN {printf "%d %.3f", a, c / d}')
            ((hi == 0)) && rate=$((rate * 2))
        else
            hi=$rate
        fi
    done
    MC_BEST=$best
}
mcast_mode() {
    ((VETH)) && { echo "--mcast runs on one host only (no --veth)" >&2; exit 2; }
    cc -O2 -Wall -o "$TMP/mcast_send" benches/mcast/mcast_send.c
    cc -O2 -Wall -o "$TMP/mcast_recv" benches/mcast/mcast_recv.c
    MC_DEADLINE=$((SECONDS + ${MCAST_BUDGET:-175}))
    local note="$(nproc) cores shared by the sender and N subscribers, $(uname -r), ${MC_MS} ms per trial"
    echo "multicast fan-out, kernel vs one shared rbypass stack (loop NIC, --profile $MC_PROFILE): $note" >&2
    local n k r out=()
    for n in $MC_NS; do
        mcast_search kernel "$n"
        k=$MC_BEST
        mcast_search rbypass "$n"
        r=$MC_BEST
        out+=("$(awk -v n="$n" -v k="$k" -v r="$r" 'BEGIN {
            split(k, a, " "); split(r, b, " ")
            ratio = (a[1] > 0 && b[1] > 0) ? sprintf("%.2fx", b[1] / a[1]) : "n/a"
            printf "| %d | %s | %s | %s | %s | %s |", n, a[1], b[1], ratio, a[2], b[2] }')")
        printf '%s\n' "${out[-1]}" >&2
    done
    echo
    echo "multicast 64 B fan-out to N subscribers, one host (group $MC_GROUP on 127.0.0.1): kernel vs one shared"
    echo "rbypass stack (in-arena loop NIC, every process under \`rbypass run --profile $MC_PROFILE\`; safe: blocking, no spin)."
    echo "Rate: the highest send rate (datagrams/s to each subscriber) reached with under 0.1% loss summed over the"
    echo "subscribers (best of $((MC_RETRY + 1)) trials per rate). CPU: user + sys of the sender (its busy-wait pacing"
    echo "included) and the subscribers per delivered datagram, at that rate (softirq work the kernel defers to"
    echo "ksoftirqd is not counted). Note: $note; with N = 8, nine processes share them. Ratio > 1: rbypass better."
    echo
    echo "| subscribers | kernel msg/s | rbypass msg/s | ratio | kernel us CPU/datagram | rbypass us CPU/datagram |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${out[@]}"
    echo "(--mcast took ${SECONDS}s)"
}
if ((MCAST)); then
    mcast_mode
    exit 0
fi

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
