/* The multicast publisher of the fan-out benchmark (scripts/bench_preload.sh
 * --mcast), the same binary on the kernel and under `rbypass run`:
 *   mcast_send GROUP PORT RATE_PER_SEC DURATION_MS
 * sends 64-byte datagrams numbered 0, 1, 2, ... to GROUP:PORT for
 * DURATION_MS, paced to RATE_PER_SEC by busy-waiting on CLOCK_MONOTONIC
 * (it sends what is due in batches of up to 64, so it can reach millions a
 * second), from 127.0.0.1 (IP_MULTICAST_IF) with IP_MULTICAST_LOOP on and
 * TTL MCAST_TTL (default 0: local delivery only). Then it sends the end
 * marker (carrying the count sent) 5 times, 20 ms apart. Prints one line:
 *   sent=S achieved_rate=A send_err=E cpu_us=C
 * A falls short of RATE_PER_SEC when this process cannot keep up. Blocking
 * sendto only, so it runs unchanged under the preload. */
#include "mcast_common.h"

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s GROUP PORT RATE_PER_SEC DURATION_MS\n", argv[0]);
        return 2;
    }
    struct in_addr group = parse_group(argv[1]);
    int port = atoi(argv[2]);
    double rate = atof(argv[3]);
    long long dur_ms = atoll(argv[4]);
    if (port <= 0 || port > 65535 || rate <= 0 || dur_ms <= 0 || dur_ms > 600000) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) die("socket");
    struct in_addr ifa = { htonl(INADDR_LOOPBACK) };
    if (setsockopt(s, IPPROTO_IP, IP_MULTICAST_IF, &ifa, sizeof ifa)) die("IP_MULTICAST_IF");
    unsigned char loop = 1, ttl = getenv("MCAST_TTL") ? (unsigned char)atoi(getenv("MCAST_TTL")) : 0;
    if (setsockopt(s, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop)) die("IP_MULTICAST_LOOP");
    if (setsockopt(s, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl)) die("IP_MULTICAST_TTL");
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr = group;

    uint64_t buf[DGRAM / 8];
    memset(buf, 0, sizeof buf);
    long long c0 = cpu_us();
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)dur_ms * 1000000ull, t = t0;
    uint64_t seq = 0, errs = 0;
    double per_ns = rate / 1e9;
    while (t < end) {
        uint64_t due = (uint64_t)((double)(t - t0) * per_ns) + 1;
        int batch = 0;
        while (seq < due && batch < 64) {
            buf[0] = seq;
            if (sendto(s, buf, DGRAM, 0, (void *)&to, sizeof to) == DGRAM) {
                seq++;
            } else {
                if (errno != EINTR && errno != ENOBUFS && errno != EAGAIN) die("sendto");
                errs++;
            }
            batch++;
        }
        t = now_ns();
    }
    double secs = (double)(t - t0) / 1e9;
    long long cpu = cpu_us() - c0;
    buf[0] = END_MARK;
    buf[1] = seq;
    for (int i = 0; i < 5; i++) {
        struct timespec d = { 0, 20 * 1000000 };
        nanosleep(&d, NULL);
        if (sendto(s, buf, DGRAM, 0, (void *)&to, sizeof to) != DGRAM) errs++;
    }
    printf("sent=%llu achieved_rate=%.0f send_err=%llu cpu_us=%lld\n", (unsigned long long)seq,
           (double)seq / secs, (unsigned long long)errs, cpu);
    close(s);
    return 0;
}
