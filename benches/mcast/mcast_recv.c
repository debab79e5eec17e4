/* One multicast subscriber of the fan-out benchmark (scripts/bench_preload.sh
 * --mcast), the same binary on the kernel and under `rbypass run`:
 *   mcast_recv GROUP PORT COUNT_EXPECTED TIMEOUT_MS
 * joins GROUP on 127.0.0.1, prints "ready", then receives 64-byte datagrams
 * until the end marker arrives or TIMEOUT_MS pass with nothing (before the
 * first datagram it waits up to 10 s). Prints one line:
 *   recv=R lost=L gaps=G dup=D marker=0|1 cpu_us=C
 * lost: datagrams sent but not received. The total sent is the end marker's
 * count; without the marker, COUNT_EXPECTED (if > 0) or the highest sequence
 * number seen + 1. gaps: how many times the sequence jumped forward. dup:
 * datagrams at or below the last sequence number (out of order or repeated).
 * Blocking recvfrom only, so it runs unchanged under the preload. The idle
 * timeout: a 50 ms interval timer whose SIGALRM handler (no SA_RESTART)
 * interrupts recvfrom with EINTR; every datagram costs one recvfrom and
 * nothing else. With MCAST_RCVTIMEO=1 it uses SO_RCVTIMEO = TIMEOUT_MS
 * instead (what many apps do; note the preload then reads the timeout back
 * from the kernel socket with a getsockopt syscall on every recvfrom). The receive buffer: MCAST_RCVBUF bytes (default 4 MiB) with
 * SO_RCVBUF, then SO_RCVBUFFORCE too when root (past net.core.rmem_max). */
#include "mcast_common.h"
#include <signal.h>
#include <sys/time.h>

static volatile sig_atomic_t ticks;
static void on_alarm(int sig) { (void)sig; ticks++; }

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s GROUP PORT COUNT_EXPECTED TIMEOUT_MS\n", argv[0]);
        return 2;
    }
    struct in_addr group = parse_group(argv[1]);
    int port = atoi(argv[2]);
    long long expected = atoll(argv[3]);
    int timeout_ms = atoi(argv[4]);
    if (port <= 0 || port > 65535 || timeout_ms <= 0) { fprintf(stderr, "bad arguments\n"); return 2; }

    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) die("socket");
    int one = 1;
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one)) die("SO_REUSEADDR");
    int rcvbuf = getenv("MCAST_RCVBUF") ? atoi(getenv("MCAST_RCVBUF")) : 4 << 20;
    /* SO_RCVBUF first (the kernel caps it at rmem_max), then, as root,
     * SO_RCVBUFFORCE (uncapped) for the full size. */
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf)) die("SO_RCVBUF");
    if (geteuid() == 0 && setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf))
        die("SO_RCVBUFFORCE");
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (void *)&a, sizeof a)) die("bind");
    struct ip_mreq mr;
    mr.imr_multiaddr = group;
    mr.imr_interface.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(s, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr)) die("IP_ADD_MEMBERSHIP");
    int use_rcvtimeo = getenv("MCAST_RCVTIMEO") && atoi(getenv("MCAST_RCVTIMEO"));
    if (use_rcvtimeo) {
        struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
        if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)) die("SO_RCVTIMEO");
    } else {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm; /* no SA_RESTART: recvfrom returns EINTR */
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGALRM, &sa, NULL)) die("sigaction");
        struct itimerval it = { { 0, 50000 }, { 0, 50000 } };
        if (setitimer(ITIMER_REAL, &it, NULL)) die("setitimer");
    }
    printf("ready\n");
    fflush(stdout);

    long long c0 = cpu_us();
    uint64_t buf[DGRAM / 8 + 8];
    long long recv = 0, gaps = 0, dup = 0, total = -1;
    uint64_t next = 0; /* the sequence number expected next */
    /* Timer mode: the tick count at the last datagram; idle once
     * TIMEOUT_MS worth of ticks passed since (10 s before the first). */
    int idle = 0, max_idle = 10000 / timeout_ms + 1, tick_ms = 50;
    long long seen = -1;
    sig_atomic_t last_tick = 0;
    for (;;) {
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, NULL, NULL);
        if (n < 0) {
            if (errno == EINTR) {
                if (use_rcvtimeo) continue;
                if (recv != seen) { seen = recv; last_tick = ticks; continue; }
                long long quiet_ms = (long long)(ticks - last_tick) * tick_ms;
                if (quiet_ms >= (recv > 0 ? timeout_ms : 10000)) break;
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) die("recvfrom");
            /* SO_RCVTIMEO: nothing for TIMEOUT_MS: done, unless nothing came yet. */
            if (recv > 0 || ++idle >= max_idle) break;
            continue;
        }
        if (n != DGRAM) continue;
        if (buf[0] == END_MARK) { total = (long long)buf[1]; break; }
        recv++;
        if (buf[0] == next) {
            next++;
        } else if (buf[0] > next) {
            gaps++;
            next = buf[0] + 1;
        } else {
            dup++;
        }
    }
    long long cpu = cpu_us() - c0;
    int marker = total >= 0;
    if (!marker) total = expected > 0 ? expected : (long long)next;
    long long lost = total - (recv - dup);
    if (lost < 0) lost = 0;
    printf("recv=%lld lost=%lld gaps=%lld dup=%lld marker=%d cpu_us=%lld\n", recv, lost, gaps, dup,
           marker, cpu);
    close(s);
    return 0;
}
