/*
 * setup.c: what every chapter's server does the same way around serving:
 * numbers on the command line, the log, stopping on a signal, the
 * listening socket. This file is byte-for-byte the same in every chapter
 * but 07 (the suite checks it), so `diff` between two chapters' server.c
 * shows only what the stage changed. server.c includes it near its top,
 * after defining CHAPTER; it is not compiled on its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Ask for the longest accept queue the kernel allows; it silently caps the
 * value at net.core.somaxconn (4096 on current Linux). Clients beyond the
 * queue see their SYNs dropped and retried after a second. */
#define BACKLOG SOMAXCONN

/* A lingering close (see close_client) waits at most this long, and reads
 * at most this much, for a client to close its end after ours. */
#define LINGER_MS 2000
#define LINGER_BYTES (1024 * 1024)

/* The highest -m any chapter accepts: far past what one machine serves. */
#define MAX_CLIENTS_LIMIT 1000000

/* ============================== Command line =============================== */

static void usage(void); /* each chapter's server.c says what it accepts */

/* Parse a decimal number in [min, max]; anything else is a usage error. */
static int parse_number(const char *text, int min, int max)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        usage();
    return (int)value;
}

/* Milliseconds on a clock that only moves forward, for deadlines: the
 * wall clock can jump when someone sets it. */
static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ================================== Log ==================================== */

static int quiet; /* -q: no connect/disconnect log */

/* Write a log line to stderr, unless that would block. A pipe nobody reads
 * (a paused pager, a stuck log collector) is full after 64 KiB, and waiting
 * for room there would freeze the server: losing a log line is the lesser
 * harm. poll() with a zero timeout asks without waiting, and may be called
 * from a signal handler. One write() per line: lines logged at the same time
 * by several threads or processes never mix. */
static void write_log(const char *line, size_t len)
{
    struct pollfd err = {.fd = STDERR_FILENO, .events = POLLOUT};
    if (poll(&err, 1, 0) == 1 && (err.revents & POLLOUT)) {
        ssize_t written = write(STDERR_FILENO, line, len);
        (void)written; /* a short or failed log write is not worth an error */
    }
}

/* Connects and disconnects are logged, unless -q. */
static void log_event(const char *fmt, ...)
{
    if (quiet)
        return;
    char line[256] = "server: ";
    size_t at = strlen(line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + at, sizeof line - at - 1, fmt, ap);
    va_end(ap);
    strcat(line, "\n");
    write_log(line, strlen(line));
}

/* ================================= Signals ================================= */

/* SIGINT and SIGTERM end the server with status 0. A signal handler may only
 * call async-signal-safe functions; poll(), write() and _exit() are among
 * them. On exit the kernel closes every descriptor: the listener stops
 * accepting and each connected client sees its connection end. */
static void on_stop_signal(int sig)
{
    static const char msg[] = "server: stopping\n";
    (void)sig;
    write_log(msg, sizeof msg - 1);
    _exit(0);
}

/* Run handler when sig arrives; flags as for sigaction() (SA_RESTART...). */
static void set_handler(int sig, void (*handler)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = flags;
    sigaction(sig, &sa, NULL);
}

static void install_signal_handlers(void)
{
    set_handler(SIGINT, on_stop_signal, 0);
    set_handler(SIGTERM, on_stop_signal, 0);
    /* Writing to a connection the peer has closed raises SIGPIPE, whose
     * default action kills the whole process. One client leaving must never
     * do that, so ignore it: send() then fails with EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
}

/* ============================ Listening socket ============================= */

/* The ready line the tests wait for, "listening on HOST:PORT", flushed at
 * once. With -p 0 the kernel chose the port at bind(); ask which one. */
static void print_ready_line(int fd, const char *host)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        perror("server: getsockname");
    printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);
}

/* Create, bind and listen, then print the ready line; a chapter that must
 * start workers first defines READY_LINE_LATER and prints it itself once
 * they run (08). Returns the listening descriptor, or -1 after saying what
 * went wrong. */
static int open_listener(const char *host, int port)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "server: -H %s: not an IPv4 address\n", host);
        usage();
    }

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("server: socket");
        return -1;
    }
    /* Without SO_REUSEADDR, restarting the server right after it stopped
     * fails for a minute: its old connections sit in TIME_WAIT on the port. */
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        perror("server: setsockopt(SO_REUSEADDR)");

    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, BACKLOG) < 0) {
        fprintf(stderr, "server: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
        close(fd);
        return -1;
    }
#ifndef READY_LINE_LATER
    print_ready_line(fd, host);
#endif
    return fd;
}

/* Who a new connection is: the peer's "127.0.0.1:54321" into name, for the
 * log, and our end's port as the return value, for the greeting. */
#define PEER_NAME_SIZE (INET_ADDRSTRLEN + 6)

static int describe_connection(int fd, const struct sockaddr_in *peer, char name[PEER_NAME_SIZE])
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &peer->sin_addr, ip, sizeof ip);
    snprintf(name, PEER_NAME_SIZE, "%s:%d", ip, ntohs(peer->sin_port));
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
        return 0; /* the connection is already gone: its first send will say so */
    return ntohs(local.sin_port);
}
