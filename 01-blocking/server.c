/*
 * 01-blocking/server.c: the simplest TCP server there is.
 *
 *     socket -> setsockopt -> bind -> listen -> accept -> recv/send ... -> close
 *                                                 ^                         |
 *                                                 +-------------------------+
 *
 * It serves one client from its greeting to its last byte, then accepts the
 * next one. While a client is connected, the next one waits in the kernel's
 * listen queue: its connect() has succeeded, but nobody calls accept() for it.
 * That is the problem chapter 02 solves.
 *
 * This file is the stage. What does not change from chapter to chapter lives
 * in files of its own, included below: setup.c (command line numbers, the
 * log, signals, the listening socket) and protocol.h/.c (what the server
 * answers), the same in chapters 01 to 06, and blocking_io.c (recv, send and
 * close, all blocking), the same in 01, 02, 04 and 05.
 */
#define _GNU_SOURCE /* gettid() */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHAPTER "01-blocking"

/* Chapter N listens on 9N00, so all chapters can run side by side. */
#define DEFAULT_PORT 9100

/* -m is accepted by every chapter. This one serves a single client at a time,
 * so the cap has nothing to limit here. */
#define DEFAULT_MAX_CLIENTS 1000

#include "setup.c"
#include "protocol.h"

/* What the command line asked for (parse_options, at the end). */
static struct {
    const char *host; /* an IPv4 address to bind */
    int port;         /* 0 asks the kernel for a free port */
    int max_clients;
} opt = {"127.0.0.1", DEFAULT_PORT, DEFAULT_MAX_CLIENTS};

/* One connected client: its socket, and the bytes it sent that do not make a
 * whole line yet. */
struct client {
    int fd;
    int local_port;             /* our end of the connection */
    char peer[PEER_NAME_SIZE];  /* "127.0.0.1:54321", for the log */
    char in[IN_SIZE];           /* bytes received, not yet a whole line */
    size_t in_len;
};

#include "protocol.c"
#include "blocking_io.c"

/* ============================ Serving a client ============================= */

/* Wait for a connection and fill in c. Returns -1 when accept() failed;
 * the caller simply tries again. */
static int accept_client(int listen_fd, struct client *c)
{
    struct sockaddr_in peer;
    socklen_t peer_len = sizeof peer;

    /* Blocks until the kernel has a completed connection in the queue. */
    c->fd = accept(listen_fd, (struct sockaddr *)&peer, &peer_len);
    if (c->fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of descriptors or memory: retrying at once would spin at
             * full CPU. Back off a little, as nginx and HAProxy do. */
            perror("server: accept");
            nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
        } else if (errno != EINTR && errno != ECONNABORTED) {
            perror("server: accept");
        }
        return -1;
    }
    c->local_port = describe_connection(c->fd, &peer, c->peer);
    c->in_len = 0;
    log_event("connect %s (fd %d)", c->peer, c->fd);
    return 0;
}

/* Talk to one client until it quits, leaves or misbehaves. Everything here
 * blocks: recv() waits for the client to type, and no other client is
 * served in the meantime. */
static const char *serve_client(struct client *c)
{
    if (send_greeting(c) == CLOSE)
        return "send failed";
    for (;;) {
        ssize_t n = receive(c);
        if (n == 0)
            return "client closed"; /* EOF: a close, or a shutdown(SHUT_WR) */
        if (n < 0)
            return strerror(errno); /* ECONNRESET: the client reset */
        if (handle_input(c) == CLOSE)
            return "closed by server";
    }
}

/* ============================== Command line =============================== */

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port] [-m max-clients] [-q]\n");
    exit(2);
}

static void parse_options(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:m:q")) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = parse_number(optarg, 0, 65535); break;
        case 'm': opt.max_clients = parse_number(optarg, 1, MAX_CLIENTS_LIMIT); break;
        case 'q': quiet = 1; break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
}

/* ================================== Main =================================== */

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    install_signal_handlers();
    int listen_fd = open_listener(opt.host, opt.port);
    if (listen_fd < 0)
        return 1;

    static struct client c; /* one client at a time, so one is enough */
    for (;;) {
        if (accept_client(listen_fd, &c) < 0)
            continue;
        close_client(&c, serve_client(&c));
    }
}
