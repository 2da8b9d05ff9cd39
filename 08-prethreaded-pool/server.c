/*
 * 08-prethreaded-pool/server.c: a pool of workers, made before any client.
 *
 *     main:        listen -> start N workers -> ready line -> wait for a signal
 *     each worker: accept -> serve the client (chapter 04's code) -> accept ...
 *
 * Chapters 04 and 05 make a thread or a process per client, and pay for it
 * on every connection. Here N workers (-t, default 16) are made once. Each
 * blocks in accept() on the listening socket they all share, serves the
 * client it gets with chapter 04's blocking code, and accepts again. With -f
 * the workers are processes, forked once (Apache's "prefork"). The price: N
 * clients at most are served at once; client N+1 waits in the listen queue,
 * connected but not greeted, until a worker is free. Stevens measured these
 * designs in Unix Network Programming (vol. 1, ch. 30).
 *
 * This file is the stage. What does not change from chapter to chapter lives
 * in files of its own, included below, byte-for-byte copies of chapter 04's:
 * setup.c (command line numbers, the log, signals, the listening socket),
 * protocol.h/.c (what the server answers) and blocking_io.c (recv, send and
 * close, all blocking).
 */
#define _GNU_SOURCE /* gettid() */
#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHAPTER "08-prethreaded-pool"

/* Chapter N listens on 9N00, so all chapters can run side by side. */
#define DEFAULT_PORT 9800

/* The pool's size (-t): how many clients are served at once. Several
 * times the CPUs of a small machine, as a worker mostly waits for its
 * client; each idle one costs a stack (or a process) and nothing else. */
#define DEFAULT_WORKERS 16

/* The largest -t: 10,000 tasks, as many as chapters 04 and 05 start for 10,000 clients. */
#define MAX_WORKERS 10000

/* Each worker thread's stack, as in chapter 04 (see the comment there). */
#define THREAD_STACK_SIZE (256 * 1024)

/* setup.c's open_listener() leaves the ready line to main: once every worker runs. */
#define READY_LINE_LATER

#include "setup.c"
#include "protocol.h"

/* What the command line asked for (parse_options, at the end). */
static struct {
    const char *host; /* an IPv4 address to bind */
    int port;         /* 0 asks the kernel for a free port */
    int workers;      /* -t: the pool's size */
    int processes;    /* -f: worker processes instead of threads */
} opt = {"127.0.0.1", DEFAULT_PORT, DEFAULT_WORKERS, 0};

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
 * blocks: recv() waits for the client to type, and this worker with it;
 * the other workers go on serving their own clients. */
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

/* ================================ The workers ============================== */

/* The life of every worker, thread or process: one client after another,
 * forever. All workers block in accept() on the same listening socket, and
 * the kernel gives each new connection to one of them. The client lives on
 * the worker's own stack; the workers share only the listening socket, and
 * the kernel does the locking there: no lock in this file. */
static void serve_forever(int listen_fd)
{
    struct client c;
    for (;;)
        if (accept_client(listen_fd, &c) == 0)
            close_client(&c, serve_client(&c));
}

static void *worker_thread(void *listener)
{
    serve_forever((int)(intptr_t)listener);
    return NULL; /* never reached: a worker serves until the process ends */
}

/* Start the pool's threads. Detached: they never end (a signal ends the
 * process, and them with it), so nobody will pthread_join() them. */
static int start_worker_threads(int listen_fd)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, THREAD_STACK_SIZE);
    pthread_t thread;
    int err = 0;
    for (int i = 0; i < opt.workers && err == 0; i++)
        err = pthread_create(&thread, &attr, worker_thread, (void *)(intptr_t)listen_fd);
    pthread_attr_destroy(&attr);
    if (err != 0) /* pthread functions return the error, not errno */
        fprintf(stderr, "server: pthread_create: %s\n", strerror(err));
    return err == 0 ? 0 : -1;
}

/* With -f, the pool's processes by pid (0: none), for stop_pool. */
static pid_t worker_pids[MAX_WORKERS];

/* Block or unblock (how) SIGTERM and SIGINT: while the parent forks a worker
 * and notes its pid, a stop must wait, or stop_pool would miss that worker. */
static void hold_stop_signals(int how)
{
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    sigprocmask(how, &stops, NULL);
}

/* Fork one worker process into slot i; -1 if fork failed. The child's
 * copy of the listening descriptor points at the same socket as everyone
 * else's (fork copies descriptors, not sockets). A stop signal ends it by
 * its default action: a worker has nothing to clean up. */
static int start_worker_process(int i, int listen_fd)
{
    pid_t parent = getpid();
    hold_stop_signals(SIG_BLOCK);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        /* A parent killed by SIGKILL runs no handler: the kernel then sends us SIGTERM. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) /* it died before prctl() */
            _exit(0);
        hold_stop_signals(SIG_UNBLOCK);
        serve_forever(listen_fd);
    }
    if (pid < 0)
        perror("server: fork");
    worker_pids[i] = pid > 0 ? pid : 0;
    hold_stop_signals(SIG_UNBLOCK);
    return pid > 0 ? 0 : -1;
}

/* SIGTERM or SIGINT to the parent of worker processes: stop and reap every
 * worker, so that none outlives the server and none stays a zombie, then
 * exit 0 as every chapter does (setup.c); with sig 0, return. kill(),
 * waitpid() and _exit() may be called in a signal handler. */
static void stop_pool(int sig)
{
    for (int i = 0; i < opt.workers; i++)
        if (worker_pids[i] > 0) /* kill(0 or -1, ...) would signal far more */
            kill(worker_pids[i], SIGTERM);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    if (sig != 0)
        on_stop_signal(sig);
}

/* Start the pool's processes, the parent's stop handler first: from then
 * on, a stop takes every worker forked so far with it. */
static int start_worker_processes(int listen_fd)
{
    set_handler(SIGTERM, stop_pool, 0);
    set_handler(SIGINT, stop_pool, 0);
    for (int i = 0; i < opt.workers; i++)
        if (start_worker_process(i, listen_fd) < 0) {
            stop_pool(0);
            return -1;
        }
    return 0;
}

/* The parent serves nobody: it waits for a worker to end (it should not,
 * but a bug or a kill may end one), reaps it, and forks another in its
 * place, so the pool keeps its size. */
static void keep_pool_full(int listen_fd)
{
    for (;;) {
        pid_t gone = waitpid(-1, NULL, 0);
        if (gone < 0 && errno != EINTR)
            return; /* ECHILD: no worker left, not one could be forked again */
        for (int i = 0; i < opt.workers && gone > 0; i++)
            if (worker_pids[i] == gone)
                start_worker_process(i, listen_fd);
    }
}

/* ============================== Command line =============================== */

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port] [-m max-clients] [-t workers] [-f] [-q]\n");
    exit(2);
}

/* -m is accepted by every chapter. A pool has nothing to cap with it: it
 * never serves more than its N clients, and it cannot answer "error server
 * busy" to client N+1, since only a free worker would accept() it. */
static void parse_options(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:m:t:fq")) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = parse_number(optarg, 0, 65535); break;
        case 'm': parse_number(optarg, 1, MAX_CLIENTS_LIMIT); break; /* checked, unused */
        case 't': opt.workers = parse_number(optarg, 1, MAX_WORKERS); break;
        case 'f': opt.processes = 1; break;
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

    int started = opt.processes ? start_worker_processes(listen_fd) : start_worker_threads(listen_fd);
    if (started < 0)
        return 1;
    print_ready_line(listen_fd, opt.host); /* now that every worker runs */

    if (!opt.processes)
        for (;;)
            pause(); /* the workers serve; main waits for the signal that ends them all */
    keep_pool_full(listen_fd);
    return 1;
}
