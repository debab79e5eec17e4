/* A signal during a blocking select, poll or epoll_wait on a stack socket:
 * the handler runs and the call fails with EINTR, with or without
 * SA_RESTART (Linux never restarts these after a handler). */
#include <sys/socket.h>
#include <sys/select.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static volatile int fired = 0;
static void h(int s) { (void)s; fired++; }
static void arm(int restart) {
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = h;
    sa.sa_flags = restart ? SA_RESTART : 0; sigaction(SIGALRM, &sa, 0);
    struct itimerval it = {{0, 0}, {0, 100000}}; setitimer(ITIMER_REAL, &it, 0);
}
static void report(const char *what, int restart, int r) {
    printf("%s restart=%d r=%d errno=%s fired=%d\n", what, restart, r,
           r < 0 ? (errno == EINTR ? "EINTR" : strerror(errno)) : "-", fired);
    fired = 0;
}
int main(int argc, char **argv) {
    int port = atoi(argv[1]);
    struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, 4);
    bind(l, (void *)&a, sizeof a); listen(l, 4);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    int s = accept(l, 0, 0);
    char b[4]; send(c, "x", 1, 0); recv(s, b, 1, 0); /* traffic through the stack */
    for (int restart = 0; restart < 2; restart++) {
        fd_set rd; FD_ZERO(&rd); FD_SET(s, &rd);
        arm(restart); report("select", restart, select(s + 1, &rd, 0, 0, 0));
        struct pollfd p = {s, POLLIN, 0};
        arm(restart); report("poll", restart, poll(&p, 1, -1));
        int ep = epoll_create1(0); struct epoll_event ev = {EPOLLIN, {0}}, out;
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
        arm(restart); report("epoll_wait", restart, epoll_wait(ep, &out, 1, -1));
        close(ep);
    }
    return 0;
}
