/*
 * scripts/reference/echo_common.c: what the two C reference servers share
 * and their libraries do not do for them: the protocol's numbers, the
 * command line, the log. echo_protocol.c holds the protocol itself. The
 * chapters split their shared code the same way (setup.c, protocol.c).
 *
 * libevent_echo.c and libuv_echo.c include it near their top, after
 * defining NAME (the name in their greeting) and DEFAULT_PORT. How bytes
 * come in, how lines are cut out of them and how replies go out is each
 * library's business, and each server's own.
 */
#define _GNU_SOURCE /* gettid() */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The longest line the protocol accepts, "\r\n" not counted; a line still
 * without its '\n' at IN_SIZE bytes is over it. */
#define MAX_LINE 4096
#define IN_SIZE (MAX_LINE + 2)

/* "sleep <ms>" stands for slow work; bounded so that tests stay short. */
#define MAX_SLEEP_MS 10000

/* Backpressure, as chapters 03 and 06: stop reading a client once 64 KiB of
 * its replies wait unsent, so a client that sends and never reads cannot
 * grow our memory; read it again once they have gone out. */
#define OUTPUT_HIGH_WATER (64 * 1024)

/* The lingering close: after our FIN, read and throw away what the client
 * still sends, until its EOF, or this long, or this much, then close. */
#define LINGER_MS 2000
#define LINGER_BYTES (1024 * 1024)

/* -m: the default cap, and the highest one accepted (the chapters' own). */
#define DEFAULT_MAX_CLIENTS 10000
#define MAX_CLIENTS_LIMIT 1000000

/* ============================== Command line =============================== */

static struct {
    const char *host; /* an IPv4 address to bind */
    int port;         /* 0 asks the kernel for a free port */
    int max_clients;
    int quiet;        /* -q: no connect/disconnect log */
} opt = {"127.0.0.1", DEFAULT_PORT, DEFAULT_MAX_CLIENTS, 0};

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port] [-m max-clients] [-q]\n");
    exit(2);
}

/* A decimal number in [min, max]; anything else is a usage error. */
static int parse_number(const char *text, int min, int max)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        usage();
    return (int)value;
}

/* The chapters' command line, less what only they have (several ports, -e). */
static void parse_options(int argc, char **argv)
{
    struct in_addr ignored;
    int c;
    while ((c = getopt(argc, argv, "H:p:m:q")) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = parse_number(optarg, 0, 65535); break;
        case 'm': opt.max_clients = parse_number(optarg, 1, MAX_CLIENTS_LIMIT); break;
        case 'q': opt.quiet = 1; break;
        default: usage();
        }
    }
    if (optind != argc || inet_pton(AF_INET, opt.host, &ignored) != 1)
        usage(); /* an IPv4 address, as in every chapter: "localhost" is refused */
}

/* ================================== Log ==================================== */

/* A log line to stderr, unless that would block: a stderr pipe nobody reads
 * must not freeze the server (setup.c in the chapters says more). */
static void write_log(const char *line, size_t len)
{
    struct pollfd err = {.fd = STDERR_FILENO, .events = POLLOUT};
    if (poll(&err, 1, 0) == 1 && (err.revents & POLLOUT)) {
        ssize_t written = write(STDERR_FILENO, line, len);
        (void)written; /* a lost log line is not worth an error */
    }
}

/* Connects, disconnects and sleeps are logged, unless -q. */
__attribute__((format(printf, 1, 2)))
static void log_event(const char *fmt, ...)
{
    char line[256] = "server: ";
    size_t at = strlen(line);
    va_list ap;
    if (opt.quiet)
        return;
    va_start(ap, fmt);
    vsnprintf(line + at, sizeof line - at - 1, fmt, ap);
    va_end(ap);
    strcat(line, "\n");
    write_log(line, strlen(line));
}

/* Said on SIGINT and SIGTERM, even with -q, before exiting with status 0. */
static void log_stopping(void)
{
    static const char msg[] = "server: stopping\n";
    write_log(msg, sizeof msg - 1);
}

/* Who a new connection is: the peer's "127.0.0.1:54321", for the log. */
#define PEER_NAME_SIZE (INET_ADDRSTRLEN + 6)

static void name_peer(const struct sockaddr_in *peer, char name[PEER_NAME_SIZE])
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &peer->sin_addr, ip, sizeof ip);
    snprintf(name, PEER_NAME_SIZE, "%s:%d", ip, ntohs(peer->sin_port));
}
