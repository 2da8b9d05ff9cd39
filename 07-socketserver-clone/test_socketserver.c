/*
 * 07-socketserver-clone/test_socketserver.c: what the wire protocol cannot
 * show, checked through the library itself, one named case each.
 *
 *     test_socketserver            run every case
 *     test_socketserver CASE...    run only these cases
 *
 * The cases are CPython's own Lib/test/test_socketserver.py scenarios, the
 * behaviours measured on CPython 3.11 that the lesson compares with, and
 * the places where this library does better than Python (an instant
 * shutdown, no deadlock when the loop shuts itself down). Each prints
 * "ok - CASE" or "not ok - CASE: why"; notes (measured figures) start with
 * "# "; the last line reads "N passed, N failed", like the suite's, and the
 * exit status is 1 if any case failed.
 *
 * Every case runs in a child process of its own: a crash, a leaked
 * descriptor, a signal handler or a raised descriptor limit stays with that
 * case, and alarm() ends a case that hangs, which then fails by name
 * (saying where it was stuck) instead of blocking the run.
 *
 * The file reads top to bottom: configuration, reporting, small tools
 * (clocks, clients, the serving thread, /proc), handlers, the cases, main.
 */
#define _GNU_SOURCE /* gettid(), pthread_timedjoin_np(), pthread_tryjoin_np() */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "socketserver.h"

/* ============================== Configuration ============================== */

/* A case that has not finished after this long is stuck: alarm() ends it.
 * The slowest case (max_children_held) takes 1.2 s here; the margin is for
 * sanitizers and valgrind, which run 2-50x slower. */
#define CASE_SECONDS 30

/* How long a client waits for a reply before calling it lost. Long enough
 * for a sanitizer build on a busy machine, short next to CASE_SECONDS. */
#define REPLY_SECONDS 5.0

/* A poll_interval that no test waits out: if a case that uses it finishes
 * quickly, the loop was woken, not timed out (Python sleeps it out). */
#define LONG_POLL 5.0

/* A poll_interval short enough that the forking mix-in's service_actions()
 * (which reaps children) runs many times within a case. */
#define SHORT_POLL 0.05

/* The echo handlers' line buffer: the protocol's longest line (4096
 * bytes), its '\n' and ss_readline()'s NUL. */
#define LINE_SIZE 4098

/* CPython's test_shutdown (bpo-2302) starts and stops this many servers. */
#define SHUTDOWN_RACE_SERVERS 20

/* The handler's "slow work" in the block_on_close and max_children cases,
 * in ms: long enough to measure against, short enough to keep cases quick. */
#define SLOW_MS 300

/* test_threads_reaped asks for 10 sequential requests; 50 make a leak of
 * one thread per request stand out from any noise. */
#define REAP_REQUESTS 50
/* Joined threads give their stacks back to glibc, which hands them to the
 * next threads: a few stacks serve all the requests. A thread never joined
 * keeps its stack, so each request would run on a new one. */
#define REAP_MAX_STACKS 10

/* test_tcpserver_bind_leak does 1024; 200 show a leak just as well. */
#define BIND_FAILURES 200

/* CPython's SocketWriterTest: socket.SOCK_MAX_SIZE, 16 MiB + 1 byte, more
 * than any socket buffer, so the write must block and be interrupted. */
#define BIG_WRITE (16 * 1024 * 1024 + 1)
/* The signals' pace while it writes: one every millisecond. */
#define SIGNAL_GAP_NS 1000000L
/* The client reads 64 KiB at a time and pauses 1 ms after this many reads
 * (each 256 KiB): the write then lasts over 64 ms, under 64+ signals. */
#define READS_PER_PAUSE 4
/* Fewer signals than this during the write would prove nothing. */
#define MIN_SIGNALS 20

/* UDPServer.max_packet_size is 8192; send more to see the cut. */
#define BIG_DATAGRAM 10000
#define MAX_PACKET 8192

/* select() cannot watch descriptors >= FD_SETSIZE (1024); poll() can.
 * The case opens descriptors until the server's land above this. */
#define HIGH_FD 1100

/* ================================ Reporting ================================ */

/* What a case tells the runner, in memory shared with it (MAP_SHARED), so
 * that even a case killed by alarm() leaves its last words behind. */
struct report {
    char why[512]; /* the first failure */
    char step[256]; /* what the case was doing: the place of a hang */
};
static struct report *report;

/* Record why the case fails (the first reason wins) and return -1. */
__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
    if (report->why[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(report->why, sizeof report->why, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Say what the case is about to do, so that a hang names its place. */
__attribute__((format(printf, 1, 2))) static void step(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(report->step, sizeof report->step, fmt, ap);
    va_end(ap);
}

/* A measured figure, printed as a TAP comment ("# ..."). */
__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputs("\n", stdout);
    va_end(ap);
    fflush(stdout);
}

/* ================================= Clocks ================================== */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Milliseconds left before a deadline, as poll() wants them. */
static int ms_left(double deadline)
{
    double left = deadline - now();
    return left > 0 ? (int)(left * 1000) + 1 : 0;
}

/* Sleep that long even if signals arrive in between. */
static void sleep_ms(long ms)
{
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ;
}

/* Poll flag every millisecond until it is set; false after `seconds`. */
static bool wait_flag(atomic_int *flag, double seconds)
{
    double deadline = now() + seconds;
    while (atomic_load(flag) == 0) {
        if (now() > deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

/* ================================ Clients ================================== */

/* A client of s, of s's own family and type, connected (a datagram socket
 * only knows where it sends). Returns the socket, or -1 after fail(). */
static int client_of(const struct ss_server *s)
{
    int fd = socket(s->address_family, s->socket_type, 0);
    if (fd < 0)
        return fail("client socket: %s", strerror(errno));
    if (connect(fd, (const struct sockaddr *)&s->server_address, s->server_address_len) < 0) {
        int err = errno;
        close(fd);
        return fail("client connect: %s", strerror(err));
    }
    return fd;
}

/* The port of a TCP or UDP server, as bound (after port 0). */
static int port_of(const struct ss_server *s)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)&s->server_address;
    return ntohs(in->sin_port);
}

/* The local port of a client socket: the port handle_error names. */
static int local_port(int fd)
{
    struct sockaddr_in in;
    socklen_t len = sizeof in;
    if (getsockname(fd, (struct sockaddr *)&in, &len) < 0)
        return -1;
    return ntohs(in.sin_port);
}

static int send_text(int fd, const char *text)
{
    size_t len = strlen(text);
    if (send(fd, text, len, MSG_NOSIGNAL) != (ssize_t)len)
        return fail("client send: %s", strerror(errno));
    return 0;
}

/* Send the client's last words and half-close: shutdown(SHUT_WR) sends our
 * FIN now. Every stream client here says all it has to say at once, and
 * must: the library's shutdown_request() is a lingering close, which
 * waits (up to 2 s) for the client's EOF before it closes. A plain close()
 * would not do, since a forked server child holds a copy of every socket
 * this process had when it forked, the client ends included, and the FIN
 * leaves only when the last copy is closed; shutdown() acts on the socket. */
static int send_last(int fd, const char *text)
{
    if (text[0] != '\0' && send_text(fd, text) < 0)
        return -1;
    if (shutdown(fd, SHUT_WR) < 0)
        return fail("client shutdown(SHUT_WR): %s", strerror(errno));
    return 0;
}

/* A client with nothing to say (its handler does not read): connected and
 * half-closed at once. Returns the socket, or -1 after fail(). */
static int silent_client(const struct ss_server *s)
{
    int fd = client_of(s);
    if (fd >= 0 && send_last(fd, "") < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Wait until fd has something to read (or EOF): 1, or 0 on time-out. */
static int readable_within(int fd, double seconds)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    double deadline = now() + seconds;
    int n;
    while ((n = poll(&p, 1, ms_left(deadline))) < 0 && errno == EINTR)
        ;
    return n > 0;
}

/* Read one line, '\n' included, into buf. Returns its length, or -1 after
 * fail() on time-out, error or EOF before the '\n'. One byte per recv():
 * slow, but nothing after the line is taken from the socket. */
static ssize_t read_line(int fd, char *buf, size_t size, double seconds)
{
    double deadline = now() + seconds;
    size_t len = 0;
    while (len + 1 < size) {
        if (!readable_within(fd, deadline - now()))
            return fail("no reply line within %.1f s (got %zu bytes)", seconds, len);
        ssize_t n = recv(fd, buf + len, 1, 0);
        if (n <= 0)
            return fail("connection %s before a whole line (got %zu bytes)",
                        n == 0 ? "closed" : strerror(errno), len);
        if (buf[len++] == '\n')
            break;
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Read until the server closes: the bytes that came first, or -1 after
 * fail() when EOF does not come in time. */
static long read_to_eof(int fd, double seconds)
{
    double deadline = now() + seconds;
    char buf[4096];
    long total = 0;
    for (;;) {
        if (!readable_within(fd, deadline - now()))
            return fail("the server did not close the connection within %.1f s", seconds);
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0)
            return total;
        if (n < 0)
            return errno == ECONNRESET ? total : fail("client recv: %s", strerror(errno));
        total += n;
    }
}

/* Send line, get it back, then see the server close the connection. */
static int echo_exchange(int fd, const char *line)
{
    char reply[LINE_SIZE];
    if (send_last(fd, line) < 0 || read_line(fd, reply, sizeof reply, REPLY_SECONDS) < 0)
        return -1;
    if (strcmp(reply, line) != 0)
        return fail("sent \"%.*s\", got back \"%s\"", (int)strlen(line) - 1, line, reply);
    return read_to_eof(fd, REPLY_SECONDS) < 0 ? -1 : 0;
}

/* CPython's stream_examine, one whole connection: connect, echo, close. */
static int echo_session(const struct ss_server *s, const char *line)
{
    int fd = client_of(s);
    if (fd < 0)
        return -1;
    int rc = echo_exchange(fd, line);
    close(fd);
    return rc;
}

/* The next datagram into buf: its length (0 for an empty one), or -1
 * after fail() if none comes in time. */
static ssize_t recv_datagram(int fd, char *buf, size_t size, double seconds)
{
    if (!readable_within(fd, seconds))
        return fail("no reply datagram within %.1f s", seconds);
    ssize_t n = recv(fd, buf, size, 0);
    if (n < 0)
        return fail("client recv: %s", strerror(errno));
    return n;
}

/* ================================ Servers ================================== */

/* A server on 127.0.0.1 and a free port (port 0), bound and listening. */
static int tcp_server(struct ss_server *s, const struct ss_mixin *mixin,
                      const struct ss_handler_class *handler)
{
    step("ss_server_init(%s, TCPServer)", mixin->name);
    if (ss_server_init(s, mixin, &ss_TCPServer, "127.0.0.1", 0, handler, true) != SS_OK)
        return fail("ss_server_init(%s, TCPServer): %s", mixin->name, strerror(errno));
    return 0;
}

/* serve_forever() in a thread of its own, as CPython's tests run it. */
struct loop {
    struct ss_server *s;
    double poll_interval;
    pthread_t thread;
    atomic_int tid;    /* the thread's kernel id, for /proc */
    int status;        /* what serve_forever() returned; read after the join */
};

static void *loop_main(void *arg)
{
    struct loop *l = arg;
    atomic_store(&l->tid, (int)gettid());
    l->status = ss_serve_forever(l->s, l->poll_interval);
    return NULL;
}

static int start_loop(struct loop *l, struct ss_server *s, double poll_interval)
{
    l->s = s;
    l->poll_interval = poll_interval;
    atomic_store(&l->tid, 0);
    int err = pthread_create(&l->thread, NULL, loop_main, l);
    if (err != 0)
        return fail("pthread_create: %s", strerror(err));
    return 0;
}

/* Join the loop's thread, or fail if serve_forever() has not returned
 * within `seconds` (the thread is then left running: the case is over). */
static int join_loop(struct loop *l, double seconds)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)seconds;
    deadline.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    step("joining the serve_forever() thread");
    int err = pthread_timedjoin_np(l->thread, NULL, &deadline);
    if (err == ETIMEDOUT)
        return fail("serve_forever() did not return within %.1f s", seconds);
    if (err != 0)
        return fail("pthread_timedjoin_np: %s", strerror(err));
    return 0;
}

/* shutdown() from this thread (not the loop's), then the join. */
static int stop_loop(struct loop *l)
{
    step("ss_shutdown() from another thread");
    int rc = ss_shutdown(l->s);
    if (rc != 0)
        return fail("ss_shutdown() from another thread returned %d, not 0", rc);
    return join_loop(l, REPLY_SECONDS);
}

/* ==================================== /proc ================================= */

/* How many descriptors this process has open. */
static int count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return fail("opendir /proc/self/fd: %s", strerror(errno));
    int n = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n - 1; /* opendir's own descriptor */
}

/* The scheduler state of one of our threads: 'R' running, 'S' asleep in
 * the kernel (a blocked poll(), say); '?' if it cannot be read. */
static char thread_state(int tid)
{
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return '?';
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *paren = strrchr(text, ')'); /* the name in (...) may hold spaces */
    if (paren == NULL || paren[1] != ' ')
        return '?';
    return paren[2];
}

/* Wait until the loop's thread sleeps in the kernel. Once it has served
 * a request and sleeps, it is back in poll(): the state a shutdown must
 * wake it from. */
static int wait_loop_asleep(struct loop *l)
{
    double deadline = now() + REPLY_SECONDS;
    while (atomic_load(&l->tid) == 0 || thread_state(atomic_load(&l->tid)) != 'S') {
        if (now() > deadline)
            return fail("the serve_forever() thread never went to sleep in poll()");
        sleep_ms(1);
    }
    return 0;
}

/* This process's children (zombies included), from each process's parent
 * in /proc/PID/stat. Returns how many, at most max in pids. */
static int list_children(pid_t *pids, int max)
{
    DIR *dir = opendir("/proc");
    if (dir == NULL) {
        fail("opendir /proc: %s", strerror(errno));
        return -1; /* spelled out: clang's analyzer does not follow a call into a variadic function */
    }
    int n = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        char path[sizeof e->d_name + 16], text[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue; /* it ended while we looked */
        size_t len = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[len] = '\0';
        char *paren = strrchr(text, ')'), state;
        int ppid;
        if (paren != NULL && sscanf(paren + 1, " %c %d", &state, &ppid) == 2 &&
            ppid == getpid() && n < max)
            pids[n++] = atoi(e->d_name);
    }
    closedir(dir);
    return n;
}

/* How many threads this process has, from /proc/self/status. */
static int count_threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int threads = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "Threads: %d", &threads) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return threads;
}

/* ============================ Capturing stderr ============================= */

/* handle_error() writes to descriptor 2; a case that checks what it wrote
 * points descriptor 2 at a temporary file for a while. */
struct capture {
    int saved; /* the real stderr */
    int file;  /* where descriptor 2 writes meanwhile */
};

static int capture_stderr(struct capture *c)
{
    char path[] = "/tmp/test_socketserver.XXXXXX";
    *c = (struct capture){.saved = -1, .file = -1}; /* nothing open yet */
    fflush(stderr);
    c->file = mkstemp(path);
    if (c->file < 0)
        return fail("mkstemp: %s", strerror(errno));
    unlink(path);
    c->saved = dup(STDERR_FILENO);
    if (c->saved < 0 || dup2(c->file, STDERR_FILENO) < 0)
        return fail("dup2 stderr: %s", strerror(errno));
    return 0;
}

/* Put stderr back; return what was written meanwhile (malloc'd), or NULL
 * after fail(). */
static char *end_capture(struct capture *c)
{
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    off_t size = lseek(c->file, 0, SEEK_END);
    char *text = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (text == NULL || pread(c->file, text, (size_t)size, 0) != size) {
        free(text);
        close(c->file);
        fail("reading the captured stderr: %s", strerror(errno));
        return NULL;
    }
    text[size] = '\0';
    close(c->file);
    return text;
}

/* ================================= Handlers ================================ */

/* CPython's test harness handler: read a line, write it back. */
static int echo_handle(struct ss_handler *h)
{
    char line[LINE_SIZE];
    ssize_t n = ss_readline(h->rfile, line, sizeof line);
    if (n < 0)
        return ss_fail(h->request, "echo: readline");
    if (n > 0 && fwrite(line, 1, (size_t)n, h->wfile) != (size_t)n)
        return ss_fail(h->request, "echo: write");
    return SS_OK;
}

static const struct ss_handler_class EchoHandler = {
    .name = "EchoHandler", .base = &ss_StreamRequestHandler, .handle = echo_handle};

/* The same over datagrams: the packet through rfile, the reply to wfile. */
static int datagram_echo_handle(struct ss_handler *h)
{
    char buf[MAX_PACKET * 2];
    size_t n = fread(buf, 1, sizeof buf, h->rfile);
    if (ferror(h->rfile))
        return ss_fail(h->request, "echo: read");
    if (fwrite(buf, 1, n, h->wfile) != n)
        return ss_fail(h->request, "echo: write");
    return SS_OK;
}

static const struct ss_handler_class DatagramEchoHandler = {
    .name = "DatagramEchoHandler", .base = &ss_DatagramRequestHandler,
    .handle = datagram_echo_handle};

/* A slow handler: it says it started, works SLOW_MS, answers "done". */
static atomic_int slow_started, slow_finished;
static double slow_started_at;

static int slow_handle(struct ss_handler *h)
{
    slow_started_at = now(); /* written before the flag, read after it */
    atomic_store(&slow_started, 1);
    sleep_ms(SLOW_MS);
    int ok = fputs("done\n", h->wfile) >= 0 && fflush(h->wfile) == 0;
    atomic_store(&slow_finished, 1);
    return ok ? SS_OK : ss_fail(h->request, "slow: write");
}

static const struct ss_handler_class SlowHandler = {
    .name = "SlowHandler", .base = &ss_StreamRequestHandler, .handle = slow_handle};

/* ============ Cases: serve_forever() and shutdown() (bpo-2302) ============ */

/* CPython's test_shutdown: 20 servers, each loop started in a thread and
 * shut down right away, often before the loop has even begun. The poll
 * interval is long, so a lost wake-up would show as a 5 s stall. */
static int case_shutdown_race(void)
{
    static struct ss_server servers[SHUTDOWN_RACE_SERVERS];
    static struct loop loops[SHUTDOWN_RACE_SERVERS];
    for (int i = 0; i < SHUTDOWN_RACE_SERVERS; i++)
        if (tcp_server(&servers[i], &ss_SyncMixIn, &EchoHandler) < 0)
            return -1;
    double worst = 0;
    for (int i = 0; i < SHUTDOWN_RACE_SERVERS; i++) {
        if (start_loop(&loops[i], &servers[i], LONG_POLL) < 0)
            return -1;
        step("server %d: ss_shutdown() right after starting its loop", i);
        double t0 = now();
        int rc = ss_shutdown(&servers[i]);
        double took = now() - t0;
        worst = took > worst ? took : worst;
        if (rc != 0)
            return fail("server %d: ss_shutdown() returned %d", i, rc);
        if (took > 1.0)
            return fail("server %d: ss_shutdown() took %.2f s", i, took);
    }
    for (int i = 0; i < SHUTDOWN_RACE_SERVERS; i++) {
        if (join_loop(&loops[i], REPLY_SECONDS) < 0)
            return -1;
        if (loops[i].status != SS_OK)
            return fail("server %d: serve_forever() returned %d", i, loops[i].status);
        ss_server_close(&servers[i]);
    }
    note("%d servers shut down right after starting; slowest shutdown %.1f ms",
         SHUTDOWN_RACE_SERVERS, worst * 1e3);
    return 0;
}

/* A stop requested before the loop starts makes it return at once; the
 * request is then used up, so the next serve_forever() serves (Python's
 * flag is reset only when the loop ends). */
static int case_shutdown_before_serve(void)
{
    struct ss_server s;
    struct loop l;
    if (tcp_server(&s, &ss_SyncMixIn, &EchoHandler) < 0)
        return -1;
    ss_request_shutdown(&s);
    step("ss_serve_forever() after the stop was requested");
    double t0 = now();
    int rc = ss_serve_forever(&s, LONG_POLL);
    double took = now() - t0;
    if (rc != SS_OK)
        return fail("serve_forever() returned %d, not SS_OK", rc);
    if (took > 0.1)
        return fail("serve_forever() took %.2f s to notice the stop requested before it", took);
    if (start_loop(&l, &s, LONG_POLL) < 0)
        return -1;
    sleep_ms(100); /* time for a wrongly stale stop to end the loop again */
    if (pthread_tryjoin_np(l.thread, NULL) == 0)
        return fail("the next serve_forever() returned at once: the old stop stayed set");
    if (echo_session(&s, "still serving\n") < 0)
        return -1;
    if (stop_loop(&l) < 0)
        return -1;
    ss_server_close(&s);
    note("serve_forever() returned %.1f ms after starting with a stop pending", took * 1e3);
    return 0;
}

/* Python deadlocks when the serving thread calls shutdown() (a sync
 * handler, or a signal handler on the main thread). Here it returns
 * EDEADLK, the stop still requested, and the loop ends after the request. */
static atomic_int loop_shutdown_rc = -1;

static int shutdown_handle(struct ss_handler *h)
{
    atomic_store(&loop_shutdown_rc, ss_shutdown(h->server));
    return fputs("done\n", h->wfile) >= 0 ? SS_OK : ss_fail(h->request, "write");
}

static const struct ss_handler_class ShutdownHandler = {
    .name = "ShutdownHandler", .base = &ss_StreamRequestHandler, .handle = shutdown_handle};

static int case_shutdown_from_loop_thread(void)
{
    struct ss_server s;
    struct loop l;
    char reply[LINE_SIZE];
    if (tcp_server(&s, &ss_SyncMixIn, &ShutdownHandler) < 0 || start_loop(&l, &s, LONG_POLL) < 0)
        return -1;
    int fd = silent_client(&s);
    step("waiting for the handler that calls ss_shutdown()");
    if (fd < 0 || read_line(fd, reply, sizeof reply, REPLY_SECONDS) < 0)
        return -1;
    close(fd);
    if (join_loop(&l, 2.0) < 0)
        return -1;
    int rc = atomic_load(&loop_shutdown_rc);
    if (rc != EDEADLK)
        return fail("ss_shutdown() from the loop's own thread returned %d, not EDEADLK (%d)", rc,
                    EDEADLK);
    if (l.status != SS_OK)
        return fail("serve_forever() returned %d, not SS_OK", l.status);
    ss_server_close(&s);
    return 0;
}

/* CPython notices a shutdown only when poll() times out: up to
 * poll_interval later (0.4 s measured with the default 0.5 s). Here
 * shutdown() wakes the loop through the self-pipe. */
static int case_shutdown_latency(void)
{
    struct ss_server s;
    struct loop l;
    enum { ROUNDS = 5 }; /* a few rounds, to report the worst */
    double worst = 0, total = 0;
    if (tcp_server(&s, &ss_ThreadingMixIn, &EchoHandler) < 0)
        return -1;
    for (int round = 0; round < ROUNDS; round++) {
        if (start_loop(&l, &s, LONG_POLL) < 0)
            return -1;
        if (round == 0) { /* serve once: the loop is really running */
            if (echo_session(&s, "ping\n") < 0)
                return -1;
        }
        if (wait_loop_asleep(&l) < 0)
            return -1;
        double t0 = now();
        if (stop_loop(&l) < 0)
            return -1;
        double took = now() - t0;
        total += took;
        worst = took > worst ? took : worst;
    }
    ss_server_close(&s);
    note("shutdown latency with poll_interval %.0f s: mean %.2f ms, worst %.2f ms (%d rounds)",
         LONG_POLL, total / ROUNDS * 1e3, worst * 1e3, ROUNDS);
    if (worst >= 0.1)
        return fail("shutdown took %.0f ms with poll_interval %.0f s (want < 100 ms)",
                    worst * 1e3, LONG_POLL);
    return 0;
}

/* ========================== Cases: handle_request() ======================== */

static atomic_int timeouts;
static double timeout_at;

static void count_timeout(struct ss_server *s)
{
    (void)s;
    timeout_at = now();
    atomic_fetch_add(&timeouts, 1);
}

/* handle_request() with timeout = 0.2 s and no client: handle_timeout()
 * after 0.2 s, as CPython does. */
static int case_handle_request_timeout(void)
{
    struct ss_server s;
    if (tcp_server(&s, &ss_SyncMixIn, &EchoHandler) < 0)
        return -1;
    s.timeout = 0.2;
    s.ops.handle_timeout = count_timeout;
    step("ss_handle_request() with no client");
    double t0 = now();
    int rc = ss_handle_request(&s);
    double took = now() - t0;
    ss_server_close(&s);
    if (rc != SS_OK)
        return fail("handle_request() returned %d, not SS_OK", rc);
    if (atomic_load(&timeouts) != 1)
        return fail("handle_timeout() called %d times, not once", atomic_load(&timeouts));
    double when = timeout_at - t0;
    note("handle_timeout() called %.3f s after handle_request() began (timeout 0.2 s)", when);
    if (when < 0.19 || took > 0.7)
        return fail("handle_timeout() after %.3f s, handle_request() returned after %.3f s "
                    "(timeout 0.2 s)", when, took);
    return 0;
}

/* With a client waiting, handle_request() serves it and does not time out. */
static int case_handle_request_served(void)
{
    struct ss_server s;
    char reply[LINE_SIZE];
    if (tcp_server(&s, &ss_SyncMixIn, &EchoHandler) < 0)
        return -1;
    s.timeout = 0.2;
    s.ops.handle_timeout = count_timeout;
    int fd = client_of(&s);
    if (fd < 0 || send_last(fd, "served\n") < 0)
        return -1;
    step("ss_handle_request() with a client waiting");
    int rc = ss_handle_request(&s);
    if (rc != SS_OK)
        return fail("handle_request() returned %d, not SS_OK", rc);
    if (atomic_load(&timeouts) != 0)
        return fail("handle_timeout() was called although a client was served");
    if (read_line(fd, reply, sizeof reply, REPLY_SECONDS) < 0)
        return -1;
    if (strcmp(reply, "served\n") != 0)
        return fail("the client got \"%s\", not its echo", reply);
    close(fd);
    ss_server_close(&s);
    return 0;
}

/* ==================== Cases: errors in handlers ======================== */

/* The first request fails (EIO, as an I/O error would); the rest echo. */
static atomic_int requests_seen;

static int fail_first_handle(struct ss_handler *h)
{
    if (atomic_fetch_add(&requests_seen, 1) == 0) {
        errno = EIO;
        return ss_fail(h->request, "handle: test failure");
    }
    return echo_handle(h);
}

static const struct ss_handler_class FailFirstHandler = {
    .name = "FailFirstHandler", .base = &ss_StreamRequestHandler, .handle = fail_first_handle};

/* Python's frame around the failure, on stderr; then the server serves on. */
static int check_frame(const char *text, int port)
{
    static const char dashes[] = "----------------------------------------\n"; /* 40 */
    char head[256];
    snprintf(head, sizeof head,
             "%sException occurred during processing of request from ('127.0.0.1', %d)\n",
             dashes, port);
    const char *start = strstr(text, head);
    if (start == NULL)
        return fail("stderr lacks Python's frame head for port %d; it reads: \"%s\"", port, text);
    const char *reason = strstr(start, strerror(EIO));
    if (reason == NULL)
        return fail("the frame does not give the failure (\"%s\"): \"%s\"", strerror(EIO), start);
    if (strstr(reason, dashes) == NULL)
        return fail("the frame is not closed by 40 dashes: \"%s\"", start);
    return 0;
}

/* Serve a failing request, then a good one, stderr captured meanwhile.
 * Returns what stderr got (malloc'd), or NULL after fail(). */
static char *fail_then_serve(struct ss_server *s, int *port)
{
    struct loop l;
    struct capture cap;
    if (capture_stderr(&cap) < 0)
        return NULL;
    int ok = start_loop(&l, s, LONG_POLL) == 0;
    int first = ok ? client_of(s) : -1;
    *port = first < 0 ? -1 : local_port(first);
    step("the failing request");
    ok = ok && first >= 0 && send_last(first, "one\n") == 0 &&
         read_to_eof(first, REPLY_SECONDS) >= 0;
    close(first);
    step("the request after the failure");
    ok = ok && echo_session(s, "two\n") == 0;
    ok = stop_loop(&l) == 0 && ok;
    char *text = end_capture(&cap);
    if (!ok) {
        free(text);
        return NULL;
    }
    return text;
}

static int case_handle_error_frame(void)
{
    struct ss_server s;
    int port;
    if (tcp_server(&s, &ss_SyncMixIn, &FailFirstHandler) < 0)
        return -1;
    char *text = fail_then_serve(&s, &port);
    ss_server_close(&s);
    if (text == NULL)
        return -1;
    int rc = check_frame(text, port);
    free(text);
    return rc;
}

/* setup -> handle -> finish, finish even when handle fails, nothing after
 * a failed setup: request 1 succeeds, 2 fails in handle, 3 in setup. */
static char lifecycle_log[256];

static void log_word(const char *word)
{
    strncat(lifecycle_log, word, sizeof lifecycle_log - strlen(lifecycle_log) - 1);
}

static int lifecycle_setup(struct ss_handler *h)
{
    log_word("setup ");
    if (atomic_fetch_add(&requests_seen, 1) == 2) {
        errno = EPERM;
        return ss_fail(h->request, "setup: test failure");
    }
    return SS_OK;
}

static int lifecycle_handle(struct ss_handler *h)
{
    log_word("handle ");
    if (atomic_load(&requests_seen) == 2) {
        errno = EIO;
        return ss_fail(h->request, "handle: test failure");
    }
    return SS_OK;
}

static int lifecycle_finish(struct ss_handler *h)
{
    (void)h;
    log_word("finish ");
    return SS_OK;
}

static void lifecycle_error(struct ss_server *s, struct ss_request *r)
{
    (void)s;
    (void)r;
    log_word("error ");
}

static const struct ss_handler_class LifecycleHandler = {
    .name = "LifecycleHandler", .base = &ss_BaseRequestHandler, .setup = lifecycle_setup,
    .handle = lifecycle_handle, .finish = lifecycle_finish};

static int case_handler_lifecycle(void)
{
    static const char want[] = "setup handle finish / setup handle finish error / setup error / ";
    struct ss_server s;
    int fds[3];
    if (tcp_server(&s, &ss_SyncMixIn, &LifecycleHandler) < 0)
        return -1;
    s.ops.handle_error = lifecycle_error;
    for (int i = 0; i < 3; i++) {
        if ((fds[i] = silent_client(&s)) < 0)
            return -1;
        step("ss_handle_request() for request %d", i + 1);
        ss_handle_request(&s);
        log_word("/ ");
        close(fds[i]);
    }
    ss_server_close(&s);
    if (strcmp(lifecycle_log, want) != 0)
        return fail("calls were \"%s\", want \"%s\"", lifecycle_log, want);
    return 0;
}

/* A SystemExit in a sync handler (SS_EXIT) is not an error to report: it
 * ends handle_request() and serve_forever() with it, after the request is
 * shut down (the client sees EOF). */
static atomic_int handler_calls, errors_handled;

static int exit_handle(struct ss_handler *h)
{
    (void)h;
    atomic_fetch_add(&handler_calls, 1);
    return SS_EXIT;
}

static const struct ss_handler_class ExitHandler = {
    .name = "ExitHandler", .base = &ss_StreamRequestHandler, .handle = exit_handle};

static void count_error(struct ss_server *s, struct ss_request *r)
{
    (void)s;
    (void)r;
    atomic_fetch_add(&errors_handled, 1);
}

static int case_sync_exit_propagates(void)
{
    struct ss_server s;
    struct loop l;
    if (tcp_server(&s, &ss_SyncMixIn, &ExitHandler) < 0)
        return -1;
    s.ops.handle_error = count_error;
    int fd = silent_client(&s);
    if (fd < 0)
        return -1;
    step("ss_handle_request() with a handler that returns SS_EXIT");
    int rc = ss_handle_request(&s);
    if (rc != SS_EXIT)
        return fail("handle_request() returned %d, not SS_EXIT (%d)", rc, SS_EXIT);
    if (read_to_eof(fd, REPLY_SECONDS) < 0)
        return -1;
    close(fd);
    if (start_loop(&l, &s, LONG_POLL) < 0 || (fd = silent_client(&s)) < 0 ||
        join_loop(&l, 2.0) < 0)
        return fail("serve_forever() did not end with the SS_EXIT request");
    close(fd);
    if (l.status != SS_EXIT)
        return fail("serve_forever() returned %d, not SS_EXIT (%d)", l.status, SS_EXIT);
    if (atomic_load(&handler_calls) != 2 || atomic_load(&errors_handled) != 0)
        return fail("handler called %d times (want 2), handle_error %d times (want 0)",
                    atomic_load(&handler_calls), atomic_load(&errors_handled));
    ss_server_close(&s);
    return 0;
}

/* bpo-26309: a request that verify_request() refuses is shut down, once. */
static atomic_int shutdowns;
static void (*base_shutdown_request)(struct ss_server *, struct ss_request *);

static bool refuse(struct ss_server *s, struct ss_request *r)
{
    (void)s;
    (void)r;
    return false;
}

static void count_shutdown(struct ss_server *s, struct ss_request *r)
{
    atomic_fetch_add(&shutdowns, 1);
    base_shutdown_request(s, r); /* super().shutdown_request(request) */
}

static int refused_once(const struct ss_mixin *mixin)
{
    struct ss_server s;
    if (tcp_server(&s, mixin, &ExitHandler) < 0)
        return -1;
    s.ops.verify_request = refuse;
    base_shutdown_request = s.ops.shutdown_request;
    s.ops.shutdown_request = count_shutdown;
    atomic_store(&shutdowns, 0);
    int fd = silent_client(&s);
    step("%s: ss_handle_request() refusing a client", mixin->name);
    if (fd < 0)
        return -1;
    ss_handle_request(&s);
    if (read_to_eof(fd, REPLY_SECONDS) < 0)
        return fail("%s: the refused client was not disconnected", mixin->name);
    close(fd);
    ss_server_close(&s);
    if (atomic_load(&shutdowns) != 1)
        return fail("%s: shutdown_request() called %d times for the refused request, not once",
                    mixin->name, atomic_load(&shutdowns));
    if (atomic_load(&handler_calls) != 0)
        return fail("%s: the handler ran for a refused request", mixin->name);
    return 0;
}

static int case_verify_request_refused(void)
{
    const struct ss_mixin *mixins[] = {&ss_SyncMixIn, &ss_ThreadingMixIn, &ss_ForkingMixIn};
    for (size_t i = 0; i < sizeof mixins / sizeof mixins[0]; i++)
        if (refused_once(mixins[i]) < 0)
            return -1;
    return 0;
}

/* ========================= Cases: ThreadingMixIn ========================= */

/* Start a threading server whose handler is slow, let one client in and
 * wait until its handler runs; then stop the loop. */
static int slow_request_in_flight(struct ss_server *s, int *fd)
{
    struct loop l;
    if (tcp_server(s, &ss_ThreadingMixIn, &SlowHandler) < 0 || start_loop(&l, s, LONG_POLL) < 0)
        return -1;
    if ((*fd = silent_client(s)) < 0)
        return -1;
    step("waiting for the slow handler to start");
    if (!wait_flag(&slow_started, REPLY_SECONDS))
        return fail("the handler never started");
    return stop_loop(&l);
}

/* block_on_close (the default): server_close() joins the request's thread,
 * so the request finishes before the program goes on. */
static int case_block_on_close_joins(void)
{
    struct ss_server s;
    int fd;
    char reply[LINE_SIZE];
    if (slow_request_in_flight(&s, &fd) < 0)
        return -1;
    step("ss_server_close() with a request in flight");
    double t0 = now();
    ss_server_close(&s);
    double took = now() - t0, since_start = now() - slow_started_at;
    note("server_close() waited %.3f s for a %d ms request in flight", took, SLOW_MS);
    if (!atomic_load(&slow_finished))
        return fail("server_close() returned after %.3f s, before the request's thread ended",
                    took);
    if (since_start < (SLOW_MS - 10) / 1000.0)
        return fail("server_close() returned %.3f s after a %d ms request started", since_start,
                    SLOW_MS);
    if (read_line(fd, reply, sizeof reply, REPLY_SECONDS) < 0)
        return -1;
    close(fd);
    return 0;
}

/* daemon_threads: server_close() does not wait for the thread. */
static int case_daemon_threads_no_join(void)
{
    static struct ss_server s; /* its thread may outlive server_close() */
    struct loop l;
    int fd;
    char reply[LINE_SIZE];
    if (tcp_server(&s, &ss_ThreadingMixIn, &SlowHandler) < 0)
        return -1;
    s.daemon_threads = true;
    if (start_loop(&l, &s, LONG_POLL) < 0 || (fd = silent_client(&s)) < 0)
        return -1;
    if (!wait_flag(&slow_started, REPLY_SECONDS))
        return fail("the handler never started");
    if (stop_loop(&l) < 0)
        return -1;
    step("ss_server_close() with a daemon thread in flight");
    double t0 = now();
    ss_server_close(&s);
    double took = now() - t0;
    bool finished = atomic_load(&slow_finished);
    note("server_close() with daemon_threads returned after %.1f ms", took * 1e3);
    /* Let the thread end before this process does, so that no sanitizer
     * sees a thread cut off in the middle of its request. */
    step("waiting for the daemon thread to finish");
    if (read_line(fd, reply, sizeof reply, REPLY_SECONDS) < 0 || read_to_eof(fd, REPLY_SECONDS) < 0)
        return -1;
    close(fd);
    double deadline = now() + REPLY_SECONDS;
    while (count_threads() > 1 && now() < deadline)
        sleep_ms(1);
    if (finished || took > 0.1)
        return fail("server_close() waited %.3f s for a daemon thread", took);
    return 0;
}

/* bpo-37193: the threads of finished requests are joined as new ones
 * start, not kept until server_close(). In C a thread never joined keeps
 * its stack for good, so glibc cannot hand it to the next thread: count
 * the distinct stacks the handlers ran on. (Counting mappings in
 * /proc/self/maps would do too, but ThreadSanitizer maps memory of its
 * own for every thread.) */
static void *stacks_seen[REAP_REQUESTS + 1];
static int n_stacks;
static pthread_mutex_t stacks_lock = PTHREAD_MUTEX_INITIALIZER;

/* Where this thread's stack starts, or NULL. */
static void *my_stack(void)
{
    pthread_attr_t attr;
    void *stack = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) != 0)
        return NULL;
    if (pthread_attr_getstack(&attr, &stack, &size) != 0)
        stack = NULL;
    pthread_attr_destroy(&attr);
    return stack;
}

static int stack_handle(struct ss_handler *h)
{
    void *stack = my_stack();
    pthread_mutex_lock(&stacks_lock);
    int i = 0;
    while (i < n_stacks && stacks_seen[i] != stack)
        i++;
    if (i == n_stacks && n_stacks <= REAP_REQUESTS)
        stacks_seen[n_stacks++] = stack;
    pthread_mutex_unlock(&stacks_lock);
    return echo_handle(h);
}

static const struct ss_handler_class StackHandler = {
    .name = "StackHandler", .base = &ss_StreamRequestHandler, .handle = stack_handle};

static int case_threads_reaped(void)
{
    struct ss_server s;
    struct loop l;
    if (tcp_server(&s, &ss_ThreadingMixIn, &StackHandler) < 0 || start_loop(&l, &s, LONG_POLL) < 0)
        return -1;
    for (int i = 0; i < REAP_REQUESTS; i++) {
        step("request %d of %d", i + 1, REAP_REQUESTS);
        if (echo_session(&s, "reap me\n") < 0)
            return -1;
    }
    if (stop_loop(&l) < 0)
        return -1;
    ss_server_close(&s);
    pthread_mutex_lock(&stacks_lock);
    int stacks = n_stacks;
    pthread_mutex_unlock(&stacks_lock);
    note("%d sequential requests ran on %d distinct thread stacks", REAP_REQUESTS, stacks);
    if (stacks > REAP_MAX_STACKS)
        return fail("%d sequential requests ran on %d distinct stacks: finished threads are "
                    "not joined until server_close()", REAP_REQUESTS, stacks);
    return 0;
}

/* ========================== Cases: ForkingMixIn ========================== */

/* Wait until this process's only child left is `keep` (or, with keep 0,
 * none is left): the server reaped the rest. At most `seconds`. */
static int wait_children_reaped(pid_t keep, double seconds)
{
    pid_t pids[256];
    double deadline = now() + seconds;
    for (;;) {
        int n = list_children(pids, 256), kept = 0;
        if (n < 0)
            return -1; /* list_children() said why */
        for (int i = 0; i < n; i++)
            kept += keep != 0 && pids[i] == keep;
        if (keep != 0 && kept == 0)
            return fail("the server reaped a child it did not make (pid %d)", (int)keep);
        if (n == kept)
            return 0;
        if (now() > deadline)
            return fail("%d children still not reaped after %.1f s", n - kept, seconds);
        sleep_ms(5);
    }
}

/* Children are reaped by service_actions() every poll_interval (the fix
 * of bpo-11109): no zombie stays, without a SIGCHLD handler. */
static int case_forking_reaped(void)
{
    struct ss_server s;
    struct loop l;
    if (tcp_server(&s, &ss_ForkingMixIn, &EchoHandler) < 0 || start_loop(&l, &s, SHORT_POLL) < 0)
        return -1;
    for (int i = 0; i < 5; i++) {
        step("request %d", i);
        if (echo_session(&s, "fork me\n") < 0)
            return -1;
    }
    step("waiting for the server to reap its children");
    if (wait_children_reaped(0, 20 * SHORT_POLL) < 0 || stop_loop(&l) < 0)
        return -1;
    ss_server_close(&s);
    return 0;
}

/* Three clients, each needing SLOW_MS, at once; how long until all three
 * have their answer. */
static double three_slow_clients(struct ss_server *s)
{
    int fds[3];
    char reply[LINE_SIZE];
    double t0 = now();
    for (int i = 0; i < 3; i++)
        if ((fds[i] = silent_client(s)) < 0)
            return -1;
    for (int i = 0; i < 3; i++) {
        step("client %d of 3 waits for its slow answer", i + 1);
        if (read_line(fds[i], reply, sizeof reply, REPLY_SECONDS) < 0)
            return -1;
        close(fds[i]);
    }
    return now() - t0;
}

/* At max_children the loop waits in waitpid() (it does not refuse), so
 * with max_children = 1 three slow clients are served one after another;
 * with the default 40, together. */
static int case_max_children_held(void)
{
    struct ss_server s;
    struct loop l;
    double took[2];
    int limits[2] = {1, SS_MAX_CHILDREN};
    for (int i = 0; i < 2; i++) {
        if (tcp_server(&s, &ss_ForkingMixIn, &SlowHandler) < 0)
            return -1;
        if (s.max_children != SS_MAX_CHILDREN)
            return fail("max_children starts at %d, not Python's %d", s.max_children,
                        SS_MAX_CHILDREN);
        s.max_children = limits[i];
        if (start_loop(&l, &s, SHORT_POLL) < 0 || (took[i] = three_slow_clients(&s)) < 0 ||
            stop_loop(&l) < 0)
            return -1;
        ss_server_close(&s);
    }
    note("3 clients x %d ms: %.3f s with max_children 1, %.3f s with %d", SLOW_MS, took[0],
         took[1], SS_MAX_CHILDREN);
    if (took[0] < 0.8)
        return fail("max_children 1 served 3 x %d ms in %.3f s: not one at a time", SLOW_MS,
                    took[0]);
    if (took[1] > 0.75)
        return fail("max_children %d served 3 x %d ms in %.3f s: not at once", SS_MAX_CHILDREN,
                    SLOW_MS, took[1]);
    return 0;
}

/* Issue 1540386: the server waits only for the children it made. A child
 * of the same process made before the server (a decoy that exits 72) is
 * still there for its own parent to reap after the server is closed. */
static int case_foreign_child(void)
{
    struct ss_server s;
    struct loop l;
    pid_t decoy = fork();
    if (decoy < 0)
        return fail("fork: %s", strerror(errno));
    if (decoy == 0)
        _exit(72);
    if (tcp_server(&s, &ss_ForkingMixIn, &EchoHandler) < 0 || start_loop(&l, &s, SHORT_POLL) < 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        step("request %d", i);
        if (echo_session(&s, "not yours\n") < 0)
            return -1;
    }
    step("waiting for the server to reap its own children");
    if (wait_children_reaped(decoy, 20 * SHORT_POLL) < 0)
        return -1;
    sleep_ms((long)(4 * SHORT_POLL * 1000)); /* a few more service_actions() */
    if (stop_loop(&l) < 0)
        return -1;
    ss_server_close(&s); /* block_on_close: collect_children(blocking) */
    int status;
    pid_t got = waitpid(decoy, &status, WNOHANG);
    if (got != decoy)
        return fail("waitpid(decoy): %s", got < 0 ? "the server reaped a child it did not make"
                                                  : "the decoy is gone");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 72)
        return fail("the decoy's status is %#x, not exit 72", status);
    return 0;
}

/* ========================= Cases: the server's socket ====================== */

/* bpo-22435: a bind that fails (port in use) closes the socket it made. */
static int case_bind_fail_no_leak(void)
{
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof in;
    if (busy < 0 || bind(busy, (struct sockaddr *)&in, sizeof in) < 0 || listen(busy, 1) < 0 ||
        getsockname(busy, (struct sockaddr *)&in, &len) < 0)
        return fail("the busy port: %s", strerror(errno));
    int port = ntohs(in.sin_port), before = count_fds();
    for (int i = 0; i < BIND_FAILURES; i++) {
        struct ss_server s;
        step("failed bind %d of %d", i + 1, BIND_FAILURES);
        errno = 0;
        int rc = ss_server_init(&s, &ss_SyncMixIn, &ss_TCPServer, "127.0.0.1", port,
                                &EchoHandler, true);
        if (rc != SS_ERROR || errno != EADDRINUSE)
            return fail("ss_server_init on a busy port returned %d, errno %s (want SS_ERROR, "
                        "EADDRINUSE)", rc, strerror(errno));
    }
    int after = count_fds();
    close(busy);
    if (after != before)
        return fail("%d failed binds leaked %d descriptors", BIND_FAILURES, after - before);
    return 0;
}

/* server_close() twice is harmless, leaves fileno() at -1 and gives back
 * every descriptor the server had; closing a threading or forking server
 * that never served returns at once (test_close_immediately). */
static int case_close_twice(void)
{
    const struct ss_mixin *mixins[] = {&ss_SyncMixIn, &ss_ThreadingMixIn, &ss_ForkingMixIn};
    for (size_t i = 0; i < sizeof mixins / sizeof mixins[0]; i++) {
        struct ss_server s;
        int before = count_fds();
        if (tcp_server(&s, mixins[i], &EchoHandler) < 0)
            return -1;
        if (ss_fileno(&s) < 0)
            return fail("%s: fileno() is %d before server_close()", mixins[i]->name,
                        ss_fileno(&s));
        step("%s: ss_server_close() twice", mixins[i]->name);
        ss_server_close(&s);
        ss_server_close(&s);
        if (ss_fileno(&s) != -1 || s.socket != -1)
            return fail("%s: fileno() is %d after server_close(), not -1", mixins[i]->name,
                        ss_fileno(&s));
        if (count_fds() != before)
            return fail("%s: %d descriptors still open after server_close()", mixins[i]->name,
                        count_fds() - before);
    }
    return 0;
}

/* server_bind() reads the address back: port 0 becomes the real port. */
static int case_port_zero_address(void)
{
    struct ss_server s;
    char text[128], want[128];
    if (tcp_server(&s, &ss_SyncMixIn, &EchoHandler) < 0)
        return -1;
    struct sockaddr_in real;
    socklen_t len = sizeof real;
    if (getsockname(ss_fileno(&s), (struct sockaddr *)&real, &len) < 0)
        return fail("getsockname: %s", strerror(errno));
    ss_format_address(&s.server_address, s.server_address_len, text, sizeof text);
    snprintf(want, sizeof want, "('127.0.0.1', %d)", ntohs(real.sin_port));
    ss_server_close(&s);
    if (port_of(&s) == 0 || port_of(&s) != ntohs(real.sin_port))
        return fail("server_address has port %d, the socket is on %d", port_of(&s),
                    ntohs(real.sin_port));
    if (strcmp(text, want) != 0)
        return fail("server_address formats as \"%s\", want \"%s\"", text, want);
    return 0;
}

/* ===================== Cases: wfile under signals ======================== */

/* CPython's SocketWriterTest.test_write: one write of 16 MiB + 1 byte is
 * complete, and says so, although the writing thread keeps getting
 * SIGUSR1, whose handler is installed without SA_RESTART: each signal
 * breaks off the send() in progress, with a short count or EINTR. */
static volatile sig_atomic_t usr1_count;

static void on_usr1(int sig)
{
    (void)sig;
    usr1_count++;
}

static unsigned char pattern_byte(size_t i)
{
    return (unsigned char)(i % 251); /* 251 is prime: a lost or repeated chunk shows */
}

static size_t big_written;      /* what fwrite() said it wrote */
static int big_signals;         /* signals during the write */
static double big_seconds;      /* how long the write took */

static int big_write_handle(struct ss_handler *h)
{
    unsigned char *buf = malloc(BIG_WRITE);
    if (buf == NULL)
        return ss_fail(h->request, "bigwrite: malloc");
    for (size_t i = 0; i < BIG_WRITE; i++)
        buf[i] = pattern_byte(i);
    int signals_before = usr1_count;
    double t0 = now();
    big_written = fwrite(buf, 1, BIG_WRITE, h->wfile);
    int flushed = fflush(h->wfile);
    big_seconds = now() - t0;
    big_signals = usr1_count - signals_before;
    free(buf);
    return big_written == BIG_WRITE && flushed == 0 ? SS_OK : ss_fail(h->request, "bigwrite");
}

static const struct ss_handler_class BigWriteHandler = {
    .name = "BigWriteHandler", .base = &ss_StreamRequestHandler, .handle = big_write_handle};

/* The serving thread: one request, served by handle_request(). */
struct one_request {
    struct ss_server *s;
    int status;
};

static void *serve_one(void *arg)
{
    struct one_request *one = arg;
    one->status = ss_handle_request(one->s);
    return NULL;
}

/* SIGUSR1 to the serving thread every millisecond until told to stop. */
struct signaller {
    pthread_t target;
    atomic_int stop;
};

static void *signal_loop(void *arg)
{
    struct signaller *sig = arg;
    while (!atomic_load(&sig->stop)) {
        pthread_kill(sig->target, SIGUSR1);
        nanosleep(&(struct timespec){0, SIGNAL_GAP_NS}, NULL);
    }
    return NULL;
}

/* Read everything until EOF and check every byte. Returns the count.
 * A pause now and then keeps the socket buffers full, so that the writer
 * is blocked in send() (where a signal interrupts it) most of the time. */
static long receive_pattern(int fd)
{
    static unsigned char buf[1 << 16];
    double deadline = now() + CASE_SECONDS - 5;
    size_t total = 0;
    for (int reads = 1;; reads++) {
        if (reads % READS_PER_PAUSE == 0)
            sleep_ms(1);
        if (!readable_within(fd, deadline - now()))
            return fail("the big write stalled after %zu bytes", total);
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0)
            return (long)total;
        if (n < 0)
            return fail("client recv after %zu bytes: %s", total, strerror(errno));
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern_byte(total + (size_t)i))
                return fail("byte %zu is wrong: a chunk was lost or sent twice",
                            total + (size_t)i);
        total += (size_t)n;
    }
}

static int case_big_write_under_signals(void)
{
    struct ss_server s;
    struct sigaction sa = {.sa_handler = on_usr1}; /* sa_flags 0: no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) < 0)
        return fail("sigaction: %s", strerror(errno));
    if (tcp_server(&s, &ss_SyncMixIn, &BigWriteHandler) < 0)
        return -1;
    struct one_request one = {.s = &s};
    struct signaller sig = {0};
    pthread_t server, signaller;
    if (pthread_create(&server, NULL, serve_one, &one) != 0)
        return fail("pthread_create failed");
    sig.target = server;
    if (pthread_create(&signaller, NULL, signal_loop, &sig) != 0)
        return fail("pthread_create failed");
    int fd = silent_client(&s);
    step("receiving the 16 MiB write under SIGUSR1");
    long got = fd < 0 ? -1 : receive_pattern(fd);
    atomic_store(&sig.stop, 1);
    pthread_join(signaller, NULL);
    pthread_join(server, NULL);
    close(fd);
    ss_server_close(&s);
    if (got < 0)
        return -1;
    note("16 MiB + 1 byte written in %.3f s under %d SIGUSR1 (%d received in all)", big_seconds,
         big_signals, (int)usr1_count);
    if (got != BIG_WRITE || big_written != BIG_WRITE)
        return fail("the client got %ld bytes, fwrite() said %zu; want %d", got, big_written,
                    BIG_WRITE);
    if (one.status != SS_OK)
        return fail("handle_request() returned %d", one.status);
    if (big_signals < MIN_SIGNALS)
        return fail("only %d signals arrived during the write: the case proved nothing",
                    big_signals);
    return 0;
}

/* ============================ Cases: datagrams ============================ */

/* A UDP server on 127.0.0.1 and a free port. */
static int udp_server(struct ss_server *s, const struct ss_handler_class *handler)
{
    step("ss_server_init(UDPServer)");
    if (ss_server_init(s, &ss_SyncMixIn, &ss_UDPServer, "127.0.0.1", 0, handler, true) != SS_OK)
        return fail("ss_server_init(UDPServer): %s", strerror(errno));
    return 0;
}

/* Reports how many bytes of the packet it could read from rfile. */
static size_t packet_len_seen;

static int length_handle(struct ss_handler *h)
{
    char buf[BIG_DATAGRAM * 2];
    size_t n = fread(buf, 1, sizeof buf, h->rfile);
    packet_len_seen = h->request->packet_len;
    return fprintf(h->wfile, "%zu\n", n) > 0 ? SS_OK : ss_fail(h->request, "len: write");
}

static const struct ss_handler_class LengthHandler = {
    .name = "LengthHandler", .base = &ss_DatagramRequestHandler, .handle = length_handle};

/* UDPServer.max_packet_size = 8192: longer datagrams are cut, silently. */
static int case_udp_truncation(void)
{
    struct ss_server s;
    char big[BIG_DATAGRAM], reply[64];
    memset(big, 'u', sizeof big);
    if (udp_server(&s, &LengthHandler) < 0)
        return -1;
    int fd = client_of(&s);
    if (fd < 0)
        return -1;
    if (send(fd, big, sizeof big, 0) != (ssize_t)sizeof big)
        return fail("send of %d bytes: %s", BIG_DATAGRAM, strerror(errno));
    step("ss_handle_request() for the big datagram");
    int rc = ss_handle_request(&s);
    ssize_t n = recv_datagram(fd, reply, sizeof reply - 1, REPLY_SECONDS);
    close(fd);
    ss_server_close(&s);
    if (n < 0)
        return -1;
    reply[n] = '\0';
    if (rc != SS_OK || strcmp(reply, "8192\n") != 0 || packet_len_seen != MAX_PACKET)
        return fail("a %d-byte datagram: handler read \"%.*s\" bytes, packet_len %zu, status %d "
                    "(want 8192)", BIG_DATAGRAM, (int)n - 1, reply, packet_len_seen, rc);
    return 0;
}

/* A handler that writes nothing: DatagramRequestHandler.finish() still
 * sends wfile's bytes, here none: a 0-byte datagram, as CPython does. */
static int silent_handle(struct ss_handler *h)
{
    (void)h;
    return SS_OK;
}

static const struct ss_handler_class SilentHandler = {
    .name = "SilentHandler", .base = &ss_DatagramRequestHandler, .handle = silent_handle};

static int case_udp_empty_reply(void)
{
    struct ss_server s;
    char reply[64];
    if (udp_server(&s, &SilentHandler) < 0)
        return -1;
    int fd = client_of(&s);
    if (fd < 0 || send_text(fd, "say nothing\n") < 0)
        return -1;
    step("ss_handle_request() with a silent handler");
    int rc = ss_handle_request(&s);
    ssize_t n = recv_datagram(fd, reply, sizeof reply, REPLY_SECONDS);
    close(fd);
    ss_server_close(&s);
    if (n < 0)
        return -1;
    if (rc != SS_OK || n != 0)
        return fail("the reply was %zd bytes, status %d (want an empty datagram, SS_OK)", n, rc);
    return 0;
}

/* A Unix datagram sender that never bound a path has no address: the reply
 * cannot be sent, handle_error() says so, and the server goes on to serve
 * a sender that did bind one. */
static void (*base_handle_error)(struct ss_server *, struct ss_request *);

static void count_and_report_error(struct ss_server *s, struct ss_request *r)
{
    atomic_fetch_add(&errors_handled, 1);
    base_handle_error(s, r); /* super().handle_error(): must cope with no address */
}

/* A Unix datagram socket bound to path (when not NULL) that sends to s. */
static int unix_sender(const struct ss_server *s, const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    if (fd < 0)
        return fail("socket(AF_UNIX): %s", strerror(errno));
    if (path != NULL) {
        snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
        if (bind(fd, (struct sockaddr *)&un, sizeof un) < 0) {
            fail("bind %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    if (connect(fd, (const struct sockaddr *)&s->server_address, s->server_address_len) < 0) {
        fail("connect to the server: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int unbound_then_bound(struct ss_server *s, const char *client_path)
{
    char reply[64];
    struct capture cap;
    int fd = unix_sender(s, NULL);
    if (fd < 0 || send_text(fd, "who am I\n") < 0 || capture_stderr(&cap) < 0)
        return -1;
    step("ss_handle_request() for an unbound sender");
    ss_handle_request(s);
    char *text = end_capture(&cap);
    close(fd);
    if (text == NULL)
        return -1;
    if (atomic_load(&errors_handled) != 1)
        return fail("handle_error() called %d times for an unbound sender (want 1); stderr: %s",
                    atomic_load(&errors_handled), text);
    free(text);
    if ((fd = unix_sender(s, client_path)) < 0 || send_text(fd, "bound\n") < 0)
        return -1;
    step("ss_handle_request() for a bound sender");
    int rc = ss_handle_request(s);
    ssize_t n = recv_datagram(fd, reply, sizeof reply - 1, REPLY_SECONDS);
    close(fd);
    if (n < 0)
        return -1;
    reply[n] = '\0';
    if (rc != SS_OK || strcmp(reply, "bound\n") != 0 || atomic_load(&errors_handled) != 1)
        return fail("the bound sender got \"%s\" (status %d, %d errors)", reply, rc,
                    atomic_load(&errors_handled));
    return 0;
}

static int case_unix_dgram_unbound_sender(void)
{
    char dir[] = "/tmp/test_socketserver.XXXXXX", server_path[128], client_path[128];
    struct ss_server s;
    if (mkdtemp(dir) == NULL)
        return fail("mkdtemp: %s", strerror(errno));
    snprintf(server_path, sizeof server_path, "%s/server.sock", dir);
    snprintf(client_path, sizeof client_path, "%s/client.sock", dir);
    step("ss_server_init(UnixDatagramServer)");
    int rc = ss_server_init(&s, &ss_SyncMixIn, &ss_UnixDatagramServer, server_path, 0,
                            &DatagramEchoHandler, true);
    if (rc != SS_OK) {
        rc = fail("ss_server_init(UnixDatagramServer): %s", strerror(errno));
    } else {
        base_handle_error = s.ops.handle_error;
        s.ops.handle_error = count_and_report_error;
        rc = unbound_then_bound(&s, client_path);
        ss_server_close(&s);
    }
    unlink(client_path);
    unlink(server_path);
    rmdir(dir);
    return rc;
}

/* ========================= Cases: descriptors, paths ======================= */

/* Python's selector is poll(), which has no FD_SETSIZE: serve a client on
 * descriptors above 1023, where select() would overflow its fd_set. */
static atomic_int connection_fd;

static int fd_handle(struct ss_handler *h)
{
    atomic_store(&connection_fd, ss_handler_fileno(h));
    return echo_handle(h);
}

static const struct ss_handler_class FdHandler = {
    .name = "FdHandler", .base = &ss_StreamRequestHandler, .handle = fd_handle};

/* Raise the soft descriptor limit so that HIGH_FD fits, with room. */
static int raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return fail("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur >= 2 * HIGH_FD)
        return 0;
    if (rl.rlim_max < 2 * HIGH_FD)
        return fail("the hard descriptor limit is %ld; this case needs %d",
                    (long)rl.rlim_max, 2 * HIGH_FD);
    rl.rlim_cur = 2 * HIGH_FD;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return fail("setrlimit: %s", strerror(errno));
    return 0;
}

static int case_poll_past_1023(void)
{
    struct ss_server s;
    struct loop l;
    if (raise_fd_limit() < 0)
        return -1;
    int first = open("/dev/null", O_RDONLY), last = first;
    if (first < 0)
        return fail("open /dev/null: %s", strerror(errno));
    while (last >= 0 && last < HIGH_FD)
        last = dup(first);
    if (last < 0)
        return fail("dup: %s", strerror(errno));
    if (tcp_server(&s, &ss_ThreadingMixIn, &FdHandler) < 0 || start_loop(&l, &s, LONG_POLL) < 0)
        return -1;
    step("serving a client on descriptors above %d", HIGH_FD);
    if (echo_session(&s, "high\n") < 0 || stop_loop(&l) < 0)
        return -1;
    int listener = ss_fileno(&s), conn = atomic_load(&connection_fd);
    ss_server_close(&s);
    for (int i = first; i <= last; i++)
        close(i);
    note("served on listening fd %d, connection fd %d", listener, conn);
    if (listener <= 1023 || conn <= 1023)
        return fail("the server's descriptors (%d, %d) are not above 1023", listener, conn);
    return 0;
}

/* The library does not unlink a Unix socket's path (Python neither): a
 * second server on the same path fails with EADDRINUSE until someone
 * removes the file (the course's server program does, at start and exit). */
static int stale_path(const char *path)
{
    struct ss_server s;
    struct stat st;
    step("ss_server_init(UnixStreamServer) on a fresh path");
    if (ss_server_init(&s, &ss_SyncMixIn, &ss_UnixStreamServer, path, 0, &EchoHandler, true) < 0)
        return fail("ss_server_init(UnixStreamServer): %s", strerror(errno));
    int fd = client_of(&s);
    if (fd < 0)
        return -1;
    close(fd);
    ss_server_close(&s);
    if (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return fail("server_close() removed %s: Python leaves it", path);
    errno = 0;
    int rc = ss_server_init(&s, &ss_SyncMixIn, &ss_UnixStreamServer, path, 0, &EchoHandler, true);
    if (rc != SS_ERROR || errno != EADDRINUSE) {
        if (rc == SS_OK)
            ss_server_close(&s);
        return fail("a second server on a stale path: status %d, errno %s (want SS_ERROR, "
                    "EADDRINUSE)", rc, strerror(errno));
    }
    unlink(path);
    if (ss_server_init(&s, &ss_SyncMixIn, &ss_UnixStreamServer, path, 0, &EchoHandler, true) < 0)
        return fail("after unlink, ss_server_init(UnixStreamServer): %s", strerror(errno));
    ss_server_close(&s);
    return 0;
}

static int case_unix_stale_path(void)
{
    char dir[] = "/tmp/test_socketserver.XXXXXX", path[128];
    if (mkdtemp(dir) == NULL)
        return fail("mkdtemp: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/stale.sock", dir);
    int rc = stale_path(path);
    unlink(path);
    rmdir(dir);
    return rc;
}

/* ================================== Main =================================== */

static const struct test_case {
    const char *name;
    int (*run)(void);
} cases[] = {
    {"shutdown_race", case_shutdown_race},
    {"shutdown_before_serve", case_shutdown_before_serve},
    {"shutdown_from_loop_thread", case_shutdown_from_loop_thread},
    {"shutdown_latency", case_shutdown_latency},
    {"handle_request_timeout", case_handle_request_timeout},
    {"handle_request_served", case_handle_request_served},
    {"handle_error_frame", case_handle_error_frame},
    {"handler_lifecycle", case_handler_lifecycle},
    {"sync_exit_propagates", case_sync_exit_propagates},
    {"verify_request_refused", case_verify_request_refused},
    {"block_on_close_joins", case_block_on_close_joins},
    {"daemon_threads_no_join", case_daemon_threads_no_join},
    {"threads_reaped", case_threads_reaped},
    {"forking_reaped", case_forking_reaped},
    {"max_children_held", case_max_children_held},
    {"foreign_child", case_foreign_child},
    {"bind_fail_no_leak", case_bind_fail_no_leak},
    {"close_twice", case_close_twice},
    {"port_zero_address", case_port_zero_address},
    {"big_write_under_signals", case_big_write_under_signals},
    {"udp_truncation", case_udp_truncation},
    {"udp_empty_reply", case_udp_empty_reply},
    {"unix_dgram_unbound_sender", case_unix_dgram_unbound_sender},
    {"poll_past_1023", case_poll_past_1023},
    {"unix_stale_path", case_unix_stale_path},
};
#define N_CASES (sizeof cases / sizeof cases[0])

/* Why a case's process did not exit 0, when it did not say so itself. */
static void explain(int status, char *out, size_t size)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        snprintf(out, size, "timed out after %d s, while: %s", CASE_SECONDS, report->step);
    else if (WIFSIGNALED(status))
        snprintf(out, size, "killed by signal %d (%s), while: %s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), report->step);
    else if (report->why[0] != '\0')
        snprintf(out, size, "%s", report->why);
    else
        snprintf(out, size, "exit status %d (a sanitizer report?), after: %s",
                 WEXITSTATUS(status), report->step);
}

/* Run one case in a child process; print its line; 0 if it passed. */
static int run_case(const struct test_case *c)
{
    memset(report, 0, sizeof *report);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        printf("not ok - %s: fork: %s\n", c->name, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        alarm(CASE_SECONDS);
        int rc = c->run();
        fflush(stdout);
        exit(rc == 0 ? 0 : 1); /* exit(), not _exit(): sanitizers check at exit */
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            printf("not ok - %s: waitpid: %s\n", c->name, strerror(errno));
            return -1;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("ok - %s\n", c->name);
        return 0;
    }
    char why[sizeof report->why + sizeof report->step + 64];
    explain(status, why, sizeof why);
    printf("not ok - %s: %s\n", c->name, why);
    return -1;
}

static const struct test_case *find_case(const char *name)
{
    for (size_t i = 0; i < N_CASES; i++)
        if (strcmp(cases[i].name, name) == 0)
            return &cases[i];
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: test_socketserver [CASE...]\ncases:");
    for (size_t i = 0; i < N_CASES; i++)
        fprintf(stderr, " %s", cases[i].name);
    fprintf(stderr, "\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (find_case(argv[i]) == NULL)
            usage();
    /* cppcheck-suppress invalidFunctionArg ; an anonymous mapping takes fd -1 */
    report = mmap(NULL, sizeof *report, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (report == MAP_FAILED) {
        perror("test_socketserver: mmap");
        return 1;
    }
    /* Python ignores SIGPIPE from the start, so a write to a client that
     * left is an error to handle, not the end of the process. */
    signal(SIGPIPE, SIG_IGN);
    int passed = 0, failed = 0;
    for (size_t i = 0; i < (argc > 1 ? (size_t)argc - 1 : N_CASES); i++) {
        const struct test_case *c = argc > 1 ? find_case(argv[i + 1]) : &cases[i];
        if (run_case(c) == 0)
            passed++;
        else
            failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    munmap(report, sizeof *report);
    return failed == 0 ? 0 : 1;
}
