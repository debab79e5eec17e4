/* Shared helpers for the socket semantics programs (tests/c/sem_*.c).
 *
 * Each program is run twice by tests/preload_semantics.rs: once on the plain
 * kernel (the oracle) and once under `rbypass run`; the outputs must be equal.
 * So everything printed is deterministic: results, errno names, booleans, and
 * port numbers only as offsets from the base port given on the command line.
 *
 *   prog BASEPORT [CHECK...]     (no CHECK: all of them, in table order)
 *   prog --list                  (the check names, one a line)
 *
 * Check number i uses ports BASEPORT + 10*i .. BASEPORT + 10*i + 9. */
#ifndef SEM_COMMON_H
#define SEM_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wunused-function"

static int g_port0;      /* first port of the running check */
static const char *g_check; /* name of the running check */

/* One result line, prefixed with the check name. */
#define OUT(...)                                                                                   \
    do {                                                                                           \
        printf("%s: ", g_check);                                                                   \
        printf(__VA_ARGS__);                                                                       \
        putchar('\n');                                                                             \
        fflush(stdout);                                                                            \
    } while (0)

/* A setup step that must succeed; failing it ends the program (the harness sees the diff). */
#define MUST(x)                                                                                    \
    do {                                                                                           \
        if ((x) < 0) {                                                                             \
            printf("%s: FATAL %s failed: %s (line %d)\n", g_check, #x, strerror(errno), __LINE__); \
            fflush(stdout);                                                                        \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static const char *en(int e) {
    switch (e) {
#define E(x) case x: return #x;
        E(EAGAIN) E(EINPROGRESS) E(EALREADY) E(ECONNREFUSED) E(ECONNRESET) E(EADDRINUSE)
        E(EADDRNOTAVAIL) E(EPIPE) E(ENOTCONN) E(EISCONN) E(EINVAL) E(EBADF) E(ENOTSOCK)
        E(EOPNOTSUPP) E(EMSGSIZE) E(EDESTADDRREQ) E(EFAULT) E(ENOPROTOOPT) E(ETIMEDOUT)
        E(EINTR) E(EAFNOSUPPORT) E(EACCES) E(ENOENT) E(EEXIST)
#undef E
    case 0: return "0";
    default: {
        static char b[32];
        snprintf(b, sizeof b, "errno%d", e);
        return b;
    }
    }
}

/* "ok N" for a non-negative result, "-1 ENAME" otherwise. */
static const char *res(long r) {
    static char b[2][64];
    static int k;
    k ^= 1;
    if (r >= 0)
        snprintf(b[k], sizeof b[k], "ok %ld", r);
    else
        snprintf(b[k], sizeof b[k], "-1 %s", en(errno));
    return b[k];
}

static int port(int k) { return g_port0 + k; }

static struct sockaddr_in lo(int p) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(p);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Describes an address deterministically: "127.0.0.1:+K" for a port of this
 * check, "127.0.0.1:eph" for any other nonzero port, ":0" for port 0. */
static const char *addr_str(const struct sockaddr_in *a) {
    static char b[2][64];
    static int k;
    k ^= 1;
    int p = ntohs(a->sin_port);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    if (p == 0)
        snprintf(b[k], sizeof b[k], "%s:0", ip);
    else if (p >= g_port0 && p < g_port0 + 10)
        snprintf(b[k], sizeof b[k], "%s:+%d", ip, p - g_port0);
    else
        snprintf(b[k], sizeof b[k], "%s:eph", ip);
    return b[k];
}

static const char *sockname(int fd) {
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    memset(&a, 0, sizeof a);
    if (getsockname(fd, (struct sockaddr *)&a, &l) < 0) return res(-1);
    return addr_str(&a);
}

static const char *peername(int fd) {
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    memset(&a, 0, sizeof a);
    if (getpeername(fd, (struct sockaddr *)&a, &l) < 0) return res(-1);
    return addr_str(&a);
}

static int port_of(int fd, int peer) {
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    memset(&a, 0, sizeof a);
    int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l) : getsockname(fd, (struct sockaddr *)&a, &l);
    return r < 0 ? -1 : ntohs(a.sin_port);
}

static int tcp_listener(int p) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    MUST(l);
    MUST(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    struct sockaddr_in a = lo(p);
    MUST(bind(l, (struct sockaddr *)&a, sizeof a));
    MUST(listen(l, 16));
    return l;
}

static int tcp_connect_to(int p) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    MUST(s);
    struct sockaddr_in a = lo(p);
    MUST(connect(s, (struct sockaddr *)&a, sizeof a));
    return s;
}

/* A connected TCP pair on port(k): *c client, *s accepted; returns the listener. */
static int tcp_pair(int k, int *c, int *s) {
    int l = tcp_listener(port(k));
    *c = tcp_connect_to(port(k));
    *s = accept(l, NULL, NULL);
    MUST(*s);
    return l;
}

static int udp_bound(int p) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(s);
    if (p >= 0) {
        struct sockaddr_in a = lo(p);
        MUST(bind(s, (struct sockaddr *)&a, sizeof a));
    }
    return s;
}

/* Waits (bounded) until fd is readable; returns whether it is. */
static int wait_readable(int fd, int ms) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static long read_full(int fd, void *buf, long n) {
    long got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return got ? got : k;
        got += k;
    }
    return got;
}

static long write_full(int fd, const void *buf, long n) {
    long put = 0;
    while (put < n) {
        ssize_t k = write(fd, (const char *)buf + put, n - put);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return k;
        put += k;
    }
    return put;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void msleep(int ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) < 0 && errno == EINTR) {}
}

/* Waits for a child and reports how it ended. */
static const char *child_status(pid_t pid) {
    static char b[48];
    int st = 0;
    if (waitpid(pid, &st, 0) < 0) return "waitpid failed";
    if (WIFEXITED(st)) snprintf(b, sizeof b, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st)) snprintf(b, sizeof b, "signal %d", WTERMSIG(st));
    else snprintf(b, sizeof b, "status %d", st);
    return b;
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, long n) {
    for (long i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

struct check {
    const char *name;
    void (*fn)(void);
};

static int run_checks(const struct check *t, int n, int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s BASEPORT [CHECK...]\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "--list")) {
        for (int i = 0; i < n; i++) printf("%s\n", t[i].name);
        return 0;
    }
    int base = atoi(argv[1]);
    for (int j = 2; j < argc; j++) {
        int found = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(argv[j], t[i].name)) found = 1;
        if (!found) {
            fprintf(stderr, "unknown check %s\n", argv[j]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN); /* checks that want SIGPIPE install a handler */
    for (int i = 0; i < n; i++) {
        int want = argc == 2;
        for (int j = 2; j < argc; j++)
            if (!strcmp(argv[j], t[i].name)) want = 1;
        if (!want) continue;
        g_check = t[i].name;
        g_port0 = base + 10 * i;
        t[i].fn();
    }
    printf("done\n");
    return 0;
}

#endif
