/* UDP socket semantics over 127.0.0.1; output must be identical with and
 * without rbypass (see sem_common.h). */
#include "sem_common.h"

static long recvfrom_str(int fd, char *b, int n, int flags, const char **from) {
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    memset(&a, 0, sizeof a);
    long r = recvfrom(fd, b, n, flags, (struct sockaddr *)&a, &al);
    int e = errno;
    *from = r >= 0 ? addr_str(&a) : "-";
    errno = e;
    return r;
}

static void sendto_recvfrom(void) {
    int a = udp_bound(port(0)), b = udp_bound(port(1));
    struct sockaddr_in to = lo(port(0));
    OUT("sendto %s", res(sendto(b, "ping", 4, 0, (struct sockaddr *)&to, sizeof to)));
    char buf[64] = {0};
    const char *from;
    long n = recvfrom_str(a, buf, sizeof buf, 0, &from);
    OUT("recvfrom %s '%.*s' from %s", res(n), (int)(n > 0 ? n : 0), buf, from);
    struct sockaddr_in back = lo(port(1));
    OUT("reply %s", res(sendto(a, "pong!", 5, 0, (struct sockaddr *)&back, sizeof back)));
    n = recvfrom_str(b, buf, sizeof buf, 0, &from);
    OUT("recvfrom %s '%.*s' from %s", res(n), (int)(n > 0 ? n : 0), buf, from);
    /* recvfrom with no address buffer and with a short one. */
    sendto(b, "x", 1, 0, (struct sockaddr *)&to, sizeof to);
    OUT("recvfrom_null_addr %s", res(recvfrom(a, buf, sizeof buf, 0, NULL, NULL)));
    sendto(b, "y", 1, 0, (struct sockaddr *)&to, sizeof to);
    char small[4];
    socklen_t sl = sizeof small;
    long r = recvfrom(a, buf, sizeof buf, 0, (struct sockaddr *)small, &sl);
    OUT("recvfrom_short_addr %s len=%d", res(r), (int)sl);
    close(a);
    close(b);
}

static void connected(void) {
    int a = udp_bound(port(0)), b = udp_bound(port(1)), other = udp_bound(port(2));
    struct sockaddr_in pa = lo(port(0)), pb = lo(port(1));
    OUT("connect %s", res(connect(b, (struct sockaddr *)&pa, sizeof pa)));
    OUT("peername %s sockname %s", peername(b), sockname(b));
    OUT("send %s", res(send(b, "hello", 5, 0)));
    char buf[64] = {0};
    const char *from;
    long n = recvfrom_str(a, buf, sizeof buf, 0, &from);
    OUT("recvfrom %s '%.*s' from %s", res(n), (int)(n > 0 ? n : 0), buf, from);
    OUT("reply %s", res(sendto(a, "world", 5, 0, (struct sockaddr *)&pb, sizeof pb)));
    n = recv(b, buf, sizeof buf, 0);
    OUT("recv %s '%.*s'", res(n), (int)(n > 0 ? n : 0), buf);
    /* A connected socket only receives from its peer. */
    OUT("other_sendto %s", res(sendto(other, "spam", 4, 0, (struct sockaddr *)&pb, sizeof pb)));
    msleep(50);
    OUT("recv_filtered %s", res(recv(b, buf, sizeof buf, MSG_DONTWAIT)));
    OUT("write %s", res(write(b, "w", 1)));
    n = read(a, buf, sizeof buf);
    OUT("read %s", res(n));
    /* Dissolve the association with AF_UNSPEC. */
    struct sockaddr un;
    memset(&un, 0, sizeof un);
    un.sa_family = AF_UNSPEC;
    OUT("connect_unspec %s", res(connect(b, &un, sizeof un)));
    OUT("peername_after %s", peername(b));
    OUT("send_unconnected %s", res(send(b, "z", 1, 0)));
    close(a);
    close(b);
    close(other);
}

static void msg_trunc(void) {
    int a = udp_bound(port(0)), b = udp_bound(-1);
    struct sockaddr_in to = lo(port(0));
    char big[100], buf[100];
    memset(big, 'm', sizeof big);
    sendto(b, big, 100, 0, (struct sockaddr *)&to, sizeof to);
    sendto(b, big, 100, 0, (struct sockaddr *)&to, sizeof to);
    sendto(b, "after", 5, 0, (struct sockaddr *)&to, sizeof to);
    wait_readable(a, 5000);
    msleep(20);
    OUT("recv_small %s", res(recv(a, buf, 10, 0)));
    OUT("recv_trunc %s", res(recv(a, buf, 10, MSG_TRUNC)));
    long n = recv(a, buf, sizeof buf, 0);
    OUT("next_datagram %s '%.*s'", res(n), (int)(n > 0 ? n : 0), buf);
    OUT("empty %s", res(recv(a, buf, sizeof buf, MSG_DONTWAIT)));
    close(a);
    close(b);
}

static void peek(void) {
    int a = udp_bound(port(0)), b = udp_bound(port(1));
    struct sockaddr_in to = lo(port(0));
    sendto(b, "first", 5, 0, (struct sockaddr *)&to, sizeof to);
    sendto(b, "second", 6, 0, (struct sockaddr *)&to, sizeof to);
    wait_readable(a, 5000);
    msleep(20);
    char buf[64] = {0};
    const char *from;
    long n = recvfrom_str(a, buf, sizeof buf, MSG_PEEK, &from);
    OUT("peek %s '%.*s' from %s", res(n), (int)(n > 0 ? n : 0), buf, from);
    n = recvfrom_str(a, buf, 3, MSG_PEEK, &from);
    OUT("peek_short %s '%.*s'", res(n), (int)(n > 0 ? n : 0), buf);
    n = recv(a, buf, sizeof buf, 0);
    OUT("recv %s '%.*s'", res(n), (int)(n > 0 ? n : 0), buf);
    n = recv(a, buf, sizeof buf, 0);
    OUT("recv %s '%.*s'", res(n), (int)(n > 0 ? n : 0), buf);
    close(a);
    close(b);
}

static void fionread(void) {
    int a = udp_bound(port(0)), b = udp_bound(-1);
    struct sockaddr_in to = lo(port(0));
    int n = -1;
    int r = ioctl(a, FIONREAD, &n);
    OUT("empty %s n=%d", res(r), n);
    char buf[64];
    memset(buf, 'f', sizeof buf);
    sendto(b, buf, 30, 0, (struct sockaddr *)&to, sizeof to);
    sendto(b, buf, 50, 0, (struct sockaddr *)&to, sizeof to);
    wait_readable(a, 5000);
    msleep(20);
    r = ioctl(a, FIONREAD, &n);
    OUT("first_datagram %s n=%d", res(r), n);
    recv(a, buf, sizeof buf, 0);
    r = ioctl(a, FIONREAD, &n);
    OUT("second_datagram %s n=%d", res(r), n);
    close(a);
    close(b);
}

static void nonblocking(void) {
    int a = udp_bound(port(0));
    char buf[8];
    OUT("msg_dontwait %s", res(recv(a, buf, sizeof buf, MSG_DONTWAIT)));
    MUST(fcntl(a, F_SETFL, fcntl(a, F_GETFL) | O_NONBLOCK));
    OUT("o_nonblock %s", res(recvfrom(a, buf, sizeof buf, 0, NULL, NULL)));
    close(a);
    int b = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in pb = lo(port(1));
    MUST(bind(b, (struct sockaddr *)&pb, sizeof pb));
    OUT("sock_nonblock %s", res(read(b, buf, sizeof buf)));
    close(b);
    int c = udp_bound(port(2)), on = 1;
    OUT("fionbio %s", res(ioctl(c, FIONBIO, &on)));
    OUT("fionbio_recv %s", res(recv(c, buf, sizeof buf, 0)));
    close(c);
}

static void zero_length(void) {
    int a = udp_bound(port(0)), b = udp_bound(-1);
    struct sockaddr_in to = lo(port(0));
    OUT("send_empty %s", res(sendto(b, "", 0, 0, (struct sockaddr *)&to, sizeof to)));
    char buf[8];
    OUT("wait %d", wait_readable(a, 5000));
    OUT("recv_empty %s", res(recv(a, buf, sizeof buf, 0)));
    close(a);
    close(b);
}

static void bind_rules(void) {
    struct sockaddr_in pa = lo(port(0));
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
    OUT("bind1 %s", res(bind(a, (struct sockaddr *)&pa, sizeof pa)));
    OUT("bind2 %s", res(bind(b, (struct sockaddr *)&pa, sizeof pa)));
    OUT("rebind_same_socket %s", res(bind(a, (struct sockaddr *)&pa, sizeof pa)));
    close(a);
    close(b);
    struct sockaddr_in other;
    memset(&other, 0, sizeof other);
    other.sin_family = AF_INET;
    other.sin_port = htons(port(2));
    inet_pton(AF_INET, "192.0.2.1", &other.sin_addr);
    a = socket(AF_INET, SOCK_DGRAM, 0);
    OUT("bind_foreign_addr %s", res(bind(a, (struct sockaddr *)&other, sizeof other)));
    close(a);
}

/* Two UDP sockets with SO_REUSEADDR may bind the same port. */
static void reuseaddr_double_bind(void) {
    struct sockaddr_in pb = lo(port(0));
    int one = 1;
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
    setsockopt(a, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    OUT("reuse_bind1 %s", res(bind(a, (struct sockaddr *)&pb, sizeof pb)));
    OUT("reuse_bind2 %s", res(bind(b, (struct sockaddr *)&pb, sizeof pb)));
    close(a);
    close(b);
}

static void ephemeral(void) {
    int a = udp_bound(port(0)), b = socket(AF_INET, SOCK_DGRAM, 0);
    OUT("unbound_sockname %s", sockname(b));
    struct sockaddr_in to = lo(port(0));
    OUT("sendto %s", res(sendto(b, "auto", 4, 0, (struct sockaddr *)&to, sizeof to)));
    OUT("sockname_after_send %s", sockname(b));
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    char buf[8];
    long n = recvfrom(a, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    OUT("recvfrom %s source_port_matches=%d", res(n), ntohs(from.sin_port) == port_of(b, 0));
    OUT("reply %s", res(sendto(a, "ok", 2, 0, (struct sockaddr *)&from, fl)));
    OUT("recv %s", res(recv(b, buf, sizeof buf, 0)));
    close(a);
    close(b);
}

static void rcvtimeo(void) {
    int a = udp_bound(port(0));
    struct timeval tv = {0, 150000};
    OUT("set %s", res(setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
    char buf[8];
    double t0 = now_ms();
    long r = recv(a, buf, sizeof buf, 0);
    double dt = now_ms() - t0;
    OUT("recv %s waited_100ms_to_3s=%d", res(r), dt >= 100 && dt < 3000);
    close(a);
}

/* A connected socket sending to a port nobody has: ICMP port unreachable
 * makes a later call fail with ECONNREFUSED. */
static void refused(void) {
    int b = udp_bound(-1);
    struct sockaddr_in to = lo(port(0));
    OUT("connect %s", res(connect(b, (struct sockaddr *)&to, sizeof to)));
    OUT("send %s", res(send(b, "anyone?", 7, 0)));
    msleep(50);
    char buf[8];
    OUT("recv %s", res(recv(b, buf, sizeof buf, MSG_DONTWAIT)));
    OUT("recv_again %s", res(recv(b, buf, sizeof buf, MSG_DONTWAIT)));
    close(b);
}

static void sockopts(void) {
    int a = udp_bound(port(0));
    int v = -1;
    socklen_t vl = sizeof v;
    getsockopt(a, SOL_SOCKET, SO_TYPE, &v, &vl);
    OUT("so_type_dgram=%d", v == SOCK_DGRAM);
    int want = 65536;
    OUT("set so_rcvbuf %s", res(setsockopt(a, SOL_SOCKET, SO_RCVBUF, &want, sizeof want)));
    vl = sizeof v;
    getsockopt(a, SOL_SOCKET, SO_RCVBUF, &v, &vl);
    OUT("so_rcvbuf_ge_set=%d", v >= want);
    OUT("set so_sndbuf %s", res(setsockopt(a, SOL_SOCKET, SO_SNDBUF, &want, sizeof want)));
    vl = sizeof v;
    getsockopt(a, SOL_SOCKET, SO_SNDBUF, &v, &vl);
    OUT("so_sndbuf_ge_set=%d", v >= want);
    int one = 1;
    OUT("set so_broadcast %s", res(setsockopt(a, SOL_SOCKET, SO_BROADCAST, &one, sizeof one)));
    vl = sizeof v;
    getsockopt(a, SOL_SOCKET, SO_BROADCAST, &v, &vl);
    OUT("so_broadcast=%d", v != 0);
    OUT("tcp_nodelay_on_udp %s", res(setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one)));
    close(a);
}

static void many_datagrams(void) {
    int a = udp_bound(port(0)), b = udp_bound(port(1));
    struct sockaddr_in pa = lo(port(0)), pb = lo(port(1));
    char out[2000], in[2000];
    int ok = 0;
    uint64_t h = FNV_INIT;
    for (int i = 0; i < 500; i++) {
        int len = 1 + (i * 37) % 1472;
        for (int j = 0; j < len; j++) out[j] = (char)(i * 3 + j);
        if (sendto(b, out, len, 0, (struct sockaddr *)&pa, sizeof pa) != len) break;
        long n = recv(a, in, sizeof in, 0);
        if (n != len || memcmp(in, out, len)) break;
        h = fnv1a(h, (unsigned char *)in, n);
        if (sendto(a, in, n, 0, (struct sockaddr *)&pb, sizeof pb) != n) break;
        if (recv(b, in, sizeof in, 0) != n) break;
        ok++;
    }
    OUT("round_trips %d/500 fnv=%016llx", ok, (unsigned long long)h);
    close(a);
    close(b);
}

static void send_sizes(const int *lens, int n, int too_big) {
    int a = udp_bound(port(0)), b = udp_bound(-1);
    struct sockaddr_in pa = lo(port(0));
    static char out[65535], in[65535];
    for (int i = 0; i < (int)sizeof out; i++) out[i] = (char)(i * 7);
    for (int k = 0; k < n; k++) {
        int len = lens[k];
        long r = sendto(b, out, len, 0, (struct sockaddr *)&pa, sizeof pa);
        OUT("sendto %d %s", len, res(r));
        if (r < 0) continue;
        long got = recv(a, in, sizeof in, 0);
        OUT("recv %s same=%d", res(got), got == len && !memcmp(in, out, len));
    }
    if (too_big) OUT("too_big %s", res(sendto(b, out, 65535, 0, (struct sockaddr *)&pa, sizeof pa)));
    close(a);
    close(b);
}

/* Datagrams up to the Ethernet MTU, and one larger than IP allows. */
static void large_datagram(void) {
    static const int lens[] = {1000, 1472};
    send_sizes(lens, 2, 1);
}

/* Datagrams above 1472 bytes: loopback's MTU is 64 KiB. */
static void jumbo_datagram(void) {
    static const int lens[] = {8000, 60000};
    send_sizes(lens, 2, 0);
}

static void fork_inherit(void) {
    int a = udp_bound(port(0)), b = udp_bound(port(1));
    struct sockaddr_in pa = lo(port(0));
    pid_t pid = fork();
    if (pid == 0) {
        char buf[16];
        int ok = sendto(b, "from child", 10, 0, (struct sockaddr *)&pa, sizeof pa) == 10;
        ok = ok && recv(b, buf, sizeof buf, 0) == 11;
        _exit(ok ? 0 : 1);
    }
    char buf[16] = {0};
    const char *from;
    long n = recvfrom_str(a, buf, sizeof buf, 0, &from);
    OUT("parent_recv %s '%.*s' from %s", res(n), (int)(n > 0 ? n : 0), buf, from);
    struct sockaddr_in pb = lo(port(1));
    OUT("parent_reply %s", res(sendto(a, "from parent", 11, 0, (struct sockaddr *)&pb, sizeof pb)));
    OUT("child %s", child_status(pid));
    close(a);
    close(b);
}

/* A socket bound to INADDR_ANY receives datagrams sent to 127.0.0.1; its
 * replies come from 127.0.0.1. */
static void any_addr(void) {
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = udp_bound(port(1));
    struct sockaddr_in pa = lo(port(0));
    pa.sin_addr.s_addr = htonl(INADDR_ANY);
    MUST(bind(a, (struct sockaddr *)&pa, sizeof pa));
    OUT("sockname %s", sockname(a));
    struct sockaddr_in to = lo(port(0));
    OUT("sendto %s", res(sendto(b, "any", 3, 0, (struct sockaddr *)&to, sizeof to)));
    char buf[8];
    const char *from;
    long n = recvfrom_str(a, buf, sizeof buf, 0, &from);
    OUT("recvfrom %s from %s", res(n), from);
    struct sockaddr_in pb = lo(port(1));
    OUT("reply %s", res(sendto(a, "r", 1, 0, (struct sockaddr *)&pb, sizeof pb)));
    n = recvfrom_str(b, buf, sizeof buf, 0, &from);
    OUT("reply_recvfrom %s from %s", res(n), from);
    close(a);
    close(b);
}

/* sendto() with an address on a connected UDP socket goes to that address. */
static void sendto_on_connected(void) {
    int a = udp_bound(port(0)), b = udp_bound(port(1)), c = udp_bound(port(2));
    struct sockaddr_in pa = lo(port(0)), pc = lo(port(2));
    MUST(connect(b, (struct sockaddr *)&pa, sizeof pa));
    OUT("sendto_other %s", res(sendto(b, "to-c", 4, 0, (struct sockaddr *)&pc, sizeof pc)));
    char buf[8];
    const char *from;
    long n = recvfrom_str(c, buf, sizeof buf, 0, &from);
    OUT("c_recvfrom %s from %s", res(n), from);
    OUT("a_empty %s", res(recv(a, buf, sizeof buf, MSG_DONTWAIT)));
    OUT("sendto_null %s", res(sendto(b, "to-a", 4, 0, NULL, 0)));
    n = recvfrom_str(a, buf, sizeof buf, 0, &from);
    OUT("a_recvfrom %s from %s", res(n), from);
    close(a);
    close(b);
    close(c);
}

static const struct check checks[] = {
    {"sendto_recvfrom", sendto_recvfrom},
    {"connected", connected},
    {"msg_trunc", msg_trunc},
    {"peek", peek},
    {"fionread", fionread},
    {"nonblocking", nonblocking},
    {"zero_length", zero_length},
    {"bind_rules", bind_rules},
    {"reuseaddr_double_bind", reuseaddr_double_bind},
    {"ephemeral", ephemeral},
    {"rcvtimeo", rcvtimeo},
    {"refused", refused},
    {"sockopts", sockopts},
    {"many_datagrams", many_datagrams},
    {"large_datagram", large_datagram},
    {"jumbo_datagram", jumbo_datagram},
    {"fork_inherit", fork_inherit},
    {"any_addr", any_addr},
    {"sendto_on_connected", sendto_on_connected},
};

int main(int argc, char **argv) { return run_checks(checks, sizeof checks / sizeof checks[0], argc, argv); }
