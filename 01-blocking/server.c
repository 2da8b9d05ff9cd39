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
 * This file is the stage. What every chapter does the same way lives in
 * setup.c (command line numbers, the log, signals, the listening socket) and
 * protocol.c (what the server answers), the same files in chapters 01 to 06.
 */
#define _GNU_SOURCE /* gettid() */
#include <errno.h>
#include <getopt.h>
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

/* The lingering close (close_client) waits at most this long, and reads at
 * most this much, for a client to close its end after ours. */
#define LINGER_MS 2000
#define LINGER_BYTES (1024 * 1024)

#include "setup.c"
#include "protocol.h"

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

/* ============================ Serving a client ============================= */

/* Send all of buf. send() on a blocking socket may still send less than asked
 * (a signal, a full buffer), so loop until all of it is gone. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Answer with one line. Here the reply goes out at once, and send() blocks
 * while the client's receive buffer is full. The line and its '\n' are copied
 * together so that one send() carries both. */
static enum next_step reply(struct client *c, const char *line, size_t len)
{
    char out[MAX_LINE + 1];
    memcpy(out, line, len);
    out[len] = '\n';
    return send_all(c->fd, out, len + 1) == 0 ? KEEP_OPEN : CLOSE;
}

/* Append what the kernel has received from the client to c->in.
 * Returns the byte count, 0 when the client has closed, -1 on error. */
static ssize_t receive(struct client *c)
{
    ssize_t n;
    do
        n = recv(c->fd, c->in + c->in_len, IN_SIZE - c->in_len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        c->in_len += (size_t)n;
    return n;
}

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

/* Read and throw away what the client still sends, until it closes its end
 * (recv() returns 0), fails, or LINGER_MS or LINGER_BYTES run out. */
static void discard_until_eof(int fd)
{
    char scrap[4096];
    size_t total = 0;
    long long deadline = now_ms() + LINGER_MS;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        long long left = deadline - now_ms();
        if (left <= 0 || total >= LINGER_BYTES)
            return;
        int ready = poll(&p, 1, (int)left);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return;
        ssize_t n = recv(fd, scrap, sizeof scrap, 0);
        if (n <= 0)
            return;
        total += (size_t)n;
    }
}

/* The lingering close. close() on a socket whose receive queue still holds
 * bytes we never read makes the kernel answer with RST and throw away every
 * reply not yet delivered: a client that sent "quit" and more lines after it
 * would lose its last echoes and the "bye". So: shutdown(SHUT_WR) sends a FIN
 * after the replies, then we read and discard until the client closes too,
 * and only then close(). A client that never closes costs LINGER_MS, and
 * here the next client waits that long: this server serves one at a time. */
static void close_client(struct client *c, const char *why)
{
    shutdown(c->fd, SHUT_WR);
    discard_until_eof(c->fd);
    close(c->fd);
    log_event("disconnect %s: %s", c->peer, why);
}

/* ============================== Command line =============================== */

static struct {
    const char *host; /* an IPv4 address to bind */
    int port;         /* 0 asks the kernel for a free port */
    int max_clients;
} opt = {"127.0.0.1", DEFAULT_PORT, DEFAULT_MAX_CLIENTS};

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
