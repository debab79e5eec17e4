/* A TCP and UDP echo pair for testing rbypass run: the same binary is run
 * with and without rbypass, and must print the same results.
 *   echo tcp-server PORT N | tcp-client PORT N | udp-server PORT N | udp-client PORT N */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *m) { perror(m); exit(1); }

static struct sockaddr_in lo(int port) {
    struct sockaddr_in a; memset(&a, 0, sizeof a);
    a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int read_full(int fd, char *b, int n) {
    int got = 0;
    while (got < n) { int k = read(fd, b + got, n - got); if (k <= 0) return k; got += k; }
    return got;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage\n"); return 2; }
    int port = atoi(argv[2]), n = atoi(argv[3]);
    struct sockaddr_in a = lo(port);
    char buf[4096], exp[4096];
    if (!strcmp(argv[1], "tcp-server")) {
        int l = socket(AF_INET, SOCK_STREAM, 0); int one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (void *)&a, sizeof a)) die("bind");
        if (listen(l, 16)) die("listen");
        printf("listening\n"); fflush(stdout);
        struct sockaddr_in p; socklen_t pl = sizeof p;
        int c = accept(l, (void *)&p, &pl); if (c < 0) die("accept");
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        long total = 0; int k;
        while ((k = read(c, buf, sizeof buf)) > 0) { if (write(c, buf, k) != k) die("write"); total += k; }
        if (k < 0) die("read");
        printf("server echoed %ld bytes, peer %s\n", total, inet_ntoa(p.sin_addr));
        close(c); close(l);
    } else if (!strcmp(argv[1], "tcp-client")) {
        int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (connect(s, (void *)&a, sizeof a)) die("connect");
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (int i = 0; i < n; i++) {
            int len = 1 + (i * 131) % 4000;
            for (int j = 0; j < len; j++) exp[j] = (char)(i * 7 + j);
            if (write(s, exp, len) != len) die("write");
            if (read_full(s, buf, len) != len) die("read");
            if (memcmp(buf, exp, len)) { fprintf(stderr, "mismatch at %d\n", i); return 1; }
        }
        struct pollfd pf = { s, POLLOUT, 0 };
        if (poll(&pf, 1, 1000) != 1 || !(pf.revents & POLLOUT)) die("poll");
        shutdown(s, SHUT_WR);
        if (read(s, buf, 1) != 0) die("eof");
        printf("client: %d round trips ok\n", n);
        close(s);
    } else if (!strcmp(argv[1], "udp-server")) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (bind(s, (void *)&a, sizeof a)) die("bind");
        printf("listening\n"); fflush(stdout);
        for (int i = 0; i < n; i++) {
            struct sockaddr_in p; socklen_t pl = sizeof p;
            int k = recvfrom(s, buf, sizeof buf, 0, (void *)&p, &pl); if (k < 0) die("recvfrom");
            if (sendto(s, buf, k, 0, (void *)&p, pl) != k) die("sendto");
        }
        printf("udp server echoed %d\n", n);
    } else if (!strcmp(argv[1], "udp-client")) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (connect(s, (void *)&a, sizeof a)) die("connect");
        for (int i = 0; i < n; i++) {
            int len = 1 + (i * 37) % 1400;
            for (int j = 0; j < len; j++) exp[j] = (char)(i + j);
            if (send(s, exp, len, 0) != len) die("send");
            if (recv(s, buf, sizeof buf, 0) != len || memcmp(buf, exp, len)) { fprintf(stderr, "udp mismatch %d\n", i); return 1; }
        }
        printf("udp client: %d round trips ok\n", n);
    }
    return 0;
}
