/*
 * 03-select-rw-split/server.c: select() with the read/write split.
 *
 *     loop: select(readable: listeners, clients we may read;
 *                  writable: clients with replies waiting;
 *                  timeout:  the oldest lingering close's deadline)
 *           a listener is readable -> accept the new client
 *           a client is readable   -> recv, queue answers to its lines
 *           a client is writable   -> send what its queue holds
 *
 * Chapter 02 froze whenever one client stopped reading: its blocking send()
 * waited for room. Here every socket is non-blocking and nothing ever waits:
 * replies go into the client's output queue, as much as the socket takes is
 * sent at once, and the rest waits until select() reports the socket
 * writable. A client whose queue grows past OUTPUT_HIGH_WATER is not read
 * until it drains (backpressure), so it cannot make us hold more than that.
 * Even closing cannot wait: the lingering close is a state of the client,
 * with a deadline the loop keeps. Still one thread: a slow handler ("sleep")
 * stalls everyone. Chapter 04 gives each client a thread.
 *
 * This file is the stage's loop. What does not change from chapter to chapter
 * lives in files of its own, included below: setup.c (command line numbers,
 * the log, signals, the listening socket) and protocol.h/.c (what the server
 * answers), the same in chapters 01 to 06; overload.c (refusing, shedding),
 * the same in 02, 03 and 06; and nonblocking_io.c (the output queue, the
 * backpressure rule, the lingering close), new here and the same in 06.
 */
#define _GNU_SOURCE /* gettid() */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHAPTER "03-select-rw-split"

/* Chapter N listens on 9N00, so all chapters can run side by side. Like
 * chapter 02 it can listen on up to three ports (-p given three times). */
#define DEFAULT_PORT 9300
#define MAX_PORTS 3

/* select() can only watch descriptors below FD_SETSIZE (1024). A thousand
 * clients, plus stdin/out/err and three listeners, stay below it, so the
 * default cap is what refuses clients, not the limit. */
#define DEFAULT_MAX_CLIENTS 1000

#include "setup.c"
#include "protocol.h"

/* What the command line asked for (parse_options, at the end). */
static struct {
    const char *host;       /* an IPv4 address to bind */
    int ports[MAX_PORTS];   /* 0 asks the kernel for a free port */
    int nports;
    int max_clients;
} opt = {"127.0.0.1", {0}, 0, DEFAULT_MAX_CLIENTS};

/* One connected client: its socket, the bytes it sent that do not make a
 * whole line yet, the replies not sent yet, and how far it is in leaving. */
struct client {
    int fd;
    int local_port;             /* our end of the connection */
    char peer[PEER_NAME_SIZE];  /* "127.0.0.1:54321", for the log */
    char *in;                   /* bytes received, not yet a whole line;
                                   IN_SIZE bytes, only while it holds some */
    size_t in_len;
    char *out;                  /* replies not sent yet; NULL when none */
    size_t out_len, out_cap;
    const char *leaving;        /* why it is leaving, once it is; NULL till then */
    int eof;                    /* it has closed its end: nothing more to read */
    size_t discarded;           /* bytes thrown away since it started leaving */
    long long linger_deadline;  /* our FIN is sent: closed at this time; or 0 */
    struct client *prev, *next; /* in the list of lingering clients */
};

#include "protocol.c"
#include "overload.c"
#include "nonblocking_io.c"

/* ============================== The select loop ============================ */

/* Every connected client, found by its descriptor; NULL where none. */
static struct client *clients[FD_SETSIZE];
static int client_count;
static int listeners[MAX_PORTS];
static int listener_count;

static void add_client(struct client *c)
{
    clients[c->fd] = c;
    client_count++;
}

static void drop_client(struct client *c, const char *why)
{
    clients[c->fd] = NULL;
    client_count--;
    stop_lingering(c);
    close(c->fd);
    log_event("disconnect %s: %s", c->peer, why);
    free(c->in);
    free(c->out);
    free(c);
}

/* After a read or a write: send what fits; let the client go if it must. */
static void after_io(struct client *c)
{
    if (settle(c) == CLOSE)
        drop_client(c, c->leaving);
}

/* Lingering clients whose time is up: closed, even with bytes unread. */
static void close_expired_lingers(void)
{
    long long now = now_ms();
    while (lingering_first != NULL && lingering_first->linger_deadline <= now)
        drop_client(lingering_first, lingering_first->leaving);
}

/* A listener is readable: take the connection waiting there. */
static void on_listener_ready(int listen_fd)
{
    struct sockaddr_in peer;
    socklen_t peer_len = sizeof peer;
    int fd = accept(listen_fd, (struct sockaddr *)&peer, &peer_len);
    if (fd < 0) {
        after_accept_error(listen_fd);
        return;
    }
    /* FD_SET() on a descriptor >= FD_SETSIZE would write past the end of the
     * fd_set (built with -D_FORTIFY_SOURCE, as here, glibc aborts instead). */
    if (fd >= FD_SETSIZE || client_count >= opt.max_clients) {
        refuse_connection(fd, fd >= FD_SETSIZE ? "descriptor past FD_SETSIZE" : "at the cap");
        return;
    }
    struct client *c = calloc(1, sizeof *c);
    if (c == NULL || fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
        free(c); /* a blocking socket could stall us all: better refuse */
        refuse_connection(fd, "cannot set it up");
        return;
    }
    c->fd = fd;
    c->local_port = describe_connection(fd, &peer, c->peer);
    log_event("connect %s (fd %d)", c->peer, c->fd);
    add_client(c);
    send_greeting(c);
    after_io(c); /* a new socket's buffer is empty: this short line fits */
}

/* The client's socket is readable: one recv(), then an answer queued for
 * every complete line, then as much of the queue sent as the socket takes.
 * A client that does not read its answers only fills its own queue. */
static void serve_ready_client(struct client *c)
{
    if (read_some(c) < 0) {
        drop_client(c, c->leaving);
        return;
    }
    release_input(c);
    after_io(c);
}

/* Fill the sets select() will watch: the listeners (unless accepting is
 * paused); every client we want to read (wants_input); and, for writing,
 * only the clients with replies queued: a socket with room in its buffer is
 * always writable, and watching it would wake us for nothing. The sets are
 * rebuilt on each turn because select() overwrites them with its answer.
 * Returns the highest descriptor, which select() needs plus one. */
static int fill_fd_sets(fd_set *readable, fd_set *writable)
{
    int max_fd = -1, accepting = now_ms() >= accept_paused_until;
    FD_ZERO(readable);
    FD_ZERO(writable);
    for (int i = 0; i < listener_count && accepting; i++) {
        FD_SET(listeners[i], readable);
        if (listeners[i] > max_fd)
            max_fd = listeners[i];
    }
    for (int fd = 0; fd < FD_SETSIZE; fd++) {
        struct client *c = clients[fd];
        if (c == NULL)
            continue;
        if (wants_input(c))
            FD_SET(fd, readable);
        if (c->out_len > 0)
            FD_SET(fd, writable);
        max_fd = fd;
    }
    return max_fd;
}

/* How long select() may sleep (see ms_to_next_deadline); NULL: no limit. */
static struct timeval *next_timeout(struct timeval *tv)
{
    int ms = ms_to_next_deadline();
    if (ms < 0)
        return NULL;
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
    return tv;
}

/* One turn per select(): sleep until some socket is ready or a deadline
 * comes, then serve the ready ones in order. Both scans cost O(number of
 * descriptors), whether one client is talking or all of them. */
static void serve_forever(void)
{
    for (;;) {
        fd_set readable, writable;
        struct timeval tv;
        int max_fd = fill_fd_sets(&readable, &writable);
        if (select(max_fd + 1, &readable, &writable, NULL, next_timeout(&tv)) < 0) {
            if (errno == EINTR)
                continue;
            perror("server: select");
            exit(1);
        }
        for (int i = 0; i < listener_count; i++)
            if (FD_ISSET(listeners[i], &readable))
                on_listener_ready(listeners[i]);
        for (int fd = 0; fd <= max_fd; fd++) {
            if (clients[fd] != NULL && FD_ISSET(fd, &readable))
                serve_ready_client(clients[fd]);
            if (clients[fd] != NULL && FD_ISSET(fd, &writable))
                after_io(clients[fd]); /* (it may have left just above) */
        }
        close_expired_lingers();
    }
}

/* Every listener, non-blocking: select() may report a connection that is
 * reset before accept() takes it, and a blocking accept() would then wait
 * for the next one with every client frozen (UNP 16.6). */
static void set_up_loop(const char *host, const int *ports, int nports)
{
    for (listener_count = 0; listener_count < nports; listener_count++) {
        int fd = open_listener(host, ports[listener_count]);
        if (fd < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
            exit(1);
        listeners[listener_count] = fd;
    }
    reserve_spare_fd();
}

/* ============================== Command line =============================== */

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port]... (up to 3) [-m max-clients] [-q]\n");
    exit(2);
}

static void parse_options(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:m:q")) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p':
            if (opt.nports == MAX_PORTS)
                usage();
            opt.ports[opt.nports++] = parse_number(optarg, 0, 65535);
            break;
        case 'm': opt.max_clients = parse_number(optarg, 1, MAX_CLIENTS_LIMIT); break;
        case 'q': quiet = 1; break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    if (opt.nports == 0) /* no -p: the default port */
        opt.ports[opt.nports++] = DEFAULT_PORT;
}

/* ================================== Main =================================== */

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    install_signal_handlers();
    set_up_loop(opt.host, opt.ports, opt.nports);
    serve_forever();
}
