/*
 * 06-epoll/server.c: one thread, epoll, non-blocking sockets.
 *
 *     epoll_create1; register each listener
 *     loop: epoll_wait -> only the sockets that are ready, with what is ready
 *           a listener   -> accept4 until EAGAIN, register each new client
 *           a client     -> read, queue answers, send what fits (as in 03)
 *           interest     -> epoll_ctl only when what a client waits for changes
 *
 * Chapter 03's loop, with select() replaced by epoll. select() is told every
 * descriptor on every call and scans them all, so each turn costs O(all
 * connections), and it cannot watch a descriptor past 1023. epoll keeps the
 * interest list in the kernel (epoll_ctl changes it) and epoll_wait returns
 * only the ready descriptors: a turn costs O(ready ones), whether 10 or
 * 10,000 connections sit idle. Level-triggered by default; -e switches to
 * edge-triggered. Still one thread: a slow handler ("sleep") stalls the
 * loop, which is why event-loop frameworks pair the loop with a thread pool.
 *
 * The file reads top to bottom: configuration, command line, signals, the
 * listening sockets, the wire protocol, serving clients, the epoll loop, main.
 */
#define _GNU_SOURCE /* gettid(), accept4() */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ============================== Configuration ============================== */

#define CHAPTER "06-epoll"

/* Chapter N listens on 9N00, so all chapters can run side by side. Like
 * chapter 02 it can listen on up to three ports (-p given three times). */
#define DEFAULT_PORT 9600
#define MAX_PORTS 3

/* The longest line the protocol accepts, "\r\n" not counted. It bounds the
 * memory one client can make us hold while we wait for its '\n'. */
#define MAX_LINE 4096
#define IN_SIZE (MAX_LINE + 2) /* a client's input buffer: a longest line and "\r\n" */

/* The longest "sleep <ms>": long enough to show a stalled server, short enough
 * that every test stays bounded in time. */
#define MAX_SLEEP_MS 10000

/* Ask for the longest accept queue the kernel allows; it silently caps the
 * value at net.core.somaxconn (4096 on current Linux). Clients beyond the
 * queue see their SYNs dropped and retried after a second. */
#define BACKLOG SOMAXCONN

/* epoll has no FD_SETSIZE: ten thousand clients (the C10K problem) cost
 * about a hundred bytes of our memory each here (make c10k measures it). The descriptor limit (ulimit -n) still
 * applies; past it, clients are refused (see shed_connection). */
#define DEFAULT_MAX_CLIENTS 10000

/* Descriptors that are not clients: stdin/out/err, epoll, three listeners,
 * the spare descriptor, and a few in passing. */
#define RESERVED_FDS 16

/* Ready events fetched per epoll_wait(); more wait for the next call. */
#define MAX_EVENTS 256

/* Edge-triggered: at most this many recv() per event before we move on to
 * the other ready clients, so that one fast sender cannot starve them. */
#define READ_BUDGET 16

/* Backpressure: stop reading a client whose unsent replies reach 64 KiB. One
 * recv() of at most 4098 bytes can add at most about 24 KiB of replies (the
 * usage error is the longest answer to the shortest line), so a client never
 * makes us hold much more than 88 KiB of output, whatever it does. */
#define OUTPUT_HIGH_WATER (64 * 1024)

/* ============================== Command line =============================== */

static struct {
    const char *host;       /* an IPv4 address to bind */
    int ports[MAX_PORTS];   /* 0 asks the kernel for a free port */
    int nports;
    int max_clients;
    int quiet;              /* -q: no connect/disconnect log */
    int edge_triggered;     /* -e: EPOLLET instead of level-triggered */
} opt = {"127.0.0.1", {0}, 0, DEFAULT_MAX_CLIENTS, 0, 0};

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port]... (up to 3) [-m max-clients] [-q] [-e]\n");
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

static void parse_options(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:m:qe")) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p':
            if (opt.nports == MAX_PORTS)
                usage();
            opt.ports[opt.nports++] = parse_number(optarg, 0, 65535);
            break;
        case 'm': opt.max_clients = parse_number(optarg, 1, 1000000); break;
        case 'q': opt.quiet = 1; break;
        case 'e': opt.edge_triggered = 1; break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    if (opt.nports == 0) /* no -p: the default port */
        opt.ports[opt.nports++] = DEFAULT_PORT;
}

/* Connects and disconnects go to stderr, unless -q. Errors always do. The
 * line is built first and written by one call, so that lines logged at the
 * same time by several threads or processes never mix. */
static void log_event(const char *fmt, ...)
{
    if (opt.quiet)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "server: %s\n", line);
}

/* ================================= Signals ================================= */

/* SIGINT and SIGTERM end the server with status 0. A signal handler may only
 * call async-signal-safe functions, and write() and _exit() are two of them.
 * On exit the kernel closes every descriptor: the listener stops accepting
 * and each connected client sees its connection end. */
static void on_stop_signal(int sig)
{
    static const char msg[] = "server: stopping\n";
    (void)sig;
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing useful to do: we are exiting anyway */
    }
    _exit(0);
}

static void install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* Writing to a connection the peer has closed raises SIGPIPE, whose
     * default action kills the whole process. One client leaving must never
     * do that, so ignore it: send() then fails with EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
}

/* ============================ Listening sockets ============================ */

/* Create, bind and listen; print the ready line the tests wait for.
 * Returns the listening descriptor, or -1 after saying what went wrong. */
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

    /* Non-blocking: accept4() must say EAGAIN, not wait, once the queue of
     * waiting connections is empty (see accept_new_clients). */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
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
    /* With -p 0 the kernel chose the port at bind(); ask which one. */
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

/* ============================== Wire protocol ============================== */

/* One connected client: its socket, and the bytes it sent that do not make a
 * whole line yet. */
struct client {
    int fd;
    int local_port;                 /* our end of the connection */
    char peer[INET_ADDRSTRLEN + 6]; /* "127.0.0.1:54321", for the log */
    char *in;                       /* bytes received, not yet a whole line;
                                       IN_SIZE bytes, allocated only while
                                       it holds some */
    size_t in_len;
    char *out;                      /* replies not sent yet; NULL when none */
    size_t out_len, out_cap;
    const char *leaving;            /* why it is leaving, once it is: it goes
                                       when its queue is empty. NULL till then */
    uint32_t events;                /* what epoll watches for it now */
};

/* What to do with a connection after answering a line. */
enum next_step { KEEP_OPEN, CLOSE_NOW };

/* Send what the output queue holds, as much as the socket takes right now.
 * On a non-blocking socket, send() never waits: it takes part of the bytes
 * (a partial write) or fails with EAGAIN when the socket buffer is full. What
 * is left stays queued for when select() reports the socket writable.
 * Returns -1 when the connection failed. */
static int flush_output(struct client *c)
{
    while (c->out_len > 0) {
        /* MSG_NOSIGNAL: no SIGPIPE from this call, even if not ignored. */
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0; /* the socket buffer is full: wait until writable */
        if (n < 0)
            return -1;
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
    free(c->out); /* all sent: an idle client holds no output buffer */
    c->out = NULL;
    c->out_cap = 0;
    return 0;
}

/* Answer with one line: append it and its '\n' to the client's output queue.
 * Nothing is sent here; flush_output() does that without ever blocking. */
static enum next_step reply(struct client *c, const char *line, size_t len)
{
    if (c->out_len + len + 1 > c->out_cap) {
        size_t cap = c->out_cap > 0 ? c->out_cap : 256;
        while (cap < c->out_len + len + 1)
            cap *= 2;
        char *out = realloc(c->out, cap);
        if (out == NULL) {
            perror("server: realloc");
            return CLOSE_NOW;
        }
        c->out = out;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, line, len);
    c->out[c->out_len + len] = '\n';
    c->out_len += len + 1;
    return KEEP_OPEN;
}

static enum next_step reply_text(struct client *c, const char *text)
{
    return reply(c, text, strlen(text));
}

static enum next_step send_greeting(struct client *c)
{
    char line[128];
    int len = snprintf(line, sizeof line, "hello chapter=%s pid=%d tid=%d port=%d",
                       CHAPTER, (int)getpid(), (int)gettid(), c->local_port);
    return reply(c, line, (size_t)len);
}

/* Milliseconds in "sleep <ms>": 0..MAX_SLEEP_MS in decimal, or -1. */
static long parse_millis(const char *text, size_t len)
{
    long ms = 0;
    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        ms = ms * 10 + (text[i] - '0');
    }
    return ms <= MAX_SLEEP_MS ? ms : -1;
}

/* "sleep <ms>" stands for slow work, such as a database call: the handler
 * blocks, and whatever else this process would do waits with it. */
static enum next_step handle_sleep(struct client *c, const char *arg, size_t len)
{
    long ms = parse_millis(arg, len);
    if (ms < 0)
        return reply_text(c, "error usage: sleep <ms> with 0 <= ms <= 10000");

    log_event("%s sleeps %ld ms", c->peer, ms);
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ; /* a signal woke us early: sleep the rest */

    char line[32];
    int n = snprintf(line, sizeof line, "slept %ld", ms);
    return reply(c, line, (size_t)n);
}

static int line_is(const char *line, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(line, word, len) == 0;
}

/* Answer one complete line: its '\n' and any '\r' before it are gone. Lines
 * may hold any byte, NUL included, so they are compared by length. */
static enum next_step handle_line(struct client *c, const char *line, size_t len)
{
    if (line_is(line, len, "quit") || line_is(line, len, "exit") || line_is(line, len, "q")) {
        reply_text(c, "bye");
        return CLOSE_NOW;
    }
    if (line_is(line, len, "sleep"))
        return handle_sleep(c, "", 0);
    if (len > 6 && memcmp(line, "sleep ", 6) == 0)
        return handle_sleep(c, line + 6, len - 6);
    return reply(c, line, len);
}

static enum next_step reject_long_line(struct client *c)
{
    reply_text(c, "error line too long (max 4096 bytes)");
    return CLOSE_NOW;
}

/* TCP carries a stream of bytes, not messages: one recv() may return half a
 * line, or three lines glued together (the "sticky packet" problem). So the
 * bytes collect in c->in, and every complete line is cut out at its '\n'.
 * What remains is the start of a line whose end has not arrived yet. */
static enum next_step handle_input(struct client *c)
{
    size_t start = 0;
    char *newline;
    while ((newline = memchr(c->in + start, '\n', c->in_len - start)) != NULL) {
        char *line = c->in + start;
        size_t len = (size_t)(newline - line);
        start += len + 1;
        if (len > 0 && line[len - 1] == '\r')
            len--; /* telnet and "nc -C" end lines with "\r\n" */
        if (len > MAX_LINE)
            return reject_long_line(c);
        if (handle_line(c, line, len) == CLOSE_NOW)
            return CLOSE_NOW;
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    if (c->in_len == IN_SIZE)
        return reject_long_line(c); /* the buffer is full and still no '\n' */
    return KEEP_OPEN;
}

/* ============================= Serving clients ============================= */

/* Append what the kernel has received from the client to c->in, which is
 * allocated here when it is needed: an idle client holds no input buffer.
 * Returns the byte count, 0 when the client has closed, -1 on error. */
static ssize_t receive(struct client *c)
{
    if (c->in == NULL && (c->in = malloc(IN_SIZE)) == NULL)
        return -1; /* errno is ENOMEM */
    ssize_t n;
    do
        n = recv(c->fd, c->in + c->in_len, IN_SIZE - c->in_len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        c->in_len += (size_t)n;
    return n;
}

/* Give the input buffer back once no partial line is waiting in it. */
static void release_input(struct client *c)
{
    if (c->in_len == 0) {
        free(c->in);
        c->in = NULL;
    }
}

/* Take a connection from the kernel's queue and fill in c. Returns -1 when
 * accept4() failed (EAGAIN: no connection is waiting any more). */
static int accept_client(int listen_fd, struct client *c)
{
    struct sockaddr_in peer, local;
    socklen_t peer_len = sizeof peer, local_len = sizeof local;

    /* accept4() sets O_NONBLOCK on the new socket in the same call; 03
     * needed a separate fcntl() for it. */
    c->fd = accept4(listen_fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c->fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
            errno != ECONNABORTED && errno != EMFILE && errno != ENFILE)
            perror("server: accept4");
        return -1;
    }
    getsockname(c->fd, (struct sockaddr *)&local, &local_len);
    c->local_port = ntohs(local.sin_port);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, ntohs(peer.sin_port));
    c->in = NULL;
    c->in_len = 0;
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    c->leaving = NULL;
    c->events = 0;
    log_event("connect %s (fd %d)", c->peer, c->fd);
    return 0;
}

/* shutdown(SHUT_WR) first: it pushes out the replies still queued, then a
 * FIN. A bare close() while the client's bytes sit unread in our receive
 * queue makes the kernel drop what it has not sent yet and send RST, so a
 * client that is still sending would never see our last words (the error
 * about its too long line, say). */
static void close_client(struct client *c, const char *why)
{
    shutdown(c->fd, SHUT_WR);
    close(c->fd);
    log_event("disconnect %s: %s", c->peer, why);
}

/* ============================== The epoll loop ============================= */

static int epoll_fd;

/* Every connected client, found by its descriptor; NULL where none. Sized
 * at start by the descriptor limit: no descriptor can be above it. */
static struct client **clients;
static int clients_size;
static int client_count;
static int listeners[MAX_PORTS];

/* One descriptor kept open for the day they run out: see shed_connection. */
static int spare_fd = -1;

/* Register the client with epoll: from now on the kernel watches its socket
 * and reports it when it is ready. */
static int add_client(struct client *c)
{
    c->events = EPOLLIN | EPOLLRDHUP | (opt.edge_triggered ? EPOLLET : 0);
    struct epoll_event ev = {.events = c->events, .data.fd = c->fd};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        perror("server: epoll_ctl(ADD)");
        return -1;
    }
    clients[c->fd] = c;
    client_count++;
    return 0;
}

/* close() also takes the descriptor out of epoll's interest list. */
static void drop_client(struct client *c, const char *why)
{
    clients[c->fd] = NULL;
    client_count--;
    close_client(c, why);
    free(c->in);
    free(c->out);
    free(c);
}

/* Tell epoll what the client waits for now: to be read, unless it is
 * leaving or its queue is over the high-water mark (backpressure); to be
 * written, only while replies are queued. Both rules are 03's watch_all().
 * epoll_ctl() runs only when that changes: a client that reads its replies
 * stays at EPOLLIN, with no epoll_ctl() per message. */
static int update_interest(struct client *c)
{
    uint32_t want = opt.edge_triggered ? EPOLLET : 0;
    if (c->leaving == NULL && c->out_len < OUTPUT_HIGH_WATER)
        want |= EPOLLIN | EPOLLRDHUP;
    if (c->out_len > 0)
        want |= EPOLLOUT;
    if (want == c->events)
        return 0;
    struct epoll_event ev = {.events = want, .data.fd = c->fd};
    c->events = want;
    return epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send what fits now; let the client go when that failed, or when it is
 * leaving and everything has gone out; otherwise update what epoll watches. */
static void flush_or_drop(struct client *c)
{
    if (flush_output(c) < 0)
        drop_client(c, strerror(errno));
    else if (c->leaving != NULL && c->out_len == 0)
        drop_client(c, c->leaving);
    else if (update_interest(c) < 0)
        drop_client(c, strerror(errno));
}

/* Past the cap, or on a descriptor beyond the table: tell the client and
 * let it go. */
static void refuse_client(struct client *c)
{
    reply_text(c, "error server busy");
    flush_output(c); /* a new socket's buffer is empty: this short line fits */
    close_client(c, "server busy");
    free(c->out);
    free(c);
}

/* Out of descriptors (EMFILE): the connection stays in the accept queue, so
 * the listener stays ready, and the loop would spin on a failing accept4().
 * A descriptor kept in reserve gets us out: give it up, accept the waiting
 * connection, tell it we are busy, close it, take the reserve back (libuv
 * does the same). Returns 0 if a connection was shed. */
static int shed_connection(int listen_fd)
{
    static const char busy[] = "error server busy\n";
    close(spare_fd);
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL);
        shutdown(fd, SHUT_WR);
        close(fd);
        log_event("out of descriptors: refused a connection");
    }
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd >= 0 ? 0 : -1;
}

/* The listener is ready: accept every waiting connection, until accept4()
 * says EAGAIN. Edge-triggered mode needs this (the next report comes only
 * with a new connection); level-triggered mode saves epoll_wait() calls. */
static void accept_new_clients(int listen_fd)
{
    for (;;) {
        struct client *c = malloc(sizeof *c);
        if (c == NULL) {
            perror("server: malloc");
            return;
        }
        if (accept_client(listen_fd, c) < 0) {
            int err = errno;
            free(c);
            if (err == EINTR || err == ECONNABORTED)
                continue;
            if ((err == EMFILE || err == ENFILE) && shed_connection(listen_fd) == 0)
                continue;
            return; /* EAGAIN: the queue is empty */
        }
        if (c->fd >= clients_size || client_count >= opt.max_clients) {
            refuse_client(c);
            continue;
        }
        if (add_client(c) < 0) {
            refuse_client(c);
            continue;
        }
        send_greeting(c);
        flush_or_drop(c);
    }
}

/* The client's socket is readable: read, queue an answer for every complete
 * line, then send what the socket takes. Level-triggered, one recv() is
 * enough: epoll_wait() reports the socket again while bytes remain.
 * Edge-triggered, the kernel reports only new arrivals, so read until EAGAIN
 * (at most READ_BUDGET times, so others get their turn). If bytes may remain
 * unread, the client is registered again: the kernel then re-checks the
 * socket and reports it on the next epoll_wait(). */
static void serve_ready_client(struct client *c)
{
    int budget = opt.edge_triggered ? READ_BUDGET : 1, drained = 0;
    while (budget-- > 0 && c->leaving == NULL && c->out_len < OUTPUT_HIGH_WATER) {
        ssize_t n = receive(c);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            drained = 1;
            break;
        }
        if (n < 0) {
            drop_client(c, strerror(errno)); /* ECONNRESET: the client reset */
            return;
        }
        if (n == 0)
            c->leaving = "client closed"; /* EOF, or a half-close: answer, then go */
        else if (handle_input(c) == CLOSE_NOW)
            c->leaving = "closed by server";
    }
    release_input(c);
    if (opt.edge_triggered && !drained && c->leaving == NULL)
        c->events = 0; /* makes update_interest() register it again */
    flush_or_drop(c);
}

/* One event: a ready client. EPOLLHUP and EPOLLERR come whether asked for or
 * not; the recv() or send() that follows reports what happened. */
static void handle_event(struct client *c, uint32_t events)
{
    int fd = c->fd;
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && (c->events & EPOLLIN))
        serve_ready_client(c);
    if (clients[fd] == c && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
        flush_or_drop(c); /* (it may have left just above) */
}

static int is_listener(int fd)
{
    for (int i = 0; i < opt.nports; i++)
        if (listeners[i] == fd)
            return 1;
    return 0;
}

/* One turn per epoll_wait(): the kernel hands back only the descriptors that
 * are ready, and for each what is ready. The work of a turn grows with the
 * number of ready descriptors, not with the number of connections. */
static void serve_forever(void)
{
    static struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int ready = epoll_wait(epoll_fd, events, MAX_EVENTS, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            perror("server: epoll_wait");
            exit(1);
        }
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (is_listener(fd))
                accept_new_clients(fd);
            else if (clients[fd] != NULL)
                handle_event(clients[fd], events[i].events);
        }
    }
}

/* ================================== Main =================================== */

/* The epoll instance, the client table, the spare descriptor, and every
 * listener registered. Exits on failure: there is nothing to serve with. */
static void set_up_epoll(void)
{
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    long limit = sysconf(_SC_OPEN_MAX); /* ulimit -n */
    if (limit < 0 || limit > (long)opt.max_clients + RESERVED_FDS)
        limit = (long)opt.max_clients + RESERVED_FDS;
    clients_size = (int)limit;
    clients = calloc((size_t)clients_size, sizeof *clients);
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (epoll_fd < 0 || clients == NULL || spare_fd < 0) {
        perror("server: setting up epoll");
        exit(1);
    }
    for (int i = 0; i < opt.nports; i++) {
        struct epoll_event ev = {.events = EPOLLIN | (opt.edge_triggered ? EPOLLET : 0),
                                 .data.fd = listeners[i]};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listeners[i], &ev) < 0) {
            perror("server: epoll_ctl(ADD listener)");
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    install_signal_handlers();
    for (int i = 0; i < opt.nports; i++) {
        listeners[i] = open_listener(opt.host, opt.ports[i]);
        if (listeners[i] < 0)
            return 1;
    }
    set_up_epoll();
    serve_forever();
}
