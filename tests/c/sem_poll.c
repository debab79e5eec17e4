/* poll() semantics on sockets (and a pipe beside them) over 127.0.0.1;
 * output must be identical with and without rbypass (see sem_common.h). */
#include "sem_common.h"

static const char *ev(short r) {
    static char b[4][96];
    static int k;
    k = (k + 1) % 4;
    snprintf(b[k], sizeof b[k], "%s%s%s%s%s%s", r & POLLIN ? "IN " : "", r & POLLOUT ? "OUT " : "",
             r & POLLHUP ? "HUP " : "", r & POLLERR ? "ERR " : "", r & POLLNVAL ? "NVAL " : "",
             r & ~(POLLIN | POLLOUT | POLLHUP | POLLERR | POLLNVAL | POLLRDNORM | POLLWRNORM | POLLRDHUP)
                 ? "OTHER"
                 : "");
    if (!b[k][0]) snprintf(b[k], sizeof b[k], "-");
    return b[k];
}

static void mix_socket_pipe(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int p[2];
    MUST(pipe(p));
    struct pollfd f[2] = {{s, POLLIN, 0}, {p[0], POLLIN, 0}};
    int n = poll(f, 2, 50);
    OUT("idle %d sock=%s pipe=%s", n, ev(f[0].revents), ev(f[1].revents));
    MUST(write(p[1], "p", 1));
    n = poll(f, 2, 5000);
    OUT("pipe_written %d sock=%s pipe=%s", n, ev(f[0].revents), ev(f[1].revents));
    send(c, "s", 1, 0);
    wait_readable(s, 5000);
    n = poll(f, 2, 5000);
    OUT("both %d sock=%s pipe=%s", n, ev(f[0].revents), ev(f[1].revents));
    char b[4];
    read(p[0], b, 1);
    n = poll(f, 2, 5000);
    OUT("pipe_drained %d sock=%s pipe=%s", n, ev(f[0].revents), ev(f[1].revents));
    read(s, b, 1);
    n = poll(f, 2, 0);
    OUT("all_drained %d sock=%s pipe=%s", n, ev(f[0].revents), ev(f[1].revents));
    close(p[0]);
    close(p[1]);
    close(c);
    close(s);
    close(l);
}

static void wakeup(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int c2, s2, l2 = tcp_pair(1, &c2, &s2);
    pid_t pid = fork();
    if (pid == 0) {
        msleep(50);
        _exit(send(c2, "late", 4, 0) == 4 ? 0 : 1);
    }
    struct pollfd f[2] = {{s, POLLIN, 0}, {s2, POLLIN, 0}};
    int n = poll(f, 2, 10000);
    OUT("poll %d first=%s second=%s", n, ev(f[0].revents), ev(f[1].revents));
    n = poll(f, 2, -1);
    OUT("poll_infinite %d first=%s second=%s", n, ev(f[0].revents), ev(f[1].revents));
    OUT("child %s", child_status(pid));
    close(c);
    close(s);
    close(l);
    close(c2);
    close(s2);
    close(l2);
}

static void listener_events(short events) {
    int l = tcp_listener(port(0));
    struct pollfd f = {l, events, 0};
    int n = poll(&f, 1, 0);
    OUT("idle %d %s", n, ev(f.revents));
    int c = tcp_connect_to(port(0));
    n = poll(&f, 1, 5000);
    OUT("pending %d %s", n, ev(f.revents));
    int s = accept(l, NULL, NULL);
    n = poll(&f, 1, 0);
    OUT("accepted %d %s", n, ev(f.revents));
    close(s);
    close(c);
    close(l);
}

static void listener(void) { listener_events(POLLIN); }

/* A listener is never writable. */
static void listener_pollout(void) { listener_events(POLLIN | POLLOUT); }

static void connected_states(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    struct pollfd f = {c, POLLIN | POLLOUT, 0};
    int n = poll(&f, 1, 0);
    OUT("established %d %s", n, ev(f.revents));
    shutdown(s, SHUT_WR);
    msleep(50);
    n = poll(&f, 1, 0);
    OUT("peer_shut_wr %d %s", n, ev(f.revents));
    shutdown(c, SHUT_WR);
    msleep(50);
    n = poll(&f, 1, 0);
    OUT("both_shut_wr %d %s", n, ev(f.revents));
    close(c);
    close(s);
    close(l);
}

/* A new TCP socket: POLLOUT|POLLHUP, not readable. */
static void fresh_socket(void) {
    struct pollfd u = {socket(AF_INET, SOCK_STREAM, 0), POLLIN | POLLOUT, 0};
    int n = poll(&u, 1, 0);
    OUT("fresh_socket %d %s", n, ev(u.revents));
    close(u.fd);
}

static void after_reset(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    struct linger lg = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(s);
    msleep(50);
    struct pollfd f = {c, POLLIN | POLLOUT, 0};
    int n = poll(&f, 1, 0);
    OUT("reset %d %s", n, ev(f.revents));
    close(c);
    close(l);
}

static void bad_fds(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    int closed = dup(c);
    close(closed);
    send(s, "x", 1, 0);
    wait_readable(c, 5000);
    struct pollfd f[3] = {{-1, POLLIN, 0}, {closed, POLLIN, 0}, {c, POLLIN, 0}};
    int n = poll(f, 3, 0);
    OUT("poll %d negative=%s closed=%s ok=%s", n, ev(f[0].revents), ev(f[1].revents), ev(f[2].revents));
    OUT("timeout_zero_none %d", poll(NULL, 0, 0));
    double t0 = now_ms();
    n = poll(NULL, 0, 100);
    OUT("sleep_no_fds %d waited=%d", n, now_ms() - t0 >= 80);
    close(c);
    close(s);
    close(l);
}

static void udp(void) {
    int a = udp_bound(port(0)), b = udp_bound(-1);
    struct pollfd f = {a, POLLIN | POLLOUT, 0};
    int n = poll(&f, 1, 0);
    OUT("idle %d %s", n, ev(f.revents));
    struct sockaddr_in to = lo(port(0));
    sendto(b, "d", 1, 0, (struct sockaddr *)&to, sizeof to);
    f.events = POLLIN;
    n = poll(&f, 1, 5000);
    OUT("datagram %d %s", n, ev(f.revents));
    char buf[4];
    recv(a, buf, sizeof buf, 0);
    n = poll(&f, 1, 0);
    OUT("drained %d %s", n, ev(f.revents));
    close(a);
    close(b);
}

/* Fill the send path until EAGAIN: POLLOUT goes away; once the peer drains
 * everything it comes back. */
static void write_space(void) {
    int c, s, l = tcp_pair(0, &c, &s);
    MUST(fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK));
    MUST(fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK));
    static char buf[65536];
    long sent = 0, got = 0;
    int last = 0;
    for (int i = 0; i < 100000; i++) {
        long k = send(c, buf, sizeof buf, 0);
        if (k < 0) {
            last = errno;
            break;
        }
        sent += k;
    }
    OUT("filled_until %s", en(last));
    struct pollfd f = {c, POLLOUT, 0};
    int n = poll(&f, 1, 0);
    OUT("full %d %s", n, ev(f.revents));
    struct pollfd r = {s, POLLIN, 0};
    while (got < sent && poll(&r, 1, 5000) == 1) {
        long k;
        while ((k = recv(s, buf, sizeof buf, 0)) > 0) got += k;
    }
    OUT("drained_all=%d", got == sent);
    n = poll(&f, 1, 5000);
    OUT("drained %d %s", n, ev(f.revents));
    close(c);
    close(s);
    close(l);
}

static const struct check checks[] = {
    {"mix_socket_pipe", mix_socket_pipe},
    {"wakeup", wakeup},
    {"listener", listener},
    {"listener_pollout", listener_pollout},
    {"connected_states", connected_states},
    {"fresh_socket", fresh_socket},
    {"after_reset", after_reset},
    {"bad_fds", bad_fds},
    {"udp", udp},
    {"write_space", write_space},
};

int main(int argc, char **argv) { return run_checks(checks, sizeof checks / sizeof checks[0], argc, argv); }
