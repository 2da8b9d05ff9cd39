/*
 * 09-epoll-workers/server.c: chapter 06's loop, and a pool of worker threads
 * for the slow work.
 *
 *     main thread (the loop), as in 06       worker threads (-w, default 4)
 *     epoll_wait -> ready sockets            wait for a job (a condition variable)
 *       "sleep <ms>" -> a job, queued  ----> take the oldest, sleep ms
 *       (that client is not read again   <-- put it on the done queue, and
 *        until its answer is out)             write to the eventfd
 *     epoll_wait -> the eventfd is readable
 *       -> answer every finished job, then the lines that waited behind it
 *
 * 06's one thread never blocked on a socket, but a slow handler ("sleep",
 * the course's stand-in for a database call) stalled every client. Here the
 * loop hands that work to a fixed pool of threads and goes on serving; a
 * worker does it and hands the result back through a queue, and an eventfd
 * that the loop watches like a socket wakes its epoll_wait. The loop itself
 * never blocks. libuv's thread pool (uv_queue_work), nginx's thread pools
 * and Netty's executors answer 06's weakness the same way.
 *
 * This file is the stage. What does not change from chapter to chapter
 * lives in files of its own, included below: setup.c (command line numbers,
 * the log, signals, the listening socket) and protocol.h/.c (what the server
 * answers), the same in chapters 01 to 09 but 07; overload.c (refusing,
 * shedding), the same in 02, 03, 06 and 09; and nonblocking_io.c (the output
 * queue, the backpressure rule, the lingering close), chapter 03's, unchanged.
 */
#define _GNU_SOURCE /* gettid(), accept4() */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHAPTER "09-epoll-workers"

/* Chapter N listens on 9N00, so all chapters can run side by side. Like
 * chapter 02 it can listen on up to three ports (-p given three times). */
#define DEFAULT_PORT 9900
#define MAX_PORTS 3

/* epoll has no FD_SETSIZE: ten thousand clients (the C10K problem) cost
 * about a hundred bytes of our memory each while idle (make c10k measures
 * it). The descriptor limit (ulimit -n) still applies; past it, clients are
 * refused (see shed_connection). */
#define DEFAULT_MAX_CLIENTS 10000

/* Descriptors that are not clients: stdin/out/err, epoll, three listeners,
 * the spare descriptor, and a few in passing. */
#define RESERVED_FDS 16

/* Ready events fetched per epoll_wait(); more wait for the next call. */
#define MAX_EVENTS 256

/* Edge-triggered: at most this many recv() per event before we move on to
 * the other ready clients, so that one fast sender cannot starve them. */
#define READ_BUDGET 16

/* Worker threads for slow work: libuv's default (UV_THREADPOOL_SIZE). W of
 * them do W sleeps at once; a sleep more waits in the queue for one. */
#define DEFAULT_WORKERS 4

/* The largest -w. Workers mostly wait, so a pool may have far more threads
 * than the machine has cores; this bounds the memory their stacks take. */
#define MAX_WORKERS 1024

/* Each worker's stack, as in chapter 04: the default 8 MiB of address space
 * is far more than sleeping needs, and the sanitizers want room. */
#define THREAD_STACK_SIZE (256 * 1024)

#include "setup.c"
#include "protocol.h"

/* protocol.c hands "sleep" to this chapter instead of sleeping (below). */
#define HAND_OFF_SLEEP
static enum next_step hand_off_sleep(struct client *c, long ms);

/* What the command line asked for (parse_options, at the end). */
static struct {
    const char *host;       /* an IPv4 address to bind */
    int ports[MAX_PORTS];   /* 0 asks the kernel for a free port */
    int nports;
    int max_clients;
    int edge_triggered;     /* -e: EPOLLET instead of level-triggered */
    int workers;            /* -w: threads in the pool */
} opt = {"127.0.0.1", {0}, 0, DEFAULT_MAX_CLIENTS, 0, DEFAULT_WORKERS};

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
    uint32_t events;            /* what epoll watches for it now */
    struct job *job;            /* its sleep, in the pool's hands; or NULL */
};

#include "protocol.c"
#include "overload.c"
#include "nonblocking_io.c"

/* ============================== The worker pool ============================ */

/* One "sleep <ms>" handed to the pool. A worker reads only ms; the loop
 * makes the job, answers it once it is done, and frees it. */
struct job {
    struct client *client; /* who asked; NULL once it has left (the loop's field) */
    long ms;
    struct job *next;      /* in a queue */
};

/* Jobs in the order they came: first in, first out. */
struct queue {
    struct job *first, *last;
};

static void push(struct queue *q, struct job *j)
{
    j->next = NULL;
    if (q->last != NULL)
        q->last->next = j;
    else
        q->first = j;
    q->last = j;
}

static struct job *pop(struct queue *q)
{
    struct job *j = q->first;
    if (j != NULL && (q->first = j->next) == NULL)
        q->last = NULL;
    return j;
}

/* All that the loop and the workers share: the jobs to do, the jobs done,
 * one lock for both queues, and a way for each side to wake the other. The
 * loop queues a job and signals work_queued; a worker takes it, sleeps,
 * queues it as done and writes to done_fd, an eventfd: a counter in the
 * kernel, readable while it is not zero, which epoll watches like a socket.
 * No client is ever touched by a worker. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t work_queued;
    struct queue todo, done;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {NULL, NULL}, {NULL, NULL}};
static int done_fd;

/* "sleep <ms>" (protocol.c): queue it for a worker instead of sleeping here.
 * The client is not read again until the answer is out (see reads_now), so
 * each client has one job at most and its replies keep the order of its
 * lines; the queue is as long as the clients in "sleep", at most. */
static enum next_step hand_off_sleep(struct client *c, long ms)
{
    struct job *j = malloc(sizeof *j);
    if (j == NULL) {
        perror("server: malloc");
        return CLOSE;
    }
    j->client = c;
    j->ms = ms;
    c->job = j;
    pthread_mutex_lock(&pool.lock);
    push(&pool.todo, j);
    pthread_mutex_unlock(&pool.lock);
    pthread_cond_signal(&pool.work_queued); /* wake one worker, if one waits */
    return LATER;
}

/* A worker: wait for a job, do it, hand it back, wake the loop. Adding 1 to
 * the eventfd makes it readable; the loop's read() sets it back to zero. */
static void *worker(void *unused)
{
    (void)unused;
    for (;;) {
        struct job *j;
        pthread_mutex_lock(&pool.lock);
        while ((j = pop(&pool.todo)) == NULL)
            pthread_cond_wait(&pool.work_queued, &pool.lock);
        pthread_mutex_unlock(&pool.lock);

        sleep_ms(j->ms); /* the slow work, off the loop's thread */

        pthread_mutex_lock(&pool.lock);
        push(&pool.done, j);
        pthread_mutex_unlock(&pool.lock);
        uint64_t one = 1;
        if (write(done_fd, &one, sizeof one) < 0)
            perror("server: write to the eventfd");
    }
    return NULL;
}

/* The eventfd, then the workers, before the listener opens: its ready line
 * means the pool is there. Signals are blocked in the workers (a thread
 * starts with its creator's mask), so they all reach the loop's thread.
 * Detached: a worker never ends (a signal ends the process, and them with
 * it), so nobody will pthread_join() it. */
static void start_pool(int workers)
{
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    int err = 0;
    done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (done_fd < 0) {
        perror("server: eventfd");
        exit(1);
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, THREAD_STACK_SIZE);
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < workers && err == 0; i++)
        err = pthread_create(&thread, &attr, worker, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0) { /* pthread functions return the error, not errno */
        fprintf(stderr, "server: pthread_create: %s\n", strerror(err));
        exit(1);
    }
}

/* ============================== The epoll loop ============================= */

/* Every connected client, found by its descriptor; NULL where none. Sized
 * at start by the descriptor limit (set_up_loop): no descriptor is above it. */
static struct client **clients;
static int clients_size;
static int client_count;
static int listeners[MAX_PORTS];
static int listener_count;
static int epoll_fd;

/* 03's rule for reading a client (wants_input), and one more: not while
 * its sleep is in the pool. Its next lines wait, read or not; answering
 * them now would put their replies before the sleep's. */
static int reads_now(const struct client *c)
{
    return wants_input(c) && c->job == NULL;
}

/* What epoll should watch for this client: 03's two rules (read while
 * reads_now(), write while replies are queued), plus the mode. */
static uint32_t wanted_events(const struct client *c)
{
    uint32_t events = opt.edge_triggered ? EPOLLET : 0;
    if (reads_now(c))
        events |= EPOLLIN;
    if (c->out_len > 0)
        events |= EPOLLOUT;
    return events;
}

/* Register the client with epoll: from now on the kernel watches its socket
 * and reports it when it is ready. */
static int add_client(struct client *c)
{
    c->events = wanted_events(c);
    struct epoll_event ev = {.events = c->events, .data.fd = c->fd};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        return -1;
    clients[c->fd] = c;
    client_count++;
    return 0;
}

/* close() also takes the descriptor out of epoll's interest list. A job
 * still in the pool outlives its client: it will find it gone. */
static void drop_client(struct client *c, const char *why)
{
    if (c->job != NULL)
        c->job->client = NULL;
    clients[c->fd] = NULL;
    client_count--;
    stop_lingering(c);
    close(c->fd);
    log_event("disconnect %s: %s", c->peer, why);
    free(c->in);
    free(c->out);
    free(c);
}

/* Tell epoll what the client waits for now, with epoll_ctl() only when that
 * changed: a client that reads its replies stays at EPOLLIN, with no
 * epoll_ctl() per message. REARM registers it again even so: in
 * edge-triggered mode that makes the kernel re-check the socket and report
 * bytes we left unread (see serve_ready_client). */
enum interest_change { IF_CHANGED, REARM };

static int update_interest(struct client *c, enum interest_change change)
{
    uint32_t want = wanted_events(c);
    if (want == c->events && change == IF_CHANGED)
        return 0;
    struct epoll_event ev = {.events = want, .data.fd = c->fd};
    c->events = want;
    return epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* After a read or a write: send what fits; let the client go if it must,
 * or else tell epoll what it waits for now. */
static void after_io(struct client *c, enum interest_change change)
{
    if (settle(c) == CLOSE)
        drop_client(c, c->leaving);
    else if (update_interest(c, change) < 0)
        drop_client(c, strerror(errno));
}

/* Lingering clients whose time is up: closed, even with bytes unread. */
static void close_expired_lingers(void)
{
    long long now = now_ms();
    while (lingering_first != NULL && lingering_first->linger_deadline <= now)
        drop_client(lingering_first, lingering_first->leaving);
}

/* A new connection: a client, greeted; or, past the cap or the table, or
 * without memory, refused. */
static void welcome(int fd, const struct sockaddr_in *peer)
{
    if (fd >= clients_size || client_count >= opt.max_clients) {
        refuse_connection(fd, "at the cap");
        return;
    }
    struct client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        refuse_connection(fd, "out of memory");
        return;
    }
    c->fd = fd;
    c->local_port = describe_connection(fd, peer, c->peer);
    if (add_client(c) < 0) {
        free(c);
        refuse_connection(fd, strerror(errno));
        return;
    }
    log_event("connect %s (fd %d)", c->peer, c->fd);
    send_greeting(c);
    after_io(c, IF_CHANGED); /* a new socket's buffer is empty: this short line fits */
}

/* The listener is ready: accept every waiting connection, until accept4()
 * says EAGAIN. Edge-triggered mode needs this (the next report comes only
 * with a new connection); level-triggered mode saves epoll_wait() calls.
 * accept4() sets O_NONBLOCK on the new socket in the same call; 03 needed a
 * separate fcntl() for it. */
static void on_listener_ready(int listen_fd)
{
    for (;;) {
        struct sockaddr_in peer;
        socklen_t peer_len = sizeof peer;
        int fd = accept4(listen_fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && after_accept_error(listen_fd))
            continue;
        if (fd < 0)
            return; /* the queue is empty (EAGAIN), or accepting is paused */
        welcome(fd, &peer);
    }
}

/* The client's socket is readable: read, queue an answer for every complete
 * line, then send what the socket takes. Level-triggered, one recv() is
 * enough: epoll_wait() reports the socket again while bytes remain.
 * Edge-triggered, the kernel reports only new arrivals, so read until EAGAIN
 * (at most READ_BUDGET times, so others get their turn). If we stopped with
 * bytes perhaps still unread, REARM has the kernel report it again. */
static void serve_ready_client(struct client *c)
{
    int budget = opt.edge_triggered ? READ_BUDGET : 1;
    int got = 1;
    while (budget-- > 0 && reads_now(c) && (got = read_some(c)) > 0)
        ;
    if (got < 0) {
        drop_client(c, c->leaving);
        return;
    }
    release_input(c);
    after_io(c, opt.edge_triggered && got > 0 ? REARM : IF_CHANGED);
}

/* One event: a ready client. EPOLLHUP and EPOLLERR come whether asked for or
 * not; the recv() or send() that follows reports what happened. A client we
 * do not read now (backpressure, or its end closed) is not read on a HUP
 * either: only what it waits for (c->events) is served. One waiting for its
 * job may wait for nothing: the connection is gone, and a level-triggered
 * HUP would be reported on every turn until the job is done. */
static void handle_event(struct client *c, uint32_t events)
{
    int fd = c->fd;
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && (c->events & EPOLLIN))
        serve_ready_client(c);
    else if (c->job != NULL && (events & (EPOLLHUP | EPOLLERR)))
        drop_client(c, "connection lost while its job ran");
    if (clients[fd] != NULL && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
        after_io(clients[fd], IF_CHANGED); /* (c may have left just above) */
}

/* The sleep is done: answer it, then the lines that waited behind it (one
 * may be a sleep again, handed off in turn), then send and read as usual. */
static void resume_client(struct client *c, long ms)
{
    c->job = NULL;
    if (reply_slept(c, ms) == CLOSE || (c->in_len > 0 && handle_input(c) == CLOSE))
        c->leaving = "closed by server";
    release_input(c);
    after_io(c, IF_CHANGED);
}

/* The eventfd is readable: workers have finished jobs. Read it (back to
 * zero) first, then take every finished job: one a worker adds after that
 * read leaves the eventfd readable, so none is missed. */
static void on_jobs_done(void)
{
    uint64_t count;
    struct job *j;
    if (read(done_fd, &count, sizeof count) < 0 && errno != EAGAIN)
        perror("server: read from the eventfd");
    pthread_mutex_lock(&pool.lock);
    struct queue done = pool.done;
    pool.done = (struct queue){NULL, NULL};
    pthread_mutex_unlock(&pool.lock);
    while ((j = pop(&done)) != NULL) {
        if (j->client != NULL)
            resume_client(j->client, j->ms);
        free(j);
    }
}

static int is_listener(int fd)
{
    for (int i = 0; i < listener_count; i++)
        if (listeners[i] == fd)
            return 1;
    return 0;
}

/* Accepting paused (overload.c): take the listeners out of epoll's interest
 * list, since a ready listener left there would wake every epoll_wait() at
 * once; put them back when the pause is over. */
static void watch_listeners(int on)
{
    static int watched = 1;
    if (on == watched)
        return;
    for (int i = 0; i < listener_count; i++) {
        struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.fd = listeners[i]};
        epoll_ctl(epoll_fd, EPOLL_CTL_MOD, listeners[i], &ev);
    }
    watched = on;
}

/* One turn per epoll_wait(): the kernel hands back only the descriptors that
 * are ready, and for each what is ready. The work of a turn grows with the
 * number of ready descriptors, not with the number of connections. */
static void serve_forever(void)
{
    static struct epoll_event events[MAX_EVENTS];
    for (;;) {
        watch_listeners(now_ms() >= accept_paused_until);
        int ready = epoll_wait(epoll_fd, events, MAX_EVENTS, ms_to_next_deadline());
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            perror("server: epoll_wait");
            exit(1);
        }
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == done_fd)
                on_jobs_done();
            else if (is_listener(fd))
                on_listener_ready(fd);
            else if (clients[fd] != NULL)
                handle_event(clients[fd], events[i].events);
        }
        close_expired_lingers();
    }
}

/* The listeners (non-blocking: accept4() must say EAGAIN, not wait, once
 * the queue is empty), the epoll instance with each listener and the pool's
 * eventfd registered, the client table, the spare descriptor. Exits on
 * failure: there is nothing to serve with. Listeners and the eventfd stay
 * level-triggered in both modes: on_listener_ready() empties the queue,
 * on_jobs_done() the counter, anyway. */
static void set_up_loop(const char *host, const int *ports, int nports)
{
    struct epoll_event done = {.events = EPOLLIN, .data.fd = done_fd};
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    long limit = sysconf(_SC_OPEN_MAX); /* ulimit -n */
    if (limit < 0 || limit > (long)opt.max_clients + RESERVED_FDS)
        limit = (long)opt.max_clients + RESERVED_FDS;
    clients_size = (int)limit;
    clients = calloc((size_t)clients_size, sizeof(struct client *));
    if (epoll_fd < 0 || clients == NULL || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, done_fd, &done) < 0) {
        perror("server: setting up epoll");
        exit(1);
    }
    for (listener_count = 0; listener_count < nports; listener_count++) {
        int fd = open_listener(host, ports[listener_count]);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (fd < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) < 0 ||
            epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
            exit(1);
        listeners[listener_count] = fd;
    }
    reserve_spare_fd();
}

/* ============================== Command line =============================== */

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port]... (up to 3) [-m max-clients] [-q] [-e] [-w workers]\n");
    exit(2);
}

static void parse_options(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:m:qew:")) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p':
            if (opt.nports == MAX_PORTS)
                usage();
            opt.ports[opt.nports++] = parse_number(optarg, 0, 65535);
            break;
        case 'm': opt.max_clients = parse_number(optarg, 1, MAX_CLIENTS_LIMIT); break;
        case 'q': quiet = 1; break;
        case 'e': opt.edge_triggered = 1; break;
        case 'w': opt.workers = parse_number(optarg, 1, MAX_WORKERS); break;
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
    start_pool(opt.workers);
    set_up_loop(opt.host, opt.ports, opt.nports);
    serve_forever();
}
