/*
 * 07-socketserver-clone/server.c: the course's echo server, written the way
 * the source articles write theirs in Python:
 *
 *     class EchoStreamHandler(socketserver.StreamRequestHandler):
 *         def handle(self):
 *             self.wfile.write(greeting)
 *             while line := self.rfile.readline():
 *                 self.wfile.write(answer(line))
 *
 *     server = socketserver.ThreadingTCPServer(("127.0.0.1", 9700), EchoStreamHandler)
 *     server.serve_forever()
 *
 * Chapters 01-06 wrote the loop, the threads and the processes by hand; the
 * library (socketserver.h) now does all that. This file says only what is
 * particular to the course: what to answer (two handler classes), which
 * server to assemble from the flags (mix-in x server type x handler), and
 * the cap -m, added the Python way: by overriding a method.
 */
#define _GNU_SOURCE /* gettid(), getopt_long(), SO_PEERCRED */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "socketserver.h"

/* ============================== Configuration ============================== */

#define CHAPTER "07-socketserver-clone"

/* Chapter N listens on 9N00, so all chapters can run side by side. */
#define DEFAULT_PORT 9700

/* The longest line the protocol accepts, "\r\n" not counted. */
#define MAX_LINE 4096

/* What one ss_readline() may take (it keeps a byte for the NUL): a longest
 * line, its "\r\n" and one byte more, so that a line too long fills the
 * buffer. This bounds what a client can make us hold. */
#define LINE_SIZE (MAX_LINE + 3)

/* The longest "sleep <ms>": long enough to show a stalled server, short
 * enough that every test stays bounded in time. */
#define MAX_SLEEP_MS 10000

/* At most this many clients at once; the next is told "error server busy".
 * Python's ThreadingMixIn has no cap: a flood starts threads until memory
 * runs out. */
#define DEFAULT_MAX_CLIENTS 1000

/* Room for "127.0.0.1:54321" or a Unix peer, in the log. */
#define PEER_SIZE 128

static struct {
    const char *host;             /* -H: an IPv4 address to bind */
    int port;                     /* -p: 0 asks the kernel for a free port */
    int max_clients;              /* -m */
    bool quiet;                   /* -q: no connect/disconnect log */
    const struct ss_mixin *mixin; /* --threading, --forking, --sync */
    bool udp;                     /* --udp: datagrams */
    const char *unix_path;        /* --unix PATH: the Unix family */
    double poll_interval;         /* --poll-interval: serve_forever()'s argument */
    int max_children;             /* --max-children: ForkingMixIn.max_children */
    bool block_on_close;          /* --block-on-close: server_close() waits */
} opt = {
    .host = "127.0.0.1",
    .port = DEFAULT_PORT,
    .max_clients = DEFAULT_MAX_CLIENTS,
    .mixin = &ss_ThreadingMixIn, /* the articles' ThreadingTCPServer */
    .poll_interval = 0.5,        /* Python's default */
    .max_children = SS_MAX_CHILDREN,
};

/* The wire protocol, further down: what the handlers answer. */
enum next_step { KEEP_OPEN, CLOSE_NOW };
static enum next_step send_greeting(struct ss_handler *h);
static enum next_step answer_line(struct ss_handler *h, const char *peer, const char *line,
                                  size_t len);
static enum next_step reply_text(struct ss_handler *h, const char *text);
static size_t strip_line_end(const char *line, size_t n);
static void format_peer(const struct ss_request *r, int socket_type, char *out, size_t size);
static void log_event(const char *fmt, ...);

/* ============================ The request handlers ========================= */

/* The conversation with one stream client: the greeting, then the answer
 * to each line rfile gives. Returns why it ended, for the log. */
static const char *converse(struct ss_handler *h, const char *peer)
{
    char line[LINE_SIZE];
    if (send_greeting(h) == CLOSE_NOW)
        return "send failed";
    for (;;) {
        /* line = self.rfile.readline(LINE_SIZE - 1). rfile's buffer keeps
         * what came after the '\n', so lines glued in one segment, or one
         * split over many (the sticky packets), come out one by one. */
        ssize_t n = ss_readline(h->rfile, line, sizeof line);
        if (n < 0)
            return strerror(errno); /* ECONNRESET: the client reset */
        if (n == 0 || (line[n - 1] != '\n' && n < LINE_SIZE - 1))
            return "client closed"; /* EOF, perhaps in the middle of a line */
        size_t len = strip_line_end(line, (size_t)n);
        if (len > MAX_LINE) {
            reply_text(h, "error line too long (max 4096 bytes)");
            return "closed by server";
        }
        if (answer_line(h, peer, line, len) == CLOSE_NOW)
            return "closed by server";
    }
}

/* The connection a sync server is in the middle of, or -1: the stop signal
 * ends it (see on_stop_signal). */
static volatile sig_atomic_t connection_in_flight = -1;

/* class EchoStreamHandler(StreamRequestHandler): def handle(self), one
 * instance per connection. SS_OK even when the client reset: a client
 * leaving rudely is no exception, so handle_error() stays quiet. */
static int echo_stream_handle(struct ss_handler *h)
{
    char peer[PEER_SIZE];
    format_peer(h->request, SOCK_STREAM, peer, sizeof peer);
    log_event("connect %s (fd %d)", peer, h->connection);
    bool in_the_loop = h->server->mixin == &ss_SyncMixIn;
    if (in_the_loop)
        connection_in_flight = h->connection;
    const char *why = converse(h, peer);
    if (in_the_loop)
        connection_in_flight = -1;
    log_event("disconnect %s: %s", peer, why);
    return SS_OK;
}

/* class EchoDatagramHandler(DatagramRequestHandler): def handle(self), one
 * instance per datagram. rfile holds the datagram; what goes to wfile
 * leaves as one reply datagram when finish() runs. A datagram is one line
 * (what follows its first '\n' is ignored); no greeting, as there is no
 * connection, and "quit" answers "bye" but has nothing to close. */
static int echo_datagram_handle(struct ss_handler *h)
{
    char peer[PEER_SIZE], line[LINE_SIZE];
    format_peer(h->request, SOCK_DGRAM, peer, sizeof peer);
    ssize_t n = ss_readline(h->rfile, line, sizeof line);
    if (n < 0)
        return ss_fail(h->request, "handle: readline");
    size_t len = strip_line_end(line, (size_t)n);
    if (len > MAX_LINE)
        reply_text(h, "error line too long (max 4096 bytes)");
    else
        answer_line(h, peer, line, len);
    return SS_OK;
}

/* A slot left NULL (setup, finish) is inherited from .base, as a Python
 * subclass inherits the methods it does not define. */
static const struct ss_handler_class EchoStreamHandler = {
    .name = "EchoStreamHandler",
    .base = &ss_StreamRequestHandler,
    .handle = echo_stream_handle,
};
static const struct ss_handler_class EchoDatagramHandler = {
    .name = "EchoDatagramHandler",
    .base = &ss_DatagramRequestHandler,
    .handle = echo_datagram_handle,
};

/* =========================== Assembling the server ========================= */

/* Static: the signal handler reaches it, and daemon threads may still be
 * using it while main() returns. */
static struct ss_server server;

/* -m for threads and the sync server: the clients being served. The loop
 * counts a client in as it admits it; the request's end (shutdown_request,
 * in its thread) counts it out. Two threads touch the count: a lock. */
static struct {
    pthread_mutex_t lock;
    int active;
} clients = {PTHREAD_MUTEX_INITIALIZER, 0};

/* Set on the loop's thread while it turns a client away: the loop calls
 * shutdown_request() right after verify_request() said no. Thread-local, so
 * the request threads, which never refuse, never see it. */
static _Thread_local bool refusing;

/* The method an override replaces, kept to call it as super() would. */
static void (*base_shutdown_request)(struct ss_server *s, struct ss_request *r);

/* Over the cap: say so; shutdown_request() then closes the connection.
 * A new connection's send buffer is empty: one send() takes the line. */
static void refuse(struct ss_request *r)
{
    static const char busy[] = "error server busy\n";
    char peer[PEER_SIZE];
    format_peer(r, SOCK_STREAM, peer, sizeof peer);
    log_event("connect %s (fd %d)", peer, r->fd);
    if (send(r->fd, busy, sizeof busy - 1, MSG_NOSIGNAL) < 0) {
        /* the client has gone already: nobody left to tell */
    }
    log_event("disconnect %s: server busy", peer);
    refusing = true;
}

/* Below the cap, count the client in. Processes: a child counts only in
 * its own copy of memory, so count the children instead, once the ended
 * ones are reaped (ForkingMixIn's service_actions() is collect_children()). */
static bool admit(struct ss_server *s)
{
    if (s->mixin == &ss_ForkingMixIn) {
        s->ops.service_actions(s);
        return s->n_children < opt.max_clients;
    }
    pthread_mutex_lock(&clients.lock);
    bool admitted = clients.active < opt.max_clients;
    if (admitted)
        clients.active++;
    pthread_mutex_unlock(&clients.lock);
    return admitted;
}

/* def verify_request(self, request, client_address): False turns the
 * client away, and the loop calls shutdown_request() instead of serving. */
static bool verify_request_capped(struct ss_server *s, struct ss_request *r)
{
    if (admit(s))
        return true;
    refuse(r);
    return false;
}

/* def shutdown_request(self, request): count the client out (first, so
 * that its slot is free before it sees its EOF), then super(). A refused
 * client is closed at once, as chapter 04 does: super()'s lingering close
 * would hold the loop, and every client behind it, up to 2 s for each
 * client turned away that keeps its end open. */
static void shutdown_request_capped(struct ss_server *s, struct ss_request *r)
{
    if (refusing) {
        refusing = false;
        shutdown(r->fd, SHUT_WR); /* our FIN after the busy line */
        s->ops.close_request(s, r);
        return;
    }
    if (s->mixin != &ss_ForkingMixIn) {
        pthread_mutex_lock(&clients.lock);
        clients.active--;
        pthread_mutex_unlock(&clients.lock);
    }
    base_shutdown_request(s, r);
}

/* The subclass's methods, written over what the type and mix-in gave.
 * Datagram servers take no -m: there is no connection to refuse. */
static void override_methods(struct ss_server *s)
{
    if (s->socket_type != SOCK_STREAM)
        return;
    base_shutdown_request = s->ops.shutdown_request;
    s->ops.verify_request = verify_request_capped;
    s->ops.shutdown_request = shutdown_request_capped;
}

/* A Unix socket's file outlives its server (Python's server_close() leaves
 * it too), and bind() then fails with EADDRINUSE. Remove it only if it is a
 * socket that nobody answers on (connect() refused); bind() reports the rest. */
static void remove_stale_socket(const char *path, int socket_type)
{
    struct stat st;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode) || strlen(path) >= sizeof addr.sun_path)
        return;
    memcpy(addr.sun_path, path, strlen(path));
    /* Non-blocking: a live server's full backlog must not hang us here. */
    int fd = socket(AF_UNIX, socket_type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("server: socket");
        return;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno == ECONNREFUSED &&
        unlink(path) < 0)
        fprintf(stderr, "server: unlink %s: %s\n", path, strerror(errno));
    close(fd);
}

/* server = ThreadingTCPServer(address, EchoStreamHandler, bind_and_activate=False):
 * the flags pick the mix-in and the server type, the socket type picks the
 * handler. Then the class attributes are set, as a subclass would set them,
 * before server_bind() and server_activate() read them. */
static int create_server(const char *where)
{
    const struct ss_server_type *type =
        opt.unix_path ? (opt.udp ? &ss_UnixDatagramServer : &ss_UnixStreamServer)
                      : (opt.udp ? &ss_UDPServer : &ss_TCPServer);
    const struct ss_handler_class *handler =
        type->socket_type == SOCK_STREAM ? &EchoStreamHandler : &EchoDatagramHandler;
    const char *address = opt.unix_path ? opt.unix_path : opt.host;

    if (ss_server_init(&server, opt.mixin, type, address, opt.port, handler, false) != SS_OK) {
        fprintf(stderr, "server: cannot listen on %s: %s\n", where, strerror(errno));
        return -1;
    }
    /* As http.server: a restart binds despite TIME_WAIT, a TCP state. On UDP,
     * SO_REUSEADDR would let a second server share a busy port (Linux), so
     * it stays off there, as in Python's UDPServer. */
    server.allow_reuse_address = type->socket_type == SOCK_STREAM;
    server.request_queue_size = SOMAXCONN; /* Python 3.15's default; 5 drops SYNs */
    /* On a stream, SIGTERM waits for no connected client: daemon threads,
     * and forked children that serve on. A datagram request lasts one sleep
     * at most, and its thread replies from the server's socket, which must
     * outlive it: Python's defaults, server_close() waits for them. */
    bool stream = type->socket_type == SOCK_STREAM;
    server.daemon_threads = stream && !opt.block_on_close;
    server.block_on_close = !stream || opt.block_on_close;
    server.max_children = opt.max_children;
    override_methods(&server);

    if (opt.unix_path)
        remove_stale_socket(opt.unix_path, type->socket_type);
    if (ss_server_bind(&server) != SS_OK || ss_server_activate(&server) != SS_OK) {
        fprintf(stderr, "server: cannot listen on %s: %s\n", where, strerror(errno));
        ss_server_close(&server);
        return -1;
    }
    return 0;
}

/* ============================== Wire protocol ============================== */

/* Write a log line to stderr, unless that would block: a pipe nobody reads
 * is full after 64 KiB, and waiting there would freeze the server (as in
 * chapters 01-06, setup.c). poll() may be called from a signal handler. */
static void write_log(const char *line, size_t len)
{
    struct pollfd err = {.fd = STDERR_FILENO, .events = POLLOUT};
    if (poll(&err, 1, 0) == 1 && (err.revents & POLLOUT)) {
        ssize_t written = write(STDERR_FILENO, line, len);
        (void)written; /* a short or failed log write is not worth an error */
    }
}

/* Connects, disconnects and sleeps go to stderr, unless -q. The line is
 * built first and written by one call, so that lines logged at once by
 * several threads or processes never mix. */
static void log_event(const char *fmt, ...)
{
    if (opt.quiet)
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

/* "127.0.0.1:54321", as chapters 01-06 log a peer. A Unix client has a path
 * only if it bound one (a datagram client must, to get replies); a stream
 * client rarely does, but the kernel knows its process id. */
static void format_peer(const struct ss_request *r, int socket_type, char *out, size_t size)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)&r->client_address;
    const struct sockaddr_un *un = (const struct sockaddr_un *)&r->client_address;
    size_t path_at = offsetof(struct sockaddr_un, sun_path);
    struct ucred cred;
    socklen_t cred_len = sizeof cred;
    char ip[INET_ADDRSTRLEN];

    if (r->client_address.ss_family == AF_INET && inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip))
        snprintf(out, size, "%s:%d", ip, ntohs(in->sin_port));
    else if (r->client_address_len > path_at && un->sun_path[0] != '\0')
        snprintf(out, size, "unix:%.*s", (int)(r->client_address_len - path_at), un->sun_path);
    else if (socket_type == SOCK_STREAM &&
             getsockopt(r->fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) == 0)
        snprintf(out, size, "unix:pid=%d", (int)cred.pid);
    else
        snprintf(out, size, "unix:unnamed");
}

/* Answer with one line. The line and its '\n' go to wfile in one fwrite():
 * on a stream, wfile is unbuffered (wbufsize = 0), so that is one send();
 * on a datagram, wfile collects the reply that finish() sends. */
static enum next_step reply(struct ss_handler *h, const char *line, size_t len)
{
    char out[MAX_LINE + 1];
    memcpy(out, line, len);
    out[len] = '\n';
    return fwrite(out, 1, len + 1, h->wfile) == len + 1 ? KEEP_OPEN : CLOSE_NOW;
}

static enum next_step reply_text(struct ss_handler *h, const char *text)
{
    return reply(h, text, strlen(text));
}

/* Who serves this client: the process, the thread (kernel tid), and the
 * port, self.server.server_address[1] ("unix" on a Unix socket). */
static enum next_step send_greeting(struct ss_handler *h)
{
    const struct sockaddr_in *address = (const struct sockaddr_in *)&h->server->server_address;
    char port[16] = "unix", line[128];
    if (h->server->address_family == AF_INET)
        snprintf(port, sizeof port, "%d", ntohs(address->sin_port));
    int len = snprintf(line, sizeof line, "hello chapter=%s pid=%d tid=%d port=%s", CHAPTER,
                       (int)getpid(), (int)gettid(), port);
    return reply(h, line, (size_t)len);
}

/* The line's length without its '\n' and a '\r' before it: telnet and
 * "nc -C" end lines with "\r\n". */
static size_t strip_line_end(const char *line, size_t n)
{
    if (n > 0 && line[n - 1] == '\n') {
        n--;
        if (n > 0 && line[n - 1] == '\r')
            n--;
    }
    return n;
}

/* Milliseconds in "sleep <ms>": decimal digits worth 0..MAX_SLEEP_MS, leading
 * zeros allowed, or -1. The value is checked digit by digit, so no number of
 * digits can overflow it. */
static long parse_millis(const char *text, size_t len)
{
    long ms = 0;
    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        ms = ms * 10 + (text[i] - '0');
        if (ms > MAX_SLEEP_MS)
            return -1;
    }
    return ms;
}

/* "sleep <ms>" stands for slow work, such as a database call: the handler
 * blocks, and whatever else its thread or process would do waits with it. */
static enum next_step handle_sleep(struct ss_handler *h, const char *peer, const char *arg,
                                   size_t len)
{
    long ms = parse_millis(arg, len);
    if (ms < 0)
        return reply_text(h, "error usage: sleep <ms> with 0 <= ms <= 10000");

    log_event("%s sleeps %ld ms", peer, ms);
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ; /* a signal woke us early: sleep the rest */

    char line[32];
    int n = snprintf(line, sizeof line, "slept %ld", ms);
    return reply(h, line, (size_t)n);
}

static bool line_is(const char *line, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(line, word, len) == 0;
}

/* Answer one line, its end already stripped. Lines may hold any byte, NUL
 * included, so they are compared by length. */
static enum next_step answer_line(struct ss_handler *h, const char *peer, const char *line,
                                  size_t len)
{
    if (line_is(line, len, "quit") || line_is(line, len, "exit") || line_is(line, len, "q")) {
        reply_text(h, "bye");
        return CLOSE_NOW;
    }
    if (line_is(line, len, "sleep"))
        return handle_sleep(h, peer, "", 0);
    if (len >= 6 && memcmp(line, "sleep ", 6) == 0)
        return handle_sleep(h, peer, line + 6, len - 6);
    return reply(h, line, len);
}

/* ============================== Command line =============================== */

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port] [-m max-clients] [-q]\n"
                    "              [--threading | --forking | --sync] [--udp] [--unix PATH]\n"
                    "              [--poll-interval SECONDS] [--max-children N]"
                    " [--block-on-close]\n");
    exit(2);
}

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

/* --poll-interval: a millisecond at least (0 would make the loop spin), an
 * hour at most. */
static double parse_seconds(const char *text)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= 0.001 && value <= 3600))
        usage();
    return value;
}

/* The long options' codes: past every character getopt could return. */
enum { OPT_THREADING = 256, OPT_FORKING, OPT_SYNC, OPT_UDP, OPT_UNIX, OPT_POLL_INTERVAL,
       OPT_MAX_CHILDREN, OPT_BLOCK_ON_CLOSE };

static const struct option long_options[] = {
    {"threading", no_argument, NULL, OPT_THREADING},
    {"forking", no_argument, NULL, OPT_FORKING},
    {"sync", no_argument, NULL, OPT_SYNC},
    {"udp", no_argument, NULL, OPT_UDP},
    {"unix", required_argument, NULL, OPT_UNIX},
    {"poll-interval", required_argument, NULL, OPT_POLL_INTERVAL},
    {"max-children", required_argument, NULL, OPT_MAX_CHILDREN},
    {"block-on-close", no_argument, NULL, OPT_BLOCK_ON_CLOSE},
    {NULL, 0, NULL, 0},
};

static void parse_options(int argc, char **argv)
{
    int c;
    struct in_addr ignored;
    while ((c = getopt_long(argc, argv, "H:p:m:q", long_options, NULL)) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = parse_number(optarg, 0, 65535); break;
        case 'm': opt.max_clients = parse_number(optarg, 1, 1000000); break;
        case 'q': opt.quiet = true; break;
        case OPT_THREADING: opt.mixin = &ss_ThreadingMixIn; break;
        case OPT_FORKING: opt.mixin = &ss_ForkingMixIn; break;
        case OPT_SYNC: opt.mixin = &ss_SyncMixIn; break;
        case OPT_UDP: opt.udp = true; break;
        case OPT_UNIX: opt.unix_path = optarg; break;
        case OPT_POLL_INTERVAL: opt.poll_interval = parse_seconds(optarg); break;
        case OPT_MAX_CHILDREN: opt.max_children = parse_number(optarg, 1, 1000000); break;
        case OPT_BLOCK_ON_CLOSE: opt.block_on_close = true; break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    if (inet_pton(AF_INET, opt.host, &ignored) != 1) {
        fprintf(stderr, "server: -H %s: not an IPv4 address\n", opt.host);
        usage();
    }
}

/* ================================= Signals ================================= */

/* SIGINT and SIGTERM stop the loop. ss_request_shutdown() only sets a flag
 * and writes a byte to the loop's wake-up pipe, both async-signal-safe, and
 * serve_forever() returns at once. Python's shutdown() would wait for the
 * loop, and from a handler on the loop's own thread it waits forever.
 * A sync server's loop is busy in its one request, which lasts as long as
 * the client likes. In Python, Ctrl-C's KeyboardInterrupt would unwind out
 * of the handler's readline(); here shutdown(SHUT_RD) (async-signal-safe)
 * makes that read return end of input, and the request ends at once. */
static void on_stop_signal(int sig)
{
    static const char msg[] = "server: stopping\n";
    int saved_errno = errno; /* the code we interrupted may be about to read it */
    (void)sig;
    write_log(msg, sizeof msg - 1);
    ss_request_shutdown(&server);
    if (connection_in_flight >= 0)
        shutdown(connection_in_flight, SHUT_RD);
    errno = saved_errno;
}

static void install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: the loop retries a poll() that EINTR cut short. */
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        perror("server: sigaction");
    /* A client leaving while we write must cost only its connection: the
     * write fails with EPIPE instead of SIGPIPE killing the process. */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        perror("server: signal(SIGPIPE)");
}

/* ================================== Main =================================== */

/* "127.0.0.1:9700" or "unix:PATH": where we listen, for the ready line and
 * the errors. After server_bind(), port 0 has become the port chosen. */
static void describe_address(char *out, size_t size, int port)
{
    if (opt.unix_path)
        snprintf(out, size, "unix:%s", opt.unix_path);
    else
        snprintf(out, size, "%s:%d", opt.host, port);
}

int main(int argc, char **argv)
{
    char where[PEER_SIZE + sizeof ((struct sockaddr_un *)0)->sun_path];
    parse_options(argc, argv);
    describe_address(where, sizeof where, opt.port);
    if (create_server(where) < 0)
        return 1;
    install_signal_handlers(); /* only now: the handler needs the server */

    describe_address(where, sizeof where,
                     ntohs(((const struct sockaddr_in *)&server.server_address)->sin_port));
    printf("listening on %s\n", where);
    fflush(stdout);

    int status = ss_serve_forever(&server, opt.poll_interval);
    ss_server_close(&server); /* waits for threads or children if block_on_close */
    if (opt.unix_path && unlink(opt.unix_path) < 0)
        fprintf(stderr, "server: unlink %s: %s\n", opt.unix_path, strerror(errno));
    return status == SS_OK ? 0 : 1;
}
