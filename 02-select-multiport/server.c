/*
 * 02-select-multiport/server.c: one process, one select(), many sockets.
 *
 *     listen on up to three ports
 *     loop: select(every listener and every client)
 *           a listener is readable -> accept the new client
 *           a client is readable   -> recv, answer its complete lines
 *
 * select() sleeps until at least one socket has something for us, then says
 * which. The loop serves those one after another: no client waits for
 * another to leave, yet only one is ever being served at a time
 * ("pseudo-concurrency"). Replies still go out with a blocking send(): a
 * client that sends without ever reading fills its socket buffer, send()
 * blocks, and every other client freezes with it. Chapter 03 fixes that.
 *
 * This file is the stage. What does not change from chapter to chapter lives
 * in files of its own, included below: setup.c (command line numbers, the
 * log, signals, the listening socket) and protocol.h/.c (what the server
 * answers), the same in chapters 01 to 06; blocking_io.c (recv, send and
 * close, all blocking), the same in 01, 02, 04 and 05; and overload.c
 * (refusing, shedding), the same in 02, 03 and 06.
 */
#define _GNU_SOURCE /* gettid() */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHAPTER "02-select-multiport"

/* Chapter N listens on 9N00, so all chapters can run side by side; this one
 * on three consecutive ports by default, like the source article's 9991-9993. */
#define DEFAULT_PORT 9200
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
#include "overload.c"

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
    close_client(c, why);
    free(c);
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
    struct client *c = malloc(sizeof *c);
    if (c == NULL) {
        refuse_connection(fd, "out of memory");
        return;
    }
    c->fd = fd;
    c->local_port = describe_connection(fd, &peer, c->peer);
    c->in_len = 0;
    log_event("connect %s (fd %d)", c->peer, c->fd);
    add_client(c);
    if (send_greeting(c) == CLOSE)
        drop_client(c, "send failed");
}

/* The client's socket is readable: one recv(), which cannot block now, then
 * an answer to every complete line. Answers go out with a blocking send():
 * if this client does not read them, we wait for it, and so does everyone. */
static void serve_ready_client(struct client *c)
{
    ssize_t n = receive(c);
    if (n == 0)
        drop_client(c, "client closed"); /* EOF: a close, or a shutdown(SHUT_WR) */
    else if (n < 0)
        drop_client(c, strerror(errno)); /* ECONNRESET: the client reset */
    else if (handle_input(c) == CLOSE)
        drop_client(c, "closed by server");
}

/* Fill the set select() will watch: the listeners (unless accepting is
 * paused) and every client. It is rebuilt on each turn because select()
 * overwrites it with its answer. Returns the highest descriptor, which
 * select() needs plus one. */
static int fill_fd_sets(fd_set *readable)
{
    int max_fd = -1, accepting = now_ms() >= accept_paused_until;
    FD_ZERO(readable);
    for (int i = 0; i < listener_count && accepting; i++) {
        FD_SET(listeners[i], readable);
        if (listeners[i] > max_fd)
            max_fd = listeners[i];
    }
    for (int fd = 0; fd < FD_SETSIZE; fd++) {
        if (clients[fd] != NULL) {
            FD_SET(fd, readable);
            max_fd = fd;
        }
    }
    return max_fd;
}

/* How long select() may sleep: until the listeners are watched again, or
 * with no limit (NULL). */
static struct timeval *next_timeout(struct timeval *tv)
{
    long long left = accept_paused_until - now_ms();
    if (left <= 0)
        return NULL;
    tv->tv_sec = (time_t)(left / 1000);
    tv->tv_usec = (suseconds_t)(left % 1000) * 1000;
    return tv;
}

/* One turn per select(): sleep until some socket is ready, then serve the
 * ready ones in order. Both scans cost O(number of descriptors), whether
 * one client is talking or all of them. */
static void serve_forever(void)
{
    for (;;) {
        fd_set readable;
        struct timeval tv;
        int max_fd = fill_fd_sets(&readable);
        if (select(max_fd + 1, &readable, NULL, NULL, next_timeout(&tv)) < 0) {
            if (errno == EINTR)
                continue;
            perror("server: select");
            exit(1);
        }
        for (int i = 0; i < listener_count; i++)
            if (FD_ISSET(listeners[i], &readable))
                on_listener_ready(listeners[i]);
        for (int fd = 0; fd <= max_fd; fd++)
            if (clients[fd] != NULL && FD_ISSET(fd, &readable))
                serve_ready_client(clients[fd]);
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
    if (opt.nports == 0) /* no -p: the three default ports */
        for (int i = 0; i < MAX_PORTS; i++)
            opt.ports[opt.nports++] = DEFAULT_PORT + i;
}

/* ================================== Main =================================== */

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    install_signal_handlers();
    set_up_loop(opt.host, opt.ports, opt.nports);
    serve_forever();
}
