/*
 * 05-fork-per-conn/server.c: one process per connection.
 *
 *     parent: accept -> fork -> close its copy of the client socket -> accept ...
 *     child:  close its copy of the listener -> serve the client -> _exit
 *     parent, on SIGCHLD: waitpid() every child that ended
 *
 * The serving code is chapter 01's, unchanged. fork() gives each client a
 * copy of the whole process, so a client that blocks blocks only its own
 * process, and a client that crashes its process harms nobody else. The
 * same idea as Python's ForkingMixIn (chapter 07 rebuilds it Python's way).
 * The price: a process per client (page tables, a kernel task, a fork that
 * costs more than a thread), no memory shared between clients, and dead
 * children must be reaped or they stay zombies.
 *
 * This file is the stage. What does not change from chapter to chapter lives
 * in files of its own, included below: setup.c (command line numbers, the
 * log, signals, the listening socket) and protocol.h/.c (what the server
 * answers), the same in chapters 01 to 06, and blocking_io.c (recv, send and
 * close, all blocking), chapter 01's, the same in 01, 02, 04 and 05.
 */
#define _GNU_SOURCE /* gettid() */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHAPTER "05-fork-per-conn"

/* Chapter N listens on 9N00, so all chapters can run side by side. */
#define DEFAULT_PORT 9500

/* At most this many clients (child processes) at once; the next one is told
 * "error server busy". Without a cap, a flood of connections would fork
 * until memory or the process limit (ulimit -u) runs out. */
#define DEFAULT_MAX_CLIENTS 1000

#include "setup.c"
#include "protocol.h"

/* What the command line asked for (parse_options, at the end). */
static struct {
    const char *host; /* an IPv4 address to bind */
    int port;         /* 0 asks the kernel for a free port */
    int max_clients;
    int no_reaping;   /* -z: never wait for children, to see zombies */
} opt = {"127.0.0.1", DEFAULT_PORT, DEFAULT_MAX_CLIENTS, 0};

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
 * process waits with it. */
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

/* ================================ The children ============================= */

/* Children the parent has started and reaped. Only main() writes started
 * and only the SIGCHLD handler writes reaped, so neither update can be lost
 * halfway; live children = started - reaped. */
static long started;
static volatile sig_atomic_t reaped;

/* A child that has exited stays a zombie (its pid and exit status kept)
 * until its parent collects it with waitpid(). One SIGCHLD may stand for
 * several children (signals do not queue), so collect all that have ended;
 * WNOHANG returns at once when none has. waitpid() may change errno, which
 * the code we interrupted might be about to read: save it. */
static void on_child_exit(int sig)
{
    int saved_errno = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        reaped++;
    errno = saved_errno;
}

/* SA_RESTART: an accept() interrupted by SIGCHLD resumes by itself instead
 * of failing with EINTR. SA_NOCLDSTOP: no signal when a child is merely
 * stopped (Ctrl-Z), only when it ends. */
static void install_reaper(void)
{
    set_handler(SIGCHLD, on_child_exit, SA_RESTART | SA_NOCLDSTOP);
}

/* No process for this client (the cap, or fork failed): say so, let it go.
 * No lingering close here: it would hold the parent, and every newcomer
 * with it. The client has sent nothing yet, so close() ends the connection
 * with a FIN after our line. */
static void refuse_client(struct client *c)
{
    reply_text(c, "error server busy");
    close(c->fd);
    log_event("disconnect %s: server busy", c->peer);
}

/* fork() returns twice: 0 in the child, the child's pid in the parent. Both
 * then hold the listener and the client's socket; each closes the one it
 * does not use. The connection ends only when the last copy of its socket
 * is closed, so a parent that kept its copy would leave every client
 * waiting for an EOF that never comes (and run out of descriptors). */
static void start_child(int listen_fd, struct client *c)
{
    pid_t pid = fork();
    if (pid < 0) {
        perror("server: fork");
        refuse_client(c);
        return;
    }
    if (pid == 0) {
        close(listen_fd);
        close_client(c, serve_client(c));
        _exit(0); /* not exit(): the parent's stdio buffers are not ours to flush */
    }
    started++;
    close(c->fd);
}

/* ============================== Command line =============================== */

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port] [-m max-clients] [-q] [-z]\n");
    exit(2);
}

static void parse_options(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:m:qz")) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = parse_number(optarg, 0, 65535); break;
        case 'm': opt.max_clients = parse_number(optarg, 1, MAX_CLIENTS_LIMIT); break;
        case 'q': quiet = 1; break;
        case 'z': opt.no_reaping = 1; break;
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
    /* The children inherit the stop handler but not the signal: after a
     * SIGTERM to the parent alone, each child serves its client to the end,
     * and the kernel hands it to init to reap. Ctrl-C signals the whole
     * process group, so in a terminal parent and children stop together. */
    install_signal_handlers();
    if (!opt.no_reaping)
        install_reaper();
    int listen_fd = open_listener(opt.host, opt.port);
    if (listen_fd < 0)
        return 1;

    static struct client c; /* the parent needs it only until fork() */
    for (;;) {
        if (accept_client(listen_fd, &c) < 0)
            continue;
        if (started - reaped >= opt.max_clients)
            refuse_client(&c);
        else
            start_child(listen_fd, &c);
    }
}
