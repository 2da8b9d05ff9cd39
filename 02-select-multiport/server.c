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
 * The file reads top to bottom: configuration, command line, signals, the
 * listening sockets, the wire protocol, serving clients, the select loop, main.
 */
#define _GNU_SOURCE /* gettid() */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ============================== Configuration ============================== */

#define CHAPTER "02-select-multiport"

/* Chapter N listens on 9N00, so all chapters can run side by side; this one
 * on three consecutive ports by default, like the source article's 9991-9993. */
#define DEFAULT_PORT 9200
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

/* select() can only watch descriptors below FD_SETSIZE (1024). A thousand
 * clients, plus stdin/out/err and three listeners, stay below it, so the
 * default cap is what refuses clients, not the limit. */
#define DEFAULT_MAX_CLIENTS 1000

/* ============================== Command line =============================== */

static struct {
    const char *host;       /* an IPv4 address to bind */
    int ports[MAX_PORTS];   /* 0 asks the kernel for a free port */
    int nports;
    int max_clients;
    int quiet;              /* -q: no connect/disconnect log */
} opt = {"127.0.0.1", {0}, 0, DEFAULT_MAX_CLIENTS, 0};

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port]... (up to 3) [-m max-clients] [-q]\n");
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
    while ((c = getopt(argc, argv, "H:p:m:q")) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p':
            if (opt.nports == MAX_PORTS)
                usage();
            opt.ports[opt.nports++] = parse_number(optarg, 0, 65535);
            break;
        case 'm': opt.max_clients = parse_number(optarg, 1, 1000000); break;
        case 'q': opt.quiet = 1; break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    if (opt.nports == 0) /* no -p: the three default ports */
        for (int i = 0; i < MAX_PORTS; i++)
            opt.ports[opt.nports++] = DEFAULT_PORT + i;
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
    char in[IN_SIZE];               /* bytes received, not yet a whole line */
    size_t in_len;
};

/* What to do with a connection after answering a line. */
enum next_step { KEEP_OPEN, CLOSE_NOW };

/* Send all of buf. send() on a blocking socket may still send less than asked
 * (a signal, a full buffer), so loop until all of it is gone. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        /* MSG_NOSIGNAL: no SIGPIPE from this call, even if not ignored. */
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Answer with one line. Here the reply goes out at once, and send() blocks
 * while the client's receive buffer is full. The line and its '\n' are copied
 * together so that one send() carries both. */
static enum next_step reply(struct client *c, const char *line, size_t len)
{
    char out[MAX_LINE + 1];
    memcpy(out, line, len);
    out[len] = '\n';
    return send_all(c->fd, out, len + 1) == 0 ? KEEP_OPEN : CLOSE_NOW;
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

/* Append what the kernel has received from the client to c->in.
 * Returns the byte count, 0 when the client has closed, -1 on error. */
static ssize_t receive(struct client *c)
{
    ssize_t n;
    do
        n = recv(c->fd, c->in + c->in_len, IN_SIZE - c->in_len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        c->in_len += (size_t)n;
    return n;
}

/* Take a connection from the kernel's queue and fill in c. Returns -1 when
 * accept() failed; the caller simply tries again. */
static int accept_client(int listen_fd, struct client *c)
{
    struct sockaddr_in peer, local;
    socklen_t peer_len = sizeof peer, local_len = sizeof local;

    /* select() said a connection is waiting, so this does not block. */
    c->fd = accept(listen_fd, (struct sockaddr *)&peer, &peer_len);
    if (c->fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of descriptors or memory: the listener stays readable,
             * and retrying at once would spin at full CPU. Back off a
             * little, as nginx and HAProxy do (everyone waits with us). */
            perror("server: accept");
            nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
        } else if (errno != EINTR && errno != ECONNABORTED) {
            perror("server: accept");
        }
        return -1;
    }
    getsockname(c->fd, (struct sockaddr *)&local, &local_len);
    c->local_port = ntohs(local.sin_port);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, ntohs(peer.sin_port));
    c->in_len = 0;
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

/* ============================== The select loop ============================ */

/* Every connected client, found by its descriptor; NULL where none. */
static struct client *clients[FD_SETSIZE];
static int client_count;
static int listeners[MAX_PORTS];

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

/* Past the cap, or on a descriptor select() cannot watch: FD_SET() on a
 * descriptor >= FD_SETSIZE writes past the end of the fd_set (glibc's
 * _FORTIFY_SOURCE aborts instead). Tell the client and let it go. */
static void refuse_client(struct client *c)
{
    reply_text(c, "error server busy");
    close_client(c, "server busy");
    free(c);
}

static void accept_new_client(int listen_fd)
{
    struct client *c = malloc(sizeof *c);
    if (c == NULL) {
        perror("server: malloc");
        return;
    }
    if (accept_client(listen_fd, c) < 0) {
        free(c);
        return;
    }
    if (c->fd >= FD_SETSIZE || client_count >= opt.max_clients) {
        refuse_client(c);
        return;
    }
    add_client(c);
    if (send_greeting(c) == CLOSE_NOW)
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
    else if (handle_input(c) == CLOSE_NOW)
        drop_client(c, "closed by server");
}

/* Fill the set select() will watch: every listener and every client. It is
 * rebuilt on each turn because select() overwrites it with its answer.
 * Returns the highest descriptor, which select() needs plus one. */
static int watch_all(fd_set *readable)
{
    int max_fd = -1;
    FD_ZERO(readable);
    for (int i = 0; i < opt.nports; i++) {
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

/* One turn per select(): sleep until some socket is ready, then serve the
 * ready ones in order. Both scans cost O(number of descriptors), whether
 * one client is talking or all of them. */
static void serve_forever(void)
{
    for (;;) {
        fd_set readable;
        int max_fd = watch_all(&readable);
        if (select(max_fd + 1, &readable, NULL, NULL, NULL) < 0) {
            if (errno == EINTR)
                continue;
            perror("server: select");
            exit(1);
        }
        for (int i = 0; i < opt.nports; i++)
            if (FD_ISSET(listeners[i], &readable))
                accept_new_client(listeners[i]);
        for (int fd = 0; fd <= max_fd; fd++)
            if (clients[fd] != NULL && FD_ISSET(fd, &readable))
                serve_ready_client(clients[fd]);
    }
}

/* ================================== Main =================================== */

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    install_signal_handlers();
    for (int i = 0; i < opt.nports; i++) {
        listeners[i] = open_listener(opt.host, opt.ports[i]);
        if (listeners[i] < 0)
            return 1;
    }
    serve_forever();
}
