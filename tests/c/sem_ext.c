/* Scatter/gather I/O, sendmsg/recvmsg, select/pselect/ppoll, epoll and
 * sendfile on sockets over 127.0.0.1; output must be identical with and
 * without rbypass (see sem_common.h). Waits are bounded so that a call the
 * library does not serve yet shows up as a difference, not a hang. */
#include "sem_common.h"

#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/uio.h>

static void writev_readv(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    struct iovec out[3] = {{"abc", 3}, {"", 0}, {"defgh", 5}};
    OUT("writev %s", res(writev(c, out, 3)));
    wait_readable(s, 2000);
    msleep(20);
    char x[2] = {0}, y[4] = {0}, z[8] = {0};
    struct iovec in[3] = {{x, 2}, {y, 4}, {z, 8}};
    long n = readv(s, in, 3);
    OUT("readv %s '%.2s' '%.4s' '%.2s'", res(n), x, y, z);
    OUT("readv_empty_nonblock %s", res(recv(s, x, 1, MSG_DONTWAIT)));
    close(c);
    OUT("readv_eof %s", res(readv(s, in, 3)));
    close(s);
    close(l);
}

static void sendmsg_recvmsg_tcp(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    struct iovec out[2] = {{"hello ", 6}, {"msg", 3}};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = out;
    m.msg_iovlen = 2;
    OUT("sendmsg %s", res(sendmsg(c, &m, 0)));
    wait_readable(s, 2000);
    msleep(20);
    char a[4] = {0}, b[16] = {0};
    struct iovec in[2] = {{a, 4}, {b, 16}};
    struct msghdr r;
    memset(&r, 0, sizeof r);
    r.msg_iov = in;
    r.msg_iovlen = 2;
    long n = recvmsg(s, &r, MSG_PEEK);
    OUT("recvmsg_peek %s '%.4s' '%.5s' flags=%d", res(n), a, b, r.msg_flags);
    memset(b, 0, sizeof b);
    n = recvmsg(s, &r, 0);
    OUT("recvmsg %s '%.4s' '%.5s' flags=%d", res(n), a, b, r.msg_flags);
    OUT("recvmsg_dontwait %s", res(recvmsg(s, &r, MSG_DONTWAIT)));
    close(c);
    close(s);
    close(l);
}

static void sendmsg_recvmsg_udp(void) {
    int a = udp_bound(port(0)), b = udp_bound(port(1));
    struct sockaddr_in to = lo(port(0));
    struct iovec out[2] = {{"data", 4}, {"gram", 4}};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_name = &to;
    m.msg_namelen = sizeof to;
    m.msg_iov = out;
    m.msg_iovlen = 2;
    OUT("sendmsg %s", res(sendmsg(b, &m, 0)));
    OUT("sendmsg_again %s", res(sendmsg(b, &m, 0)));
    wait_readable(a, 2000);
    msleep(20);
    char buf[16] = {0};
    struct iovec in = {buf, sizeof buf};
    struct sockaddr_in from;
    memset(&from, 0, sizeof from);
    struct msghdr r;
    memset(&r, 0, sizeof r);
    r.msg_name = &from;
    r.msg_namelen = sizeof from;
    r.msg_iov = &in;
    r.msg_iovlen = 1;
    long n = recvmsg(a, &r, 0);
    OUT("recvmsg %s '%.8s' from %s namelen=%d flags=%d", res(n), buf, addr_str(&from), (int)r.msg_namelen,
        r.msg_flags);
    in.iov_len = 3;
    r.msg_namelen = sizeof from;
    n = recvmsg(a, &r, 0);
    OUT("recvmsg_short %s msg_trunc=%d", res(n), !!(r.msg_flags & MSG_TRUNC));
    close(a);
    close(b);
}

static void select_check(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int p[2];
    MUST(pipe(p));
    fd_set rd, wr;
    FD_ZERO(&rd);
    FD_SET(s, &rd);
    FD_SET(p[0], &rd);
    struct timeval tv = {0, 50000};
    int mx = (s > p[0] ? s : p[0]) + 1;
    int n = select(mx, &rd, NULL, NULL, &tv);
    OUT("idle %d", n);
    send(c, "x", 1, 0);
    FD_ZERO(&rd);
    FD_SET(s, &rd);
    FD_SET(p[0], &rd);
    tv.tv_sec = 2;
    tv.tv_usec = 0;
    n = select(mx, &rd, NULL, NULL, &tv);
    OUT("readable %d sock=%d pipe=%d", n, FD_ISSET(s, &rd), FD_ISSET(p[0], &rd));
    FD_ZERO(&wr);
    FD_SET(c, &wr);
    tv.tv_sec = 2;
    n = select(c + 1, NULL, &wr, NULL, &tv);
    OUT("writable %d client=%d", n, FD_ISSET(c, &wr));
    FD_ZERO(&rd);
    FD_SET(s, &rd);
    struct timespec ts = {2, 0};
    sigset_t mask;
    sigemptyset(&mask);
    n = pselect(s + 1, &rd, NULL, NULL, &ts, &mask);
    OUT("pselect %d sock=%d", n, FD_ISSET(s, &rd));
    char b[4];
    recv(s, b, sizeof b, 0);
    FD_ZERO(&rd);
    FD_SET(s, &rd);
    ts.tv_sec = 0;
    ts.tv_nsec = 50000000;
    n = pselect(s + 1, &rd, NULL, NULL, &ts, NULL);
    OUT("pselect_drained %d", n);
    close(p[0]);
    close(p[1]);
    close(c);
    close(s);
    close(l);
}

static void ppoll_check(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    struct pollfd f = {s, POLLIN, 0};
    struct timespec ts = {0, 50000000};
    OUT("idle %d", ppoll(&f, 1, &ts, NULL));
    send(c, "x", 1, 0);
    ts.tv_sec = 2;
    ts.tv_nsec = 0;
    int n = ppoll(&f, 1, &ts, NULL);
    OUT("readable %d pollin=%d", n, !!(f.revents & POLLIN));
    close(c);
    close(s);
    close(l);
}

/* An epoll fd inside another: the outer one reports the inner one readable
 * while a socket in the inner one is (level-triggered), and an exclusive
 * waiter on a socket gets its events too. */
static void epoll_nested(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int inner = epoll_create1(EPOLL_CLOEXEC), outer = epoll_create1(EPOLL_CLOEXEC);
    MUST(inner);
    MUST(outer);
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = 1};
    OUT("add_inner %s", res(epoll_ctl(inner, EPOLL_CTL_ADD, s, &e)));
    e.data.u32 = 2;
    OUT("add_outer %s", res(epoll_ctl(outer, EPOLL_CTL_ADD, inner, &e)));
    struct epoll_event got[4];
    OUT("idle %d", epoll_wait(outer, got, 4, 50));
    send(c, "xy", 2, 0);
    int n = epoll_wait(outer, got, 4, 2000);
    OUT("outer %d data=%u", n, n > 0 ? got[0].data.u32 : 0);
    n = epoll_wait(inner, got, 4, 0);
    OUT("inner %d data=%u", n, n > 0 ? got[0].data.u32 : 0);
    OUT("outer_level %d", epoll_wait(outer, got, 4, 0));
    char b[4];
    read_full(s, b, 2);
    OUT("outer_drained %d", epoll_wait(outer, got, 4, 50));
    OUT("del_outer %s", res(epoll_ctl(outer, EPOLL_CTL_DEL, inner, NULL)));
    int ex = epoll_create1(EPOLL_CLOEXEC);
    e.events = EPOLLIN | EPOLLEXCLUSIVE;
    e.data.u32 = 3;
    OUT("add_exclusive %s", res(epoll_ctl(ex, EPOLL_CTL_ADD, s, &e)));
    OUT("mod_exclusive %s", res(epoll_ctl(ex, EPOLL_CTL_MOD, s, &e)));
    send(c, "z", 1, 0);
    n = epoll_wait(ex, got, 4, 2000);
    OUT("exclusive %d data=%u", n, n > 0 ? got[0].data.u32 : 0);
    close(ex);
    close(outer);
    close(inner);
    close(c);
    close(s);
    close(l);
}

static void epoll_level(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    MUST(ep);
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = 7};
    OUT("add %s", res(epoll_ctl(ep, EPOLL_CTL_ADD, s, &e)));
    OUT("add_again %s", res(epoll_ctl(ep, EPOLL_CTL_ADD, s, &e)));
    struct epoll_event got[4];
    OUT("idle %d", epoll_wait(ep, got, 4, 50));
    send(c, "xy", 2, 0);
    int n = epoll_wait(ep, got, 4, 2000);
    OUT("readable %d data=%u in=%d", n, n > 0 ? got[0].data.u32 : 0, n > 0 && (got[0].events & EPOLLIN));
    n = epoll_wait(ep, got, 4, 0);
    OUT("level_again %d", n);
    char b[4];
    read_full(s, b, 2);
    OUT("drained %d", epoll_wait(ep, got, 4, 0));
    e.events = EPOLLOUT;
    e.data.u32 = 8;
    OUT("mod %s", res(epoll_ctl(ep, EPOLL_CTL_MOD, s, &e)));
    n = epoll_wait(ep, got, 4, 2000);
    OUT("writable %d data=%u out=%d", n, n > 0 ? got[0].data.u32 : 0, n > 0 && (got[0].events & EPOLLOUT));
    OUT("del %s", res(epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL)));
    OUT("del_again %s", res(epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL)));
    OUT("mod_missing %s", res(epoll_ctl(ep, EPOLL_CTL_MOD, s, &e)));
    OUT("after_del %d", epoll_wait(ep, got, 4, 0));
    close(ep);
    close(c);
    close(s);
    close(l);
}

static void epoll_edge(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN | EPOLLET | EPOLLRDHUP, .data.u32 = 1};
    OUT("add %s", res(epoll_ctl(ep, EPOLL_CTL_ADD, s, &e)));
    send(c, "a", 1, 0);
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, 2000);
    OUT("first %d in=%d", n, n > 0 && (got[0].events & EPOLLIN));
    OUT("edge_consumed %d", epoll_wait(ep, got, 4, 50));
    send(c, "b", 1, 0);
    n = epoll_wait(ep, got, 4, 2000);
    OUT("new_data %d", n);
    close(c);
    n = epoll_wait(ep, got, 4, 2000);
    OUT("peer_closed %d in=%d rdhup=%d", n, n > 0 && (got[0].events & EPOLLIN),
        n > 0 && (got[0].events & EPOLLRDHUP));
    close(ep);
    close(s);
    close(l);
}

static void epoll_oneshot_many(void) {
    int l = tcp_listener(port(0));
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = 100};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &e);
    int cs[4], ss[4];
    for (int i = 0; i < 4; i++) cs[i] = tcp_connect_to(port(0));
    struct epoll_event got[8];
    int n = epoll_wait(ep, got, 8, 2000);
    OUT("listener %d data=%u", n, n > 0 ? got[0].data.u32 : 0);
    for (int i = 0; i < 4; i++) {
        ss[i] = accept(l, NULL, NULL);
        struct epoll_event se = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, ss[i], &se);
    }
    OUT("listener_drained %d", epoll_wait(ep, got, 8, 0));
    send(cs[1], "1", 1, 0);
    send(cs[3], "3", 1, 0);
    msleep(50);
    n = epoll_wait(ep, got, 8, 2000);
    unsigned mask = 0;
    for (int i = 0; i < n; i++) mask |= 1u << got[i].data.u32;
    OUT("ready %d mask=%u", n, mask);
    OUT("oneshot_disarmed %d", epoll_wait(ep, got, 8, 0));
    struct epoll_event re = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = 1};
    epoll_ctl(ep, EPOLL_CTL_MOD, ss[1], &re);
    n = epoll_wait(ep, got, 8, 2000);
    OUT("rearmed %d data=%u", n, n > 0 ? got[0].data.u32 : 0);
    for (int i = 0; i < 4; i++) {
        close(cs[i]);
        close(ss[i]);
    }
    close(ep);
    close(l);
}

static void sendfile_check(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    char path[] = "/tmp/rbypass-sem-sendfile-XXXXXX";
    int f = mkstemp(path);
    MUST(f);
    unlink(path);
    static unsigned char data[300000];
    for (int i = 0; i < (int)sizeof data; i++) data[i] = (unsigned char)(i * 13);
    MUST(write_full(f, data, sizeof data));
    pid_t pid = fork();
    if (pid == 0) {
        off_t off = 1000;
        long left = sizeof data - 1000;
        while (left > 0) {
            ssize_t k = sendfile(c, f, &off, left);
            if (k <= 0) _exit(1);
            left -= k;
        }
        _exit(shutdown(c, SHUT_WR) == 0 ? 0 : 2);
    }
    static unsigned char in[300000];
    long n = 0;
    struct pollfd pf = {s, POLLIN, 0};
    while (poll(&pf, 1, 5000) == 1) {
        ssize_t k = read(s, in + n, sizeof in - n);
        if (k <= 0) break;
        n += k;
    }
    OUT("received %ld same=%d", n, n == (long)sizeof data - 1000 && !memcmp(in, data + 1000, n));
    OUT("child %s", child_status(pid));
    close(f);
    close(c);
    close(s);
    close(l);
}

static const struct check checks[] = {
    {"writev_readv", writev_readv},
    {"sendmsg_recvmsg_tcp", sendmsg_recvmsg_tcp},
    {"sendmsg_recvmsg_udp", sendmsg_recvmsg_udp},
    {"select", select_check},
    {"ppoll", ppoll_check},
    {"epoll_level", epoll_level},
    {"epoll_nested", epoll_nested},
    {"epoll_edge", epoll_edge},
    {"epoll_oneshot_many", epoll_oneshot_many},
    {"sendfile", sendfile_check},
};

int main(int argc, char **argv) { return run_checks(checks, sizeof checks / sizeof checks[0], argc, argv); }
