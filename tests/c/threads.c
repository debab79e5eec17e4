/* Threads on one stack: an acceptor, one echo thread per connection, and per
 * client a writer and a reader thread sharing one socket (full duplex on one
 * fd). Every client checks that its bytes came back intact; a UDP socket is
 * read by several threads at once, each blocked in recv, while others send.
 * Prints only deterministic totals, so the kernel's run is the oracle.
 * usage: threads PORT */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLIENTS 4
#define BYTES (256 * 1024)
#define READERS 3
#define DGRAMS 3000

static int port;

static struct sockaddr_in lo(int p) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(p);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static unsigned char byte_at(int client, long i) { return (unsigned char)(i * 31 + client * 7 + i / 4099); }

static void *echo(void *arg) {
    int s = (int)(long)arg;
    char b[8192];
    long n;
    while ((n = read(s, b, sizeof b)) > 0) {
        for (long off = 0; off < n;) {
            long w = write(s, b + off, n - off);
            if (w <= 0) { close(s); return NULL; }
            off += w;
        }
    }
    close(s);
    return NULL;
}

static void *acceptor(void *arg) {
    int l = (int)(long)arg;
    pthread_t t[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        int s = accept(l, NULL, NULL);
        if (s < 0) { perror("accept"); exit(1); }
        pthread_create(&t[i], NULL, echo, (void *)(long)s);
    }
    for (int i = 0; i < CLIENTS; i++) pthread_join(t[i], NULL);
    return NULL;
}

struct client { int id, fd; long got, bad; };

static void *writer(void *arg) {
    struct client *c = arg;
    unsigned char b[5000];
    for (long off = 0; off < BYTES;) {
        long n = BYTES - off < (long)sizeof b ? BYTES - off : (long)sizeof b;
        for (long i = 0; i < n; i++) b[i] = byte_at(c->id, off + i);
        long w = send(c->fd, b, n, 0);
        if (w <= 0) { perror("send"); exit(1); }
        off += w;
    }
    shutdown(c->fd, SHUT_WR);
    return NULL;
}

static void *reader(void *arg) {
    struct client *c = arg;
    unsigned char b[3000];
    long n;
    while ((n = recv(c->fd, b, sizeof b, 0)) > 0) {
        for (long i = 0; i < n; i++) c->bad += b[i] != byte_at(c->id, c->got + i);
        c->got += n;
    }
    return NULL;
}

static atomic_long dgrams_read;

static void *udp_reader(void *arg) {
    int u = (int)(long)arg;
    char b[64];
    for (;;) {
        long n = recv(u, b, sizeof b, 0);
        if (n <= 0 || !memcmp(b, "stop", 4)) return NULL;
        atomic_fetch_add(&dgrams_read, 1);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    port = atoi(argv[1]);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = lo(port);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, CLIENTS)) { perror("listen"); return 1; }
    pthread_t acc;
    pthread_create(&acc, NULL, acceptor, (void *)(long)l);
    struct client c[CLIENTS];
    pthread_t w[CLIENTS], r[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        c[i] = (struct client){i, socket(AF_INET, SOCK_STREAM, 0), 0, 0};
        if (connect(c[i].fd, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
        pthread_create(&w[i], NULL, writer, &c[i]);
        pthread_create(&r[i], NULL, reader, &c[i]);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(w[i], NULL);
        pthread_join(r[i], NULL);
        printf("client %d: echoed %ld bytes, %ld wrong\n", i, c[i].got, c[i].bad);
        close(c[i].fd);
    }
    pthread_join(acc, NULL);
    close(l);

    /* UDP: several threads blocked in recv on one socket, paced senders. */
    int u = socket(AF_INET, SOCK_DGRAM, 0), s = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 4 << 20;
    setsockopt(u, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct sockaddr_in ua = lo(port + 1);
    if (bind(u, (struct sockaddr *)&ua, sizeof ua)) { perror("bind udp"); return 1; }
    pthread_t ur[READERS];
    for (int i = 0; i < READERS; i++) pthread_create(&ur[i], NULL, udp_reader, (void *)(long)u);
    for (int i = 0; i < DGRAMS; i++) {
        sendto(s, "datagram", 8, 0, (struct sockaddr *)&ua, sizeof ua);
        if (i % 64 == 63) usleep(200);
    }
    for (int waited = 0; atomic_load(&dgrams_read) < DGRAMS && waited < 10000; waited++) usleep(1000);
    for (int i = 0; i < READERS; i++) sendto(s, "stop", 4, 0, (struct sockaddr *)&ua, sizeof ua);
    for (int i = 0; i < READERS; i++) pthread_join(ur[i], NULL);
    printf("udp: %ld datagrams read by %d threads\n", atomic_load(&dgrams_read), READERS);
    return 0;
}
