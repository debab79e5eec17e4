/* Shared by mcast_send.c and mcast_recv.c: the datagram layout and helpers.
 * Every datagram is 64 bytes: word 0 is the sequence number (0, 1, 2, ...),
 * or END_MARK for the end marker, whose word 1 is the number of datagrams
 * the sender sent. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DGRAM 64
#define END_MARK UINT64_MAX

static inline void die(const char *m) { perror(m); exit(1); }

static inline uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* User + system CPU time of this process (all threads), microseconds. */
static inline long long cpu_us(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (long long)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000ll + u.ru_utime.tv_usec +
           u.ru_stime.tv_usec;
}

static inline struct in_addr parse_group(const char *s) {
    struct in_addr g;
    if (inet_pton(AF_INET, s, &g) != 1) { fprintf(stderr, "bad group %s\n", s); exit(2); }
    /* Only the administratively scoped 239.0.0.0/8, never a global group. */
    if ((ntohl(g.s_addr) >> 24) != 239) { fprintf(stderr, "group %s is not in 239.0.0.0/8\n", s); exit(2); }
    return g;
}
