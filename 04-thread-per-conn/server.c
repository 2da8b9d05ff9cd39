/*
 * 04-thread-per-conn/server.c: one thread per connection.
 *
 *     main thread: accept -> pthread_create(serve the client) -> accept ...
 *     each client thread: the blocking code of chapter 01, for its client only
 *
 * The serving code is chapter 01's, unchanged: blocking recv() and send(),
 * and "sleep" really sleeps. What changed is who runs it: a new thread for
 * every client, so a client that blocks (slow to read, slow to type, a slow
 * "sleep") blocks only its own thread. The same idea as Python's
 * ThreadingTCPServer (chapter 07 rebuilds it Python's way). The price: a
 * stack and a kernel task per client, a context switch per message, and
 * state shared between threads needs a lock (see the counters). Chapter 05
 * uses processes instead.
 *
 * This file is the stage. What does not change from chapter to chapter lives
 * in files of its own, included below: setup.c (command line numbers, the
 * log, signals, the listening socket) and protocol.h/.c (what the server
 * answers), the same in chapters 01 to 06, and blocking_io.c (recv, send and
 * close, all blocking), chapter 01's, the same in 01, 02, 04 and 05.
 */
#define _GNU_SOURCE /* gettid() */
#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHAPTER "04-thread-per-conn"

/* Chapter N listens on 9N00, so all chapters can run side by side. */
#define DEFAULT_PORT 9400

/* At most this many clients (threads) at once; the next one is told
 * "error server busy". Without a cap, a flood of connections would start
 * threads until memory or the kernel's task limit runs out. */
#define DEFAULT_MAX_CLIENTS 1000

/* Each thread's stack. The default is 8 MiB of address space per thread
 * (ulimit -s), of which a handler here touches under 20 KiB; 256 KiB leaves
 * room for the sanitizers, which use several times more, and makes a
 * thousand threads cost 256 MiB of address space instead of 8 GiB. */
#define THREAD_STACK_SIZE (256 * 1024)

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
 * blocks: recv() waits for the client to type, but only this client's
 * thread waits with it. */
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

/* ================================ The threads ============================== */

/* Counters every thread updates. "active++" is a read, an add and a write:
 * two threads doing it at once can both read 5 and both write 6, and a
 * client is lost from the count. The mutex makes each update whole. */
static struct {
    pthread_mutex_t lock;
    int active;  /* clients being served now */
    long served; /* clients served since start */
} stats = {PTHREAD_MUTEX_INITIALIZER, 0, 0};

/* Count a new client in, unless the cap is reached. The main thread does it
 * before starting the thread, so the cap is exact. Returns 0 or -1 (full). */
static int admit_client(void)
{
    pthread_mutex_lock(&stats.lock);
    int admitted = stats.active < opt.max_clients;
    if (admitted)
        stats.active++;
    pthread_mutex_unlock(&stats.lock);
    return admitted ? 0 : -1;
}

/* A client leaves the count: its thread ended (was_served is 1), or could
 * not start (0). */
static void count_out(int was_served)
{
    pthread_mutex_lock(&stats.lock);
    stats.active--;
    stats.served += was_served;
    int active = stats.active;
    long served = stats.served;
    pthread_mutex_unlock(&stats.lock);
    log_event("%d active, %ld served", active, served);
}

/* The body of every client thread: chapter 01's serving code, for one
 * client. The thread owns c and frees it. */
static void *client_thread(void *arg)
{
    struct client *c = arg;
    close_client(c, serve_client(c));
    free(c);
    count_out(1);
    return NULL; /* detached: the thread's memory is freed as it ends */
}

/* Start a detached thread for c: nobody will pthread_join() it, so it must
 * release its own resources when it ends. */
static int start_client_thread(struct client *c)
{
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, THREAD_STACK_SIZE);
    int err = pthread_create(&thread, &attr, client_thread, c);
    pthread_attr_destroy(&attr);
    if (err != 0) /* pthread functions return the error, not errno */
        fprintf(stderr, "server: pthread_create: %s\n", strerror(err));
    return err == 0 ? 0 : -1;
}

/* No thread for this client (the cap, or no memory for a new thread): say
 * so and let it go. No lingering close here: it would hold the main thread,
 * and every newcomer with it. The client has sent nothing yet, so close()
 * ends the connection with a FIN after our line. */
static void refuse_client(struct client *c)
{
    reply_text(c, "error server busy");
    close(c->fd);
    log_event("disconnect %s: server busy", c->peer);
    free(c);
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

    for (;;) {
        struct client *c = malloc(sizeof *c); /* owned by its thread from here */
        if (c == NULL) {
            perror("server: malloc");
            continue;
        }
        if (accept_client(listen_fd, c) < 0) {
            free(c);
            continue;
        }
        if (admit_client() < 0) {
            refuse_client(c);
        } else if (start_client_thread(c) < 0) {
            count_out(0);
            refuse_client(c);
        }
    }
}
