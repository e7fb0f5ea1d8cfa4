/*
 * A minimal SMTP sink in C, for the benchmarks: it answers every command at
 * once and costs the machine as little as a sink can, so that on a 2-core
 * machine the client, not the sink, is what the figures measure.
 *
 *   cc -O2 -o csink benchmarks/csink.c
 *   ./csink COUNTERS_FILE        prints the port it listens on (127.0.0.1)
 *
 * It behaves like the "fast" sink of sinks.py: PIPELINING, SIZE, 8BITMIME and
 * SMTPUTF8 in EHLO, every command of a read answered in one write, a
 * recipient whose address starts with "refused" refused with 550 5.1.1, DATA
 * refused with 554 when no recipient was accepted. COUNTERS_FILE (16 bytes,
 * made by the caller) is mapped shared: messages accepted, then connections
 * accepted, as two 64-bit integers the benchmark reads while it runs.
 * Only loopback is ever bound. Built and run by benchmarks/sinks.py (kind
 * "c"); never part of the package or of `make test`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFFER 262144
#define OUT 65536

static const char EHLO_REPLY[] =
    "250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 33554432\r\n250 SMTPUTF8\r\n";

struct session {
    int fd;
    int in_content;    /* reading message content until CRLF.CRLF */
    int has_recipient; /* an accepted RCPT since MAIL/RSET */
    size_t used;       /* bytes kept in buf (a partial command line) */
    char buf[BUFFER];
    /* content: how much of "\r\n.\r\n" the last bytes matched */
    int matched;
};

static volatile int64_t *counters; /* [0] messages, [1] connections */

static void add(int which) { __atomic_add_fetch(&counters[which], 1, __ATOMIC_RELAXED); }

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void put(char *out, size_t *len, const char *text, size_t n)
{
    if (*len + n <= OUT) {
        memcpy(out + *len, text, n);
        *len += n;
    }
}

#define PUT(s) put(out, &len, s, sizeof(s) - 1)

/* Consume content bytes; return how many were used (up to the end mark, included).
 * ``matched`` is how much of CRLF.CRLF the bytes seen so far end with; since
 * the mark starts with CR, a byte that breaks a match restarts it only if it
 * is a CR itself. */
static size_t eat_content(struct session *s, const char *data, size_t n, int *ended)
{
    static const char mark[] = "\r\n.\r\n";
    size_t i = 0;
    *ended = 0;
    while (i < n) {
        if (s->matched == 0) {
            const char *cr = memchr(data + i, '\r', n - i);
            if (cr == NULL)
                return n;
            i = (size_t)(cr - data) + 1;
            s->matched = 1;
            continue;
        }
        char c = data[i++];
        if (c == mark[s->matched]) {
            if (++s->matched == 5) {
                s->matched = 0;
                *ended = 1;
                return i;
            }
        } else {
            s->matched = c == '\r' ? 1 : 0;
        }
    }
    return n;
}

static int handle(struct session *s)
{
    char out[OUT];
    size_t len = 0;
    int closing = 0;
    ssize_t got = read(s->fd, s->buf + s->used, BUFFER - s->used);
    if (got <= 0)
        return got == 0 || (errno != EAGAIN && errno != EINTR) ? -1 : 0;
    size_t end = s->used + (size_t)got;
    size_t at = 0;
    while (at < end) {
        if (s->in_content) {
            int ended;
            at += eat_content(s, s->buf + at, end - at, &ended);
            if (ended) {
                s->in_content = 0;
                s->has_recipient = 0;
                add(0);
                PUT("250 2.0.0 queued\r\n");
            }
            continue;
        }
        char *nl = memchr(s->buf + at, '\n', end - at);
        if (nl == NULL)
            break;
        char *line = s->buf + at;
        size_t n = (size_t)(nl - line) + 1;
        at += n;
        if (n < 4) {
            PUT("500 5.5.2 syntax error\r\n");
        } else if (!strncasecmp(line, "EHLO", 4)) {
            PUT(EHLO_REPLY);
        } else if (!strncasecmp(line, "HELO", 4)) {
            PUT("250 sink\r\n");
        } else if (!strncasecmp(line, "MAIL", 4) || !strncasecmp(line, "RSET", 4)) {
            s->has_recipient = 0;
            PUT("250 2.0.0 ok\r\n");
        } else if (!strncasecmp(line, "RCPT", 4)) {
            char *open = memchr(line, '<', n);
            if (open != NULL && (size_t)(line + n - open) > 8 && !strncasecmp(open + 1, "refused", 7)) {
                PUT("550 5.1.1 no such user\r\n");
            } else {
                s->has_recipient = 1;
                PUT("250 2.0.0 ok\r\n");
            }
        } else if (!strncasecmp(line, "DATA", 4)) {
            if (s->has_recipient) {
                s->in_content = 1;
                s->matched = 2; /* the DATA line's CRLF: ".\r\n" alone ends it */
                PUT("354 go ahead\r\n");
            } else {
                PUT("554 no recipients\r\n");
            }
        } else if (!strncasecmp(line, "QUIT", 4)) {
            PUT("221 bye\r\n");
            closing = 1;
            break;
        } else {
            PUT("250 2.0.0 ok\r\n");
        }
    }
    /* Keep a partial command line for the next read; content is never kept. */
    if (s->in_content)
        s->used = 0;
    else {
        memmove(s->buf, s->buf + at, end - at);
        s->used = end - at;
        if (s->used == BUFFER)
            return -1; /* a command line longer than the buffer */
    }
    if (len > 0 && write(s->fd, out, len) < 0)
        return -1;
    return closing ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: csink COUNTERS_FILE\n");
        return 2;
    }
    int map = open(argv[1], O_RDWR);
    if (map < 0) {
        perror("counters");
        return 2;
    }
    counters = mmap(NULL, 16, PROT_READ | PROT_WRITE, MAP_SHARED, map, 0);
    if (counters == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t size = sizeof address;
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 100) < 0 ||
        getsockname(listener, (struct sockaddr *)&address, &size) < 0) {
        perror("listen");
        return 2;
    }
    printf("%d\n", ntohs(address.sin_port));
    fflush(stdout);
    set_nonblocking(listener);
    int poller = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(poller, EPOLL_CTL_ADD, listener, &event);
    struct epoll_event events[64];
    for (;;) {
        int ready = epoll_wait(poller, events, 64, -1);
        for (int i = 0; i < ready; i++) {
            struct session *s = events[i].data.ptr;
            if (s == NULL) {
                int fd;
                while ((fd = accept(listener, NULL, NULL)) >= 0) {
                    set_nonblocking(fd);
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
                    struct session *fresh = calloc(1, sizeof *fresh);
                    fresh->fd = fd;
                    add(1);
                    struct epoll_event want = {.events = EPOLLIN, .data.ptr = fresh};
                    epoll_ctl(poller, EPOLL_CTL_ADD, fd, &want);
                    static const char greeting[] = "220 sink ready\r\n";
                    if (write(fd, greeting, sizeof greeting - 1) < 0) {
                        close(fd);
                        free(fresh);
                    }
                }
                continue;
            }
            if (handle(s) < 0) {
                epoll_ctl(poller, EPOLL_CTL_DEL, s->fd, NULL);
                close(s->fd);
                free(s);
            }
        }
    }
}
