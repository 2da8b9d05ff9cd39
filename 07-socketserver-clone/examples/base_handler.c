/*
 * examples/base_handler.c: base_handler.py in C, on the library, almost line
 * for line. A threaded echo server whose handler talks to the raw socket.
 *
 *     examples/base_handler [-p PORT]          then: ./client -p PORT
 *
 * Each reply is what one recv() returned, with "echo: " in front, as in the
 * Python. That is one message only by luck: TCP carries a stream of bytes,
 * so two lines sent close together can come out of one recv() glued, and a
 * long line in pieces (粘包, the sticky-packet problem). The flaw is copied
 * on purpose; stream_handler.c reads whole lines instead.
 */
#define _POSIX_C_SOURCE 200809L /* getopt() */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../socketserver.h"

#define DEFAULT_PORT 9701 /* the chapter's 9700, plus one per example */
#define RECV_SIZE 1024    /* recv(1024), as the Python asks */

/* Python's socket.sendall(): send() may take less than asked, so loop. */
static int sendall(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* bytes.rstrip(b"\r\n"): the length without the line end. */
static size_t rstrip_newline(const char *data, size_t len)
{
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    return len;
}

/* class EchoHandler(socketserver.BaseRequestHandler): def handle(self) */
static int echo_handle(struct ss_handler *h)
{
    int request = h->request->fd; /* self.request: the connected socket */
    char data[RECV_SIZE], reply[6 + RECV_SIZE];
    if (sendall(request, "welcome, send q to quit\n", 24) < 0)
        return ss_fail(h->request, "handle: send");
    for (;;) {
        ssize_t n = recv(request, data, sizeof data, 0); /* what has arrived: a line, if lucky */
        if (n < 0)
            return ss_fail(h->request, "handle: recv");
        if (n == 0)
            break; /* the client left */
        if (rstrip_newline(data, (size_t)n) == 1 && data[0] == 'q') {
            if (sendall(request, "bye\n", 4) < 0)
                return ss_fail(h->request, "handle: send");
            break;
        }
        memcpy(reply, "echo: ", 6);
        memcpy(reply + 6, data, (size_t)n);
        if (sendall(request, reply, 6 + (size_t)n) < 0)
            return ss_fail(h->request, "handle: send");
    }
    return SS_OK;
}

static const struct ss_handler_class EchoHandler = {
    .name = "EchoHandler", .base = &ss_BaseRequestHandler, .handle = echo_handle};

/* argparse: -p PORT, 0 picks a free port; anything else is a usage error. */
static int parse_port(int argc, char **argv)
{
    int c;
    long port = DEFAULT_PORT;
    char *end;
    while ((c = getopt(argc, argv, "p:")) == 'p') {
        port = strtol(optarg, &end, 10);
        if (end == optarg || *end != '\0')
            port = -1;
    }
    if (c != -1 || optind != argc || port < 0 || port > 65535) {
        fprintf(stderr, "usage: base_handler [-p PORT]\n");
        exit(2);
    }
    return (int)port;
}

int main(int argc, char **argv)
{
    static struct ss_server server; /* static: daemon threads may outlive main() */
    int port = parse_port(argc, argv);
    signal(SIGPIPE, SIG_IGN); /* Python ignores it at start-up: EPIPE instead */
    if (ss_server_init(&server, &ss_ThreadingMixIn, &ss_TCPServer, "127.0.0.1", port,
                       &EchoHandler, true) != SS_OK) {
        fprintf(stderr, "base_handler: cannot listen on 127.0.0.1:%d: %s\n", port,
                strerror(errno));
        return 1;
    }
    server.daemon_threads = true; /* on Ctrl-C, do not wait for connected clients */
    printf("listening on 127.0.0.1:%d\n",
           ntohs(((struct sockaddr_in *)&server.server_address)->sin_port));
    fflush(stdout);
    ss_serve_forever(&server, 0.5); /* Ctrl-C kills us here; server.c stops cleanly */
    ss_server_close(&server);
    return 0;
}
