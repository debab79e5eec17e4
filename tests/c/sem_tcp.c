/* TCP socket semantics over 127.0.0.1; output must be identical with and
 * without rbypass (see sem_common.h). */
#include "sem_common.h"

static void connect_refused(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = lo(port(0));
    OUT("connect %s", res(connect(s, (struct sockaddr *)&a, sizeof a)));
    close(s);
}

static void bind_twice(void) {
    struct sockaddr_in a = lo(port(0));
    int s1 = socket(AF_INET, SOCK_STREAM, 0), s2 = socket(AF_INET, SOCK_STREAM, 0);
    OUT("bind1 %s", res(bind(s1, (struct sockaddr *)&a, sizeof a)));
    OUT("bind2 %s", res(bind(s2, (struct sockaddr *)&a, sizeof a)));
    OUT("listen1 %s", res(listen(s1, 4)));
    int s3 = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s3, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    OUT("bind_reuseaddr_while_listening %s", res(bind(s3, (struct sockaddr *)&a, sizeof a)));
    OUT("bind_again_same_socket %s", res(bind(s1, (struct sockaddr *)&a, sizeof a)));
    close(s1);
    close(s2);
    close(s3);
    int s4 = socket(AF_INET, SOCK_STREAM, 0);
    OUT("bind_after_close %s", res(bind(s4, (struct sockaddr *)&a, sizeof a)));
    close(s4);
}

/* The server closes first, so its side of the connection is in TIME_WAIT. */
static void server_closes_first(int k) {
    int c, s, l = tcp_pair(k, &c, &s);
    close(s);
    char b[4];
    OUT("client_read_eof %s", res(read(c, b, sizeof b)));
    close(c);
    close(l);
    msleep(50);
}

/* A port in TIME_WAIT cannot be bound without SO_REUSEADDR. */
static void time_wait_bind(void) {
    server_closes_first(0);
    struct sockaddr_in a = lo(port(0));
    int n = socket(AF_INET, SOCK_STREAM, 0);
    OUT("rebind_without_reuseaddr %s", res(bind(n, (struct sockaddr *)&a, sizeof a)));
    close(n);
}

/* With SO_REUSEADDR a port in TIME_WAIT can be bound and listened on again. */
static void reuseaddr_time_wait(void) {
    server_closes_first(0);
    struct sockaddr_in a = lo(port(0));
    int n = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(n, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    OUT("rebind_with_reuseaddr %s", res(bind(n, (struct sockaddr *)&a, sizeof a)));
    OUT("listen %s", res(listen(n, 4)));
    int c2 = tcp_connect_to(port(0));
    int s2 = accept(n, NULL, NULL);
    OUT("accept_after_rebind %s", res(s2 >= 0 ? 0 : -1));
    close(c2);
    close(s2);
    close(n);
}

static void nonblock_connect(void) {
    int l = tcp_listener(port(0));
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = lo(port(0));
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    OUT("connect %s", res(r));
    struct pollfd p = {s, POLLOUT, 0};
    int n = poll(&p, 1, 5000);
    OUT("poll %d pollout=%d pollerr=%d", n, !!(p.revents & POLLOUT), !!(p.revents & POLLERR));
    int err = -1;
    socklen_t el = sizeof err;
    r = getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el);
    OUT("getsockopt %s so_error=%s", res(r), en(err));
    int c = accept(l, NULL, NULL);
    OUT("accept %s", res(c >= 0 ? 0 : -1));
    OUT("send %s", res(send(s, "abc", 3, 0)));
    char b[8];
    OUT("recv %s", res(read_full(c, b, 3)));
    close(c);
    close(s);
    close(l);
}

/* connect() again after a non-blocking connect completed: 0 once, then EISCONN. */
static void connect_after_nonblock_connect(void) {
    int l = tcp_listener(port(0));
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = lo(port(0));
    OUT("connect %s", res(connect(s, (struct sockaddr *)&a, sizeof a)));
    struct pollfd p = {s, POLLOUT, 0};
    poll(&p, 1, 5000);
    OUT("connect_again %s", res(connect(s, (struct sockaddr *)&a, sizeof a)));
    OUT("connect_third %s", res(connect(s, (struct sockaddr *)&a, sizeof a)));
    close(s);
    close(l);
}

static void nonblock_connect_refused(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    MUST(fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK));
    struct sockaddr_in a = lo(port(0));
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    OUT("connect %s", res(r));
    if (r < 0 && errno == EINPROGRESS) {
        struct pollfd p = {s, POLLOUT, 0};
        int n = poll(&p, 1, 5000);
        OUT("poll %d pollout=%d pollerr=%d", n, !!(p.revents & POLLOUT), !!(p.revents & POLLERR));
    }
    int err = -1;
    socklen_t el = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el);
    OUT("so_error=%s", en(err));
    err = -1;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el);
    OUT("so_error_again=%s", en(err));
    close(s);
}

static void eagain_modes(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    char b[16];
    OUT("msg_dontwait %s", res(recv(c, b, sizeof b, MSG_DONTWAIT)));
    int fl = fcntl(c, F_GETFL);
    OUT("getfl_nonblock_before=%d", !!(fl & O_NONBLOCK));
    MUST(fcntl(c, F_SETFL, fl | O_NONBLOCK));
    OUT("getfl_nonblock_after=%d", !!(fcntl(c, F_GETFL) & O_NONBLOCK));
    OUT("o_nonblock_read %s", res(read(c, b, sizeof b)));
    OUT("o_nonblock_recv %s", res(recv(c, b, sizeof b, 0)));
    MUST(fcntl(c, F_SETFL, fl));
    int on = 1;
    OUT("fionbio %s", res(ioctl(s, FIONBIO, &on)));
    OUT("fionbio_read %s", res(read(s, b, sizeof b)));
    on = 0;
    ioctl(s, FIONBIO, &on);
    MUST(fcntl(l, F_SETFL, fcntl(l, F_GETFL) | O_NONBLOCK));
    OUT("accept_nonblock_empty %s", res(accept(l, NULL, NULL)));
    int c2 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    OUT("sock_nonblock_flag=%d", !!(fcntl(c2, F_GETFL) & O_NONBLOCK));
    struct sockaddr_in a = lo(port(0));
    connect(c2, (struct sockaddr *)&a, sizeof a);
    struct pollfd p = {c2, POLLOUT, 0};
    poll(&p, 1, 5000);
    OUT("sock_nonblock_read %s", res(read(c2, b, sizeof b)));
    struct pollfd pl = {l, POLLIN, 0};
    OUT("listener_poll %d", poll(&pl, 1, 5000));
    int s2 = accept4(l, NULL, NULL, SOCK_NONBLOCK);
    OUT("accept4 %s nonblock=%d", res(s2 >= 0 ? 0 : -1), s2 >= 0 && !!(fcntl(s2, F_GETFL) & O_NONBLOCK));
    OUT("accept4_read %s", res(read(s2, b, sizeof b)));
    close(c2);
    close(s2);
    close(c);
    close(s);
    close(l);
}

static void peek(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    OUT("send %s", res(send(c, "hello world", 11, 0)));
    char b[32] = {0};
    wait_readable(s, 5000);
    msleep(20);
    long n = recv(s, b, 5, MSG_PEEK);
    OUT("peek %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    memset(b, 0, sizeof b);
    n = recv(s, b, 32, MSG_PEEK);
    OUT("peek_all %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    memset(b, 0, sizeof b);
    n = recv(s, b, 32, 0);
    OUT("read %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    OUT("then_dontwait %s", res(recv(s, b, 32, MSG_DONTWAIT)));
    close(c);
    close(s);
    close(l);
}

static void waitall(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    pid_t pid = fork();
    if (pid == 0) {
        char chunk[1000];
        for (int i = 0; i < 3; i++) {
            memset(chunk, 'a' + i, sizeof chunk);
            if (write_full(c, chunk, sizeof chunk) < 0) _exit(1);
            msleep(30);
        }
        _exit(0);
    }
    char b[4000];
    long n = recv(s, b, 3000, MSG_WAITALL);
    OUT("recv_waitall %s first=%c last=%c", res(n), b[0], n > 0 ? b[n - 1] : '?');
    OUT("child %s", child_status(pid));
    close(c);
    close(s);
    close(l);
}

static void eof_after_close(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    OUT("send %s", res(send(c, "xy", 2, 0)));
    close(c);
    char b[8];
    OUT("read_data %s", res(read_full(s, b, 2)));
    struct pollfd p = {s, POLLIN, 0};
    int n = poll(&p, 1, 5000);
    OUT("poll %d pollin=%d", n, !!(p.revents & POLLIN));
    OUT("read_eof %s", res(read(s, b, sizeof b)));
    OUT("read_eof_again %s", res(recv(s, b, sizeof b, 0)));
    close(s);
    close(l);
}

/* poll() reports POLLRDHUP once the peer has closed. */
static void pollrdhup(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    struct pollfd p = {s, POLLIN | POLLRDHUP, 0};
    OUT("poll_before %d", poll(&p, 1, 0));
    close(c);
    int n = poll(&p, 1, 5000);
    OUT("poll %d pollin=%d rdhup=%d", n, !!(p.revents & POLLIN), !!(p.revents & POLLRDHUP));
    close(s);
    close(l);
}

static volatile sig_atomic_t g_sigpipes;
static void on_sigpipe(int sig) {
    (void)sig;
    g_sigpipes++;
}

static void epipe_sigpipe(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    close(s);
    close(l);
    char b[8];
    OUT("read_eof %s", res(read(c, b, sizeof b)));
    OUT("write_to_closed_peer %s", res(send(c, "1234", 4, MSG_NOSIGNAL))); /* draws a RST */
    msleep(100);
    signal(SIGPIPE, on_sigpipe);
    g_sigpipes = 0;
    long r = send(c, "1234", 4, MSG_NOSIGNAL);
    OUT("send_nosignal %s sigpipes=%d", res(r), (int)g_sigpipes);
    r = write(c, "1234", 4);
    OUT("write %s sigpipes=%d", res(r), (int)g_sigpipes);
    r = send(c, "1234", 4, 0);
    OUT("send %s sigpipes=%d", res(r), (int)g_sigpipes);
    signal(SIGPIPE, SIG_IGN);
    close(c);
}

static void linger0_reset(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    struct linger lg = {1, 0};
    OUT("so_linger %s", res(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg)));
    close(s);
    close(l);
    msleep(100);
    char b[8];
    OUT("read %s", res(read(c, b, sizeof b)));
    OUT("read_again %s", res(read(c, b, sizeof b)));
    close(c);
}

/* Sending on a connection reset by the peer fails with EPIPE. */
static void send_after_reset(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    struct linger lg = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(s);
    close(l);
    msleep(100);
    char b[8];
    OUT("read %s", res(read(c, b, sizeof b)));
    OUT("send %s", res(send(c, "x", 1, MSG_NOSIGNAL)));
    close(c);
}

/* A write after shutdown(SHUT_WR) raises SIGPIPE unless MSG_NOSIGNAL. */
static void sigpipe_after_shut_wr(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    shutdown(c, SHUT_WR);
    signal(SIGPIPE, on_sigpipe);
    g_sigpipes = 0;
    long r = send(c, "x", 1, MSG_NOSIGNAL);
    OUT("send_nosignal %s sigpipes=%d", res(r), (int)g_sigpipes);
    r = write(c, "x", 1);
    OUT("write %s sigpipes=%d", res(r), (int)g_sigpipes);
    r = send(c, "x", 1, 0);
    OUT("send %s sigpipes=%d", res(r), (int)g_sigpipes);
    signal(SIGPIPE, SIG_IGN);
    close(c);
    close(s);
    close(l);
}

static void half_close(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    OUT("send %s", res(send(c, "request", 7, 0)));
    OUT("shutdown_wr %s", res(shutdown(c, SHUT_WR)));
    char b[16] = {0};
    long n = read_full(s, b, 7);
    OUT("server_read %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    OUT("server_read_eof %s", res(read(s, b, sizeof b)));
    OUT("server_send %s", res(send(s, "response", 8, 0)));
    memset(b, 0, sizeof b);
    n = read_full(c, b, 8);
    OUT("client_read %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    OUT("client_send_after_shut_wr %s", res(send(c, "z", 1, MSG_NOSIGNAL)));
    close(s);
    OUT("client_read_eof %s", res(read(c, b, sizeof b)));
    close(c);
    close(l);
    int u = socket(AF_INET, SOCK_STREAM, 0);
    OUT("shutdown_unconnected %s", res(shutdown(u, SHUT_RDWR)));
    close(u);
}

/* shutdown() on a connection that both sides have closed: ENOTCONN. */
static void shutdown_after_close(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    shutdown(c, SHUT_WR);
    char b[4];
    OUT("server_read_eof %s", res(read(s, b, sizeof b)));
    close(s);
    OUT("client_read_eof %s", res(read(c, b, sizeof b)));
    msleep(50);
    OUT("shutdown_rd %s", res(shutdown(c, SHUT_RD)));
    close(c);
    close(l);
}

static void rcvtimeo(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    struct timeval tv = {0, 150000}, got = {0, 0};
    OUT("set %s", res(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
    socklen_t gl = sizeof got;
    int r0 = getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &got, &gl);
    OUT("get %s sec=%ld usec_ge_100ms=%d", res(r0), (long)got.tv_sec, got.tv_usec >= 100000);
    char b[8];
    double t0 = now_ms();
    long r = recv(s, b, sizeof b, 0);
    double dt = now_ms() - t0;
    OUT("recv %s waited_100ms_to_3s=%d", res(r), dt >= 100 && dt < 3000);
    send(c, "q", 1, 0);
    OUT("recv_with_data %s", res(recv(s, b, sizeof b, 0)));
    close(c);
    close(s);
    close(l);
}

static void names(void) {
    int u = socket(AF_INET, SOCK_STREAM, 0);
    OUT("unbound_sockname %s", sockname(u));
    OUT("unconnected_peername %s", peername(u));
    close(u);
    int l = tcp_listener(port(0));
    OUT("listener_sockname %s", sockname(l));
    OUT("listener_peername %s", peername(l));
    int c = tcp_connect_to(port(0));
    struct sockaddr_in pa;
    socklen_t pl = sizeof pa;
    memset(&pa, 0, sizeof pa);
    int s = accept(l, (struct sockaddr *)&pa, &pl);
    MUST(s);
    OUT("accept_addr %s len=%d", addr_str(&pa), (int)pl);
    OUT("client_sockname %s", sockname(c));
    OUT("client_peername %s", peername(c));
    OUT("server_sockname %s", sockname(s));
    OUT("server_peername %s", peername(s));
    int cp = port_of(c, 0);
    OUT("ephemeral_nonzero=%d peer_matches=%d accept_matches=%d", cp > 0, cp == port_of(s, 1),
        cp == ntohs(pa.sin_port));
    int b0 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a0 = lo(0);
    OUT("bind_port0 %s", res(bind(b0, (struct sockaddr *)&a0, sizeof a0)));
    OUT("bind_port0_nonzero=%d", port_of(b0, 0) > 0);
    close(b0);
    char small[4];
    socklen_t sl = sizeof small;
    OUT("getsockname_short_len %s len=%d", res(getsockname(c, (struct sockaddr *)small, &sl)), (int)sl);
    close(c);
    close(s);
    close(l);
}

static void getint(int fd, int level, int name, const char *what) {
    int v = -1;
    socklen_t vl = sizeof v;
    int r = getsockopt(fd, level, name, &v, &vl);
    OUT("get %s %s nonzero=%d len=%d", what, res(r), v != 0, (int)vl);
}

static void sockopts(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int one = 1, zero = 0;
    getint(c, IPPROTO_TCP, TCP_NODELAY, "tcp_nodelay");
    OUT("set tcp_nodelay %s", res(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one)));
    getint(c, IPPROTO_TCP, TCP_NODELAY, "tcp_nodelay");
    OUT("set tcp_nodelay %s", res(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof zero)));
    getint(c, IPPROTO_TCP, TCP_NODELAY, "tcp_nodelay");
    getint(c, SOL_SOCKET, SO_KEEPALIVE, "so_keepalive");
    OUT("set so_keepalive %s", res(setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one)));
    getint(c, SOL_SOCKET, SO_KEEPALIVE, "so_keepalive");
    getint(l, SOL_SOCKET, SO_REUSEADDR, "so_reuseaddr_listener");
    getint(c, SOL_SOCKET, SO_REUSEADDR, "so_reuseaddr_client");
    int v = -1;
    socklen_t vl = sizeof v;
    getsockopt(c, SOL_SOCKET, SO_TYPE, &v, &vl);
    OUT("so_type_stream=%d", v == SOCK_STREAM);
    vl = sizeof v;
    getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl);
    OUT("so_acceptconn_listener=%d", v);
    vl = sizeof v;
    getsockopt(c, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl);
    OUT("so_acceptconn_client=%d", v);
    int want = 65536;
    OUT("set so_rcvbuf %s", res(setsockopt(c, SOL_SOCKET, SO_RCVBUF, &want, sizeof want)));
    vl = sizeof v;
    getsockopt(c, SOL_SOCKET, SO_RCVBUF, &v, &vl);
    OUT("so_rcvbuf_ge_set=%d", v >= want);
    OUT("set so_sndbuf %s", res(setsockopt(c, SOL_SOCKET, SO_SNDBUF, &want, sizeof want)));
    vl = sizeof v;
    getsockopt(c, SOL_SOCKET, SO_SNDBUF, &v, &vl);
    OUT("so_sndbuf_ge_set=%d", v >= want);
    OUT("bad_level %s", res(setsockopt(c, 12345, 1, &one, sizeof one)));
    OUT("bad_len %s", res(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, 1)));
    /* The connection still works after all that. */
    OUT("send %s", res(send(c, "ok", 2, 0)));
    char b[4];
    OUT("recv %s", res(read_full(s, b, 2)));
    close(c);
    close(s);
    close(l);
}

static void fionread(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int n = -1;
    int r = ioctl(s, FIONREAD, &n);
    OUT("fionread_empty %s n=%d", res(r), n);
    char b[300];
    memset(b, 'x', sizeof b);
    OUT("send %s", res(send(c, b, 100, 0)));
    wait_readable(s, 5000);
    msleep(20);
    r = ioctl(s, FIONREAD, &n);
    OUT("fionread %s n=%d", res(r), n);
    OUT("read %s", res(read(s, b, 40)));
    r = ioctl(s, FIONREAD, &n);
    OUT("fionread_after_read %s n=%d", res(r), n);
    close(c);
    close(s);
    close(l);
}

static void dup_socket(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int d = dup(c);
    OUT("dup %s", res(d >= 0 ? 0 : -1));
    OUT("close_original %s", res(close(c)));
    OUT("send_on_dup %s", res(send(d, "dup!", 4, 0)));
    char b[8] = {0};
    long n = read_full(s, b, 4);
    OUT("peer_read %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    OUT("peer_send %s", res(send(s, "back", 4, 0)));
    n = read_full(d, b, 4);
    OUT("dup_read %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    OUT("dup_sockname %s peername %s", sockname(d), peername(d));
    int target = 100;
    OUT("dup2 %s", res(dup2(d, target) == target ? 0 : -1));
    close(d);
    OUT("send_on_dup2 %s", res(send(target, "two", 3, 0)));
    n = read_full(s, b, 3);
    OUT("peer_read %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    close(target);
    OUT("peer_read_eof %s", res(read(s, b, sizeof b)));
    OUT("closed_fd_send %s", res(send(c, "x", 1, MSG_NOSIGNAL)));
    close(s);
    close(l);
}

static void fork_inherit(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = send(c, "from child", 10, 0) == 10;
        char b[16];
        ok = ok && read_full(c, b, 11) == 11 && !memcmp(b, "from parent", 11);
        _exit(ok ? 0 : 1);
    }
    char b[16] = {0};
    long n = read_full(s, b, 10);
    OUT("parent_read %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    OUT("parent_send %s", res(send(s, "from parent", 11, 0)));
    OUT("child %s", child_status(pid));
    close(c);
    close(s);
    close(l);
}

/* A child inherits a socket and exits without closing it; the parent's
 * close() is then the last reference: the peer sees EOF. */
static void eof_after_child_exit(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    pid_t pid = fork();
    if (pid == 0) _exit(send(c, "child", 5, 0) == 5 ? 0 : 1);
    char b[8] = {0};
    long n = read_full(s, b, 5);
    OUT("parent_read %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    OUT("child %s", child_status(pid));
    close(c);
    struct pollfd p = {s, POLLIN, 0};
    OUT("poll %d", poll(&p, 1, 5000));
    OUT("read_eof %s", res(recv(s, b, sizeof b, MSG_DONTWAIT)));
    close(s);
    close(l);
}

static void unconnected_ops(void) {
    int u = socket(AF_INET, SOCK_STREAM, 0);
    OUT("accept_not_listening %s", res(accept(u, NULL, NULL)));
    struct sockaddr_in6 a6;
    memset(&a6, 0, sizeof a6);
    a6.sin6_family = AF_INET6;
    OUT("connect_wrong_family %s", res(connect(u, (struct sockaddr *)&a6, sizeof a6)));
    struct sockaddr_in a = lo(port(0));
    OUT("connect_short_len %s", res(connect(u, (struct sockaddr *)&a, 4)));
    close(u);
    int c, s, l = tcp_pair(1, &c, &s);
    struct sockaddr_in a1 = lo(port(1));
    OUT("connect_again %s", res(connect(c, (struct sockaddr *)&a1, sizeof a1)));
    close(c);
    close(s);
    close(l);
    OUT("send_bad_fd %s", res(send(9999, "x", 1, 0)));
    int fds[2];
    MUST(pipe(fds));
    OUT("send_on_pipe %s", res(send(fds[1], "x", 1, 0)));
    close(fds[0]);
    close(fds[1]);
}

/* send/recv/listen on sockets in the wrong state, and connect() of a
 * connected socket to some other address. */
static void wrong_state_ops(void) {
    int u = socket(AF_INET, SOCK_STREAM, 0);
    char b[4];
    OUT("send_unconnected %s", res(send(u, "x", 1, MSG_NOSIGNAL)));
    OUT("recv_unconnected %s", res(recv(u, b, sizeof b, MSG_DONTWAIT)));
    close(u);
    int c, s, l = tcp_pair(1, &c, &s);
    struct sockaddr_in a = lo(port(0));
    OUT("connect_connected_elsewhere %s", res(connect(c, (struct sockaddr *)&a, sizeof a)));
    OUT("listen_connected %s", res(listen(c, 1)));
    close(c);
    close(s);
    close(l);
}

static void many_connections(void) {
    int l = tcp_listener(port(0));
    int cs[10], ss[10], ok = 0;
    for (int i = 0; i < 10; i++) cs[i] = tcp_connect_to(port(0));
    for (int i = 0; i < 10; i++) ss[i] = accept(l, NULL, NULL);
    for (int i = 0; i < 10; i++) send(cs[i], &i, sizeof i, 0);
    /* Accept order equals connect order on both. */
    for (int i = 0; i < 10; i++) {
        int v = -1;
        if (read_full(ss[i], &v, sizeof v) == sizeof v && v == i) ok++;
    }
    OUT("accepted_in_order %d/10", ok);
    for (int i = 0; i < 10; i++) {
        close(cs[i]);
        close(ss[i]);
    }
    close(l);
}

#define BIG (8 << 20)
static void big_transfer(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    pid_t pid = fork();
    if (pid == 0) {
        unsigned char *b = malloc(65536);
        uint32_t x = 12345;
        long sent = 0;
        while (sent < BIG) {
            int n = 1 + (int)(x % 65536);
            if (n > BIG - sent) n = BIG - sent;
            for (int i = 0; i < n; i++) {
                x = x * 1103515245u + 12345u;
                b[i] = x >> 16;
            }
            if (write_full(c, b, n) != n) _exit(1);
            sent += n;
        }
        _exit(shutdown(c, SHUT_WR) == 0 ? 0 : 1);
    }
    unsigned char *b = malloc(1 << 20);
    uint64_t h = FNV_INIT;
    long total = 0;
    for (;;) {
        ssize_t n = read(s, b, 1 << 20);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        h = fnv1a(h, b, n);
        total += n;
    }
    OUT("received %ld fnv=%016llx", total, (unsigned long long)h);
    OUT("child %s", child_status(pid));
    free(b);
    close(c);
    close(s);
    close(l);
}

/* 8 MiB from one end to the other within one process: both ends
 * non-blocking, driven by poll(). */
static void big_transfer_one_process(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    MUST(fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK));
    MUST(fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK));
    unsigned char *out = malloc(BIG), *in = malloc(1 << 16);
    uint32_t x = 777;
    for (long i = 0; i < BIG; i++) {
        x = x * 1103515245u + 12345u;
        out[i] = x >> 16;
    }
    uint64_t h = FNV_INIT;
    long sent = 0, got = 0;
    int stalls = 0, eof = 0;
    while (!eof && stalls < 100) {
        struct pollfd f[2] = {{c, sent < BIG ? POLLOUT : 0, 0}, {s, POLLIN, 0}};
        if (poll(f, 2, 100) == 0) {
            stalls++;
            continue;
        }
        if (f[0].revents & POLLOUT) {
            long n = BIG - sent < 100000 ? BIG - sent : 1 + (sent * 7) % 100000;
            ssize_t k = send(c, out + sent, n, 0);
            if (k > 0) sent += k;
            if (sent == BIG) shutdown(c, SHUT_WR);
        }
        if (f[1].revents & (POLLIN | POLLHUP)) {
            ssize_t k;
            while ((k = recv(s, in, 1 << 16, 0)) > 0) {
                h = fnv1a(h, in, k);
                got += k;
            }
            if (k == 0) eof = 1;
        }
    }
    OUT("sent %ld received %ld eof=%d fnv=%016llx", sent, got, eof, (unsigned long long)h);
    OUT("matches=%d", got == BIG && h == fnv1a(FNV_INIT, out, BIG));
    free(out);
    free(in);
    close(c);
    close(s);
    close(l);
}

/* After fork, each process closes the end it does not use; the
 * other process's copy keeps working. */
static void close_after_fork(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    pid_t pid = fork();
    if (pid == 0) {
        close(s);
        char b[8];
        int ok = send(c, "child", 5, 0) == 5 && read_full(c, b, 6) == 6 && !memcmp(b, "parent", 6);
        _exit(ok ? 0 : 1);
    }
    close(c);
    char b[8] = {0};
    long n = read_full(s, b, 5);
    OUT("parent_read %s '%.*s'", res(n), (int)(n > 0 ? n : 0), b);
    OUT("parent_send %s", res(send(s, "parent", 6, MSG_NOSIGNAL)));
    OUT("child %s", child_status(pid));
    OUT("read_eof %s", res(read(s, b, sizeof b)));
    close(s);
    close(l);
}

/* Many short connections, each closed by the client first so that its
 * ephemeral port sits in TIME_WAIT: later connects still get a free port. */
static void connect_after_many_time_waits(void) {
    int l = tcp_listener(port(0)), failed = 0, first_errno = 0;
    for (int i = 0; i < 600; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = lo(port(0));
        if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
            if (!failed++) first_errno = errno;
            close(c);
            continue;
        }
        int s = accept(l, NULL, NULL);
        close(c);
        char b[1];
        read(s, b, 1);
        close(s);
    }
    OUT("failed_connects=%d first_error=%s", failed, en(first_errno));
    close(l);
}

/* Zero-length sends on a connected socket return 0 at once. */
static void zero_length_send(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    char b[4];
    OUT("send_0 %s", res(send(c, b, 0, 0)));
    OUT("send_0_dontwait %s", res(send(c, b, 0, MSG_DONTWAIT)));
    OUT("write_0 %s", res(write(c, b, 0)));
    OUT("peer_empty %s", res(recv(s, b, sizeof b, MSG_DONTWAIT)));
    close(c);
    close(s);
    close(l);
}

/* Zero-length receives: 0 with data waiting, EAGAIN without. */
static void zero_length_recv(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    char b[4];
    OUT("recv_0_dontwait %s", res(recv(s, b, 0, MSG_DONTWAIT)));
    send(c, "x", 1, 0);
    wait_readable(s, 5000);
    OUT("recv_0_with_data %s", res(recv(s, b, 0, 0)));
    OUT("read_0_with_data %s", res(read(s, b, 0)));
    OUT("read_1 %s", res(read(s, b, 1)));
    OUT("then_empty %s", res(recv(s, b, sizeof b, MSG_DONTWAIT)));
    close(c);
    close(s);
    close(l);
}

static char b_scratch[16];
static void listen_any(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = lo(port(0));
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    MUST(bind(l, (struct sockaddr *)&a, sizeof a));
    MUST(listen(l, 8));
    OUT("listener_sockname %s", sockname(l));
    const char *dsts[] = {"127.0.0.1", "127.0.0.2"};
    for (int i = 0; i < 2; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in d = lo(port(0));
        inet_pton(AF_INET, dsts[i], &d.sin_addr);
        int r = connect(c, (struct sockaddr *)&d, sizeof d);
        OUT("connect %s %s", dsts[i], res(r));
        if (r == 0) {
            int s = accept(l, NULL, NULL);
            OUT("accepted_sockname %s peername %s", sockname(s), peername(s));
            OUT("send %s", res(send(c, "any", 3, 0)));
            OUT("recv %s", res(read_full(s, b_scratch, 3)));
            close(s);
        }
        close(c);
    }
    close(l);
}

/* A listener on 127.0.0.1 is not reachable through 127.0.0.2. */
static void other_loopback_addr(void) {
    int l = tcp_listener(port(0));
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in d = lo(port(0));
    inet_pton(AF_INET, "127.0.0.2", &d.sin_addr);
    OUT("connect_127.0.0.2 %s", res(connect(c, (struct sockaddr *)&d, sizeof d)));
    close(c);
    close(l);
}

/* Two listeners share a port with SO_REUSEPORT; a client reaches one. */
static void reuseport_listeners(void) {
    int one = 1, ls[2];
    for (int i = 0; i < 2; i++) {
        ls[i] = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(ls[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        struct sockaddr_in a = lo(port(0));
        OUT("bind_%d %s", i, res(bind(ls[i], (struct sockaddr *)&a, sizeof a)));
        OUT("listen_%d %s", i, res(listen(ls[i], 4)));
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = lo(port(0));
    OUT("connect %s", res(connect(c, (struct sockaddr *)&a, sizeof a)));
    struct pollfd p[2] = {{ls[0], POLLIN, 0}, {ls[1], POLLIN, 0}};
    OUT("one_listener_ready %d", poll(p, 2, 5000));
    close(c);
    close(ls[0]);
    close(ls[1]);
}

static const struct check checks[] = {
    {"connect_refused", connect_refused},
    {"bind_twice", bind_twice},
    {"time_wait_bind", time_wait_bind},
    {"reuseaddr_time_wait", reuseaddr_time_wait},
    {"nonblock_connect", nonblock_connect},
    {"connect_after_nonblock_connect", connect_after_nonblock_connect},
    {"nonblock_connect_refused", nonblock_connect_refused},
    {"eagain_modes", eagain_modes},
    {"peek", peek},
    {"waitall", waitall},
    {"eof_after_close", eof_after_close},
    {"pollrdhup", pollrdhup},
    {"epipe_sigpipe", epipe_sigpipe},
    {"linger0_reset", linger0_reset},
    {"send_after_reset", send_after_reset},
    {"sigpipe_after_shut_wr", sigpipe_after_shut_wr},
    {"half_close", half_close},
    {"shutdown_after_close", shutdown_after_close},
    {"rcvtimeo", rcvtimeo},
    {"names", names},
    {"sockopts", sockopts},
    {"fionread", fionread},
    {"dup_socket", dup_socket},
    {"fork_inherit", fork_inherit},
    {"eof_after_child_exit", eof_after_child_exit},
    {"unconnected_ops", unconnected_ops},
    {"wrong_state_ops", wrong_state_ops},
    {"many_connections", many_connections},
    {"big_transfer", big_transfer},
    {"big_transfer_one_process", big_transfer_one_process},
    {"close_after_fork", close_after_fork},
    {"connect_after_many_time_waits", connect_after_many_time_waits},
    {"zero_length_send", zero_length_send},
    {"zero_length_recv", zero_length_recv},
    {"listen_any", listen_any},
    {"other_loopback_addr", other_loopback_addr},
    {"reuseport_listeners", reuseport_listeners},
};

int main(int argc, char **argv) { return run_checks(checks, sizeof checks / sizeof checks[0], argc, argv); }
