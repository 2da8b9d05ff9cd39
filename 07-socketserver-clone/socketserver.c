/*
 * 07-socketserver-clone/socketserver.c: Python's socketserver module, in C.
 *
 *     ss_serve_forever: poll(listener, wake pipe) -> get_request -> verify_request
 *                       -> process_request (the mix-in's: here, a thread, a child)
 *                          -> finish_request: handler setup, handle, finish
 *                          -> shutdown_request -> close_request
 *                       -> service_actions -> poll ...
 *
 * Each function below is one of Python's methods (socketserver.py, 3.11),
 * with the same name and the same order of calls, so the two files can be
 * read side by side. The earlier chapters come back as parts: chapter 01's
 * blocking server is the sync server, chapter 04's thread per connection the
 * threading mix-in, chapter 05's process per connection the forking one, and
 * the select()/epoll loops of 02-06 become one poll() in serve_forever.
 * Where this file does better than Python (shutdown wakes the loop at once,
 * shutdown from the loop's own thread fails instead of hanging, no reply is
 * lost at close), the comment says so.
 *
 * The file reads top to bottom: requests and errors, request handlers,
 * server types, the loop and shutdown, the threading mix-in, the forking
 * mix-in.
 */
#define _GNU_SOURCE /* accept4(), pipe2(), fopencookie(), F_DUPFD_CLOEXEC */
#include "socketserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* =========================== Requests and errors =========================== */

/* Python's handle_error() prints a traceback between two rules of 40 dashes;
 * the same rules here make the two outputs easy to compare. */
#define ERROR_RULE "----------------------------------------"

/* Milliseconds between now and a deadline on the monotonic clock (which no
 * clock change moves), rounded up so that poll() never wakes before it, and
 * 0 once it has passed. */
static int ms_until(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(deadline->tv_sec - now.tv_sec) * 1e3 +
                (double)(deadline->tv_nsec - now.tv_nsec) / 1e6;
    if (ms <= 0)
        return 0;
    return ms >= INT_MAX ? INT_MAX : (int)ms + 1;
}

/* The monotonic time seconds from now. */
static struct timespec deadline_after(double seconds)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double whole = (double)(long)seconds;
    t.tv_sec += (time_t)whole;
    t.tv_nsec += (long)((seconds - whole) * 1e9);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Seconds as poll()'s milliseconds, rounded up; negative means "no limit",
 * which poll() spells -1 (Python: select(timeout=None)). */
static int seconds_to_ms(double seconds)
{
    if (seconds < 0)
        return -1;
    double ms = seconds * 1e3;
    if (ms >= INT_MAX)
        return INT_MAX;
    int whole = (int)ms;
    return whole < ms ? whole + 1 : whole;
}

/* A blocking socket whose SO_RCVTIMEO or SO_SNDTIMEO expired fails with
 * EAGAIN, whose text ("Resource temporarily unavailable") hides that a
 * timeout is the cause. Python says "timed out" there; so do we. */
int ss_fail(struct ss_request *request, const char *what)
{
    int saved = errno;
    if (saved == EAGAIN || saved == EWOULDBLOCK)
        snprintf(request->error, sizeof request->error, "%s: timed out (%s)", what,
                 strerror(saved));
    else
        snprintf(request->error, sizeof request->error, "%s: %s", what, strerror(saved));
    errno = saved;
    return SS_ERROR;
}

/* bytes as Python's repr() shows them: b'\x00name' for an abstract Unix name. */
static void format_bytes(const char *bytes, size_t len, char *out, size_t size)
{
    size_t used = (size_t)snprintf(out, size, "b'");
    for (size_t i = 0; i < len && used < size; i++) {
        unsigned char c = (unsigned char)bytes[i];
        if (c == '\\' || c == '\'')
            used += (size_t)snprintf(out + used, size - used, "\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            used += (size_t)snprintf(out + used, size - used, "%c", c);
        else
            used += (size_t)snprintf(out + used, size - used, "\\x%02x", c);
    }
    if (used < size)
        snprintf(out + used, size - used, "'");
}

/* A Unix address: a path ('/tmp/sock'); an abstract name (its first byte
 * is NUL, Linux only); '' for an unbound stream peer, which accept() still
 * gives the family; None when recvfrom() gave no address at all. */
static void format_unix(const struct sockaddr_un *a, socklen_t len, char *out, size_t size)
{
    size_t header = offsetof(struct sockaddr_un, sun_path);
    size_t path_len = len > header ? len - header : 0;
    if (path_len > 0 && a->sun_path[0] == '\0')
        format_bytes(a->sun_path, path_len, out, size);
    else
        snprintf(out, size, "'%.*s'", (int)strnlen(a->sun_path, path_len), a->sun_path);
}

void ss_format_address(const struct sockaddr_storage *address, socklen_t len, char *out,
                       size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    if (size == 0)
        return;
    if (len == 0) {
        snprintf(out, size, "None");
    } else if (address->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)address;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(out, size, "('%s', %u)", ip, ntohs(a->sin_port));
    } else if (address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)address;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(out, size, "('%s', %u, %u, %u)", ip, ntohs(a->sin6_port),
                 (unsigned)ntohl(a->sin6_flowinfo), (unsigned)a->sin6_scope_id);
    } else if (address->ss_family == AF_UNIX) {
        format_unix((const struct sockaddr_un *)address, len, out, size);
    } else {
        snprintf(out, size, "(address family %d)", address->ss_family);
    }
}

/* Python's frame, with "where: call: reason" in place of the traceback. The
 * whole block is built first and written by one write(2): stdio would cut
 * it into several writes, and blocks from several threads could interleave.
 * BaseServer.handle_error(). */
static void base_handle_error(struct ss_server *s, struct ss_request *r)
{
    (void)s;
    char address[128], block[512];
    ss_format_address(&r->client_address, r->client_address_len, address, sizeof address);
    int len = snprintf(block, sizeof block,
                       ERROR_RULE "\nException occurred during processing of request from %s\n"
                                  "%s\n" ERROR_RULE "\n",
                       address, r->error[0] ? r->error : "(no reason recorded by ss_fail())");
    size_t n = len < (int)sizeof block ? (size_t)len : sizeof block - 1;
    while (write(STDERR_FILENO, block, n) < 0 && errno == EINTR)
        ;
}

/* ============================ Request handlers ============================= */

/* The three methods of a handler class. */
enum method { SETUP, HANDLE, FINISH };

/* Python looks a method up along the class's bases; a handler class here
 * leaves a slot NULL to inherit it. BaseRequestHandler's own methods do
 * nothing, so running off the end of the chain is a no-op. */
static int call_method(struct ss_handler *h, enum method m)
{
    for (const struct ss_handler_class *c = h->cls; c != NULL; c = c->base) {
        int (*fn)(struct ss_handler *) = m == SETUP    ? c->setup
                                         : m == HANDLE ? c->handle
                                                       : c->finish;
        if (fn != NULL)
            return fn(h);
    }
    return SS_OK;
}

/* The status that wins when two methods fail: SS_EXIT over SS_ERROR over
 * SS_OK, as a SystemExit outranks an ordinary exception. */
static int worst(int a, int b)
{
    if (a == SS_EXIT || b == SS_EXIT)
        return SS_EXIT;
    return a != SS_OK || b != SS_OK ? SS_ERROR : SS_OK;
}

/* BaseServer.finish_request() with BaseRequestHandler.__init__(): one
 * handler per request; setup(), then handle(), then finish() whatever
 * handle() did (Python's try/finally). A failed setup() runs neither, as
 * in Python. When both fail, the first reason is kept: the second is
 * usually a consequence of it. */
static int base_finish_request(struct ss_server *s, struct ss_request *r)
{
    struct ss_handler h = {.cls = s->RequestHandlerClass, .server = s, .request = r,
                           .client_address = &r->client_address, .connection = -1};
    int status = call_method(&h, SETUP);
    if (status != SS_OK)
        return status;
    status = call_method(&h, HANDLE);
    char first[sizeof r->error];
    memcpy(first, r->error, sizeof first);
    int finished = call_method(&h, FINISH);
    if (status != SS_OK)
        memcpy(r->error, first, sizeof first);
    return worst(status, finished);
}

const struct ss_handler_class ss_BaseRequestHandler = {.name = "BaseRequestHandler"};

/* StreamRequestHandler's class attributes, each from the nearest class in
 * the chain that sets it (0 means "not set here": Python's default). */
struct stream_attrs {
    double timeout;
    bool disable_nagle_algorithm;
    int rbufsize, wbufsize;
};

static struct stream_attrs stream_attrs(const struct ss_handler_class *c)
{
    struct stream_attrs a = {0, false, 0, 0};
    for (; c != NULL; c = c->base) {
        if (a.timeout == 0)
            a.timeout = c->timeout;
        a.disable_nagle_algorithm = a.disable_nagle_algorithm || c->disable_nagle_algorithm;
        if (a.rbufsize == 0)
            a.rbufsize = c->rbufsize;
        if (a.wbufsize == 0)
            a.wbufsize = c->wbufsize;
    }
    return a;
}

/* Python's _SocketWriter.write(): sendall(). A blocking send() may still
 * send less than asked, or be cut short by a signal (EINTR, or a short
 * count when part was already sent); either way we send the rest, so a
 * write is complete or has failed, never half done. MSG_NOSIGNAL: a client
 * that left makes send() fail with EPIPE instead of raising SIGPIPE. stdio
 * wants the count written, and 0 (not -1) on error, errno set. */
static ssize_t socket_writer_write(void *cookie, const char *buf, size_t size)
{
    int fd = (int)(intptr_t)cookie;
    size_t sent = 0;
    while (sent < size) {
        ssize_t n = send(fd, buf + sent, size - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return (ssize_t)sent;
        sent += (size_t)n;
    }
    return (ssize_t)sent;
}

/* wbufsize 0 (Python's default): every write goes to the socket at once.
 * fopencookie() makes a FILE whose writes call socket_writer_write(), so
 * fprintf() works on it; unbuffered, one fprintf() is one send loop. The
 * cookie is the descriptor itself: closing this FILE closes nothing, the
 * connection stays the request's (as Python's _SocketWriter does). */
static FILE *open_socket_writer(int fd)
{
    cookie_io_functions_t io = {.write = socket_writer_write};
    FILE *f = fopencookie((void *)(intptr_t)fd, "w", io);
    if (f != NULL)
        setvbuf(f, NULL, _IONBF, 0);
    return f;
}

/* A FILE on its own copy of the descriptor (Python's makefile()): each FILE
 * closes its copy, so rfile, wfile and the request never close one
 * descriptor twice (in a threaded server the second close could hit a
 * descriptor another thread has just opened). F_DUPFD_CLOEXEC is dup()
 * that keeps close-on-exec, so a program the handler runs inherits no
 * connection. bufsize > 0: fully buffered; glibc sizes the buffer itself
 * (st_blksize) when setvbuf() is given none, so the mode is what counts.
 * bufsize < 0: unbuffered (Python's bufsize 0). 0: stdio's default. */
static FILE *open_file(int fd, const char *mode, int bufsize)
{
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0)
        return NULL;
    FILE *f = fdopen(copy, mode);
    if (f == NULL) {
        int saved = errno;
        close(copy);
        errno = saved;
        return NULL;
    }
    if (bufsize > 0)
        setvbuf(f, NULL, _IOFBF, (size_t)bufsize);
    else if (bufsize < 0)
        setvbuf(f, NULL, _IONBF, 0);
    return f;
}

/* SO_RCVTIMEO and SO_SNDTIMEO: a recv() or send() that waits longer fails
 * with EAGAIN (Python's connection.settimeout() for both directions). */
static int set_timeouts(int fd, double seconds)
{
    time_t whole = (time_t)seconds;
    struct timeval tv = {whole, (suseconds_t)((seconds - (double)whole) * 1e6)};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
        return -1;
    return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* StreamRequestHandler.setup(). On failure nothing stays open: finish()
 * does not run after a failed setup(). */
static int stream_setup(struct ss_handler *h)
{
    struct stream_attrs a = stream_attrs(h->cls);
    struct ss_request *r = h->request;
    int family = h->server->address_family;
    h->connection = r->fd;
    if (a.timeout > 0 && set_timeouts(h->connection, a.timeout) < 0)
        return ss_fail(r, "setup: setsockopt(SO_RCVTIMEO)");
    /* Nagle's algorithm holds a small segment back until the previous one
     * is acknowledged. Only TCP has it: a Unix socket would say EOPNOTSUPP. */
    int one = 1;
    if (a.disable_nagle_algorithm && (family == AF_INET || family == AF_INET6) &&
        setsockopt(h->connection, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        return ss_fail(r, "setup: setsockopt(TCP_NODELAY)");
    h->rfile = open_file(h->connection, "r", a.rbufsize);
    if (h->rfile == NULL)
        return ss_fail(r, "setup: fdopen(rfile)");
    h->wfile = a.wbufsize == 0 ? open_socket_writer(h->connection)
                               : open_file(h->connection, "w", a.wbufsize);
    if (h->wfile == NULL) {
        ss_fail(r, "setup: fdopen(wfile)");
        fclose(h->rfile);
        h->rfile = NULL;
        return SS_ERROR;
    }
    return SS_OK;
}

/* StreamRequestHandler.finish(). The last flush may fail because the
 * client has gone (EPIPE, ECONNRESET); Python ignores every socket error
 * there (bpo-14574), and so do we: the request is over either way. */
static int stream_finish(struct ss_handler *h)
{
    if (h->wfile != NULL) {
        fflush(h->wfile);
        fclose(h->wfile);
        h->wfile = NULL;
    }
    if (h->rfile != NULL) {
        fclose(h->rfile);
        h->rfile = NULL;
    }
    return SS_OK;
}

const struct ss_handler_class ss_StreamRequestHandler = {
    .name = "StreamRequestHandler", .base = &ss_BaseRequestHandler,
    .setup = stream_setup, .finish = stream_finish};

/* DatagramRequestHandler.setup(): the packet becomes rfile (a FILE over
 * memory; glibc accepts an empty one), and wfile collects the reply in
 * memory (open_memstream), to be sent as one datagram by finish(). */
static int datagram_setup(struct ss_handler *h)
{
    struct ss_request *r = h->request;
    h->connection = r->fd; /* the server's own socket: replies leave from it */
    h->rfile = fmemopen(r->packet, r->packet_len, "r");
    if (h->rfile == NULL)
        return ss_fail(r, "setup: fmemopen(rfile)");
    h->wfile = open_memstream(&h->reply, &h->reply_len);
    if (h->wfile == NULL) {
        ss_fail(r, "setup: open_memstream(wfile)");
        fclose(h->rfile);
        h->rfile = NULL;
        return SS_ERROR;
    }
    return SS_OK;
}

/* A Unix datagram sender that never bound a path has no address: the
 * kernel gives none (length 0), and there is nowhere to reply. Python
 * fails there too (client_address is None, sendto() raises). */
static bool has_reply_address(const struct ss_request *r)
{
    if (r->client_address_len == 0)
        return false;
    return r->client_address.ss_family != AF_UNIX ||
           r->client_address_len > offsetof(struct sockaddr_un, sun_path);
}

/* DatagramRequestHandler.finish(): the reply is sent ALWAYS, even empty:
 * a handler that wrote nothing sends a 0-byte datagram, as Python does. */
static int datagram_finish(struct ss_handler *h)
{
    struct ss_request *r = h->request;
    int status = SS_OK;
    if (h->wfile != NULL && fclose(h->wfile) != 0)
        status = ss_fail(r, "finish: fclose(wfile)");
    h->wfile = NULL;
    if (h->rfile != NULL)
        fclose(h->rfile);
    h->rfile = NULL;
    if (status == SS_OK && !has_reply_address(r)) {
        errno = EDESTADDRREQ;
        status = ss_fail(r, "finish: sendto (the sender has no address)");
    } else if (status == SS_OK) {
        ssize_t n;
        do
            n = sendto(h->connection, h->reply, h->reply_len, MSG_NOSIGNAL,
                       (const struct sockaddr *)&r->client_address, r->client_address_len);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            status = ss_fail(r, "finish: sendto");
    }
    free(h->reply);
    h->reply = NULL;
    h->reply_len = 0;
    return status;
}

const struct ss_handler_class ss_DatagramRequestHandler = {
    .name = "DatagramRequestHandler", .base = &ss_BaseRequestHandler,
    .setup = datagram_setup, .finish = datagram_finish};

/* Python's rfile.readline(size), bytes and all: getc() takes bytes from
 * stdio's buffer, which refills with one read() at a time, so a line split
 * across segments or many lines in one segment (the sticky-packet lesson)
 * come out whole. A longer line comes back in pieces of size - 1 bytes,
 * the rest staying in rfile for the next call. A signal (EINTR) before the
 * first byte returns -1 with errno EINTR, as stdio's own calls do: that is
 * how a handler blocked here learns that SIGTERM asked the server to stop
 * (in Python the signal handler's exception would end the read). Within a
 * line we read on (PEP 475), since returning would lose the bytes read. On
 * any other error they are lost, as when Python's readline() raises. */
ssize_t ss_readline(FILE *rfile, char *buf, size_t size)
{
    if (size < 2) {
        errno = EINVAL; /* no room for one byte and the NUL */
        return -1;
    }
    size_t len = 0;
    flockfile(rfile); /* one lock for the whole line, not one per byte */
    while (len < size - 1) {
        int c = getc_unlocked(rfile);
        if (c == EOF && ferror_unlocked(rfile)) {
            int error = errno;
            clearerr_unlocked(rfile); /* the next call may read again */
            if (error == EINTR && len > 0)
                continue;
            funlockfile(rfile);
            errno = error;
            return -1;
        }
        if (c == EOF)
            break;
        buf[len++] = (char)c;
        if (c == '\n')
            break;
    }
    funlockfile(rfile);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Python: wfile.fileno(). A datagram handler's wfile is memory, and a base
 * handler has none: Python raises there; we return -1 with EBADF. */
int ss_handler_fileno(const struct ss_handler *h)
{
    if (h->wfile == NULL || h->server->socket_type != SOCK_STREAM) {
        errno = EBADF;
        return -1;
    }
    return h->connection;
}

/* ============================== Server types =============================== */

/* Out of descriptors or memory, accept() fails at once while the client
 * stays in the queue, so poll() reports the listener ready again at once
 * (it is level-triggered): the loop would spin at full CPU. Python does
 * spin there. We back off instead, as chapter 04 does: wait 100 ms, a tenth
 * of the CPU nothing costs, yet short enough that a client is served soon
 * after a descriptor frees up. The wait is on the wake pipe, so shutdown
 * still ends it at once. (Chapter 06 sheds the waiting client with a spare
 * descriptor instead; a library would need one per server, and making the
 * client wait is closer to what Python's clients see.) */
#define OUT_OF_RESOURCES_BACKOFF_MS 100

static void back_off_if_exhausted(struct ss_server *s, int error)
{
    if (error != EMFILE && error != ENFILE && error != ENOBUFS && error != ENOMEM)
        return;
    struct pollfd wake = {.fd = s->wake[0], .events = POLLIN};
    poll(&wake, 1, OUT_OF_RESOURCES_BACKOFF_MS);
}

/* TCPServer.server_bind(). SO_REUSEADDR lets a restarted server bind while
 * its old connections sit in TIME_WAIT; SO_REUSEPORT lets several sockets
 * share the port, and only IP has it (Linux 6.12.9 refuses it on Unix
 * sockets, gh-128916). getsockname() reads back what bind() chose: the
 * real port for port 0. */
static int base_server_bind(struct ss_server *s)
{
    int one = 1;
    if (s->allow_reuse_address &&
        setsockopt(s->socket, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        return SS_ERROR;
    if (s->allow_reuse_port && (s->address_family == AF_INET || s->address_family == AF_INET6) &&
        setsockopt(s->socket, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        return SS_ERROR;
    if (bind(s->socket, (struct sockaddr *)&s->server_address, s->server_address_len) < 0)
        return SS_ERROR;
    s->server_address_len = sizeof s->server_address;
    if (getsockname(s->socket, (struct sockaddr *)&s->server_address, &s->server_address_len) < 0)
        return SS_ERROR;
    return SS_OK;
}

/* TCPServer.server_activate(): listen(). The backlog is only the queue of
 * connections the kernel completed and we have not accepted yet; it limits
 * nothing else (Python's 5 is small: a burst of clients beyond it sees its
 * SYNs dropped and retried a second later). */
static int stream_server_activate(struct ss_server *s)
{
    return listen(s->socket, s->request_queue_size) < 0 ? SS_ERROR : SS_OK;
}

/* UDPServer.server_activate(): a datagram socket has no connections to
 * queue, so nothing to do. */
static int datagram_server_activate(struct ss_server *s)
{
    (void)s;
    return SS_OK;
}

/* TCPServer.get_request(): accept(). accept4(SOCK_CLOEXEC) marks the new
 * descriptor close-on-exec in the same call, so a program started by
 * another thread between the two calls could not inherit it. */
static int stream_get_request(struct ss_server *s, struct ss_request *r)
{
    r->client_address_len = sizeof r->client_address;
    r->fd = accept4(s->socket, (struct sockaddr *)&r->client_address, &r->client_address_len,
                    SOCK_CLOEXEC);
    if (r->fd < 0) {
        back_off_if_exhausted(s, errno);
        return SS_ERROR;
    }
    return SS_OK;
}

/* UDPServer.get_request(): one datagram is one request, and the request is
 * (packet, the server's socket). recvfrom() silently cuts a datagram longer
 * than max_packet_size, as Python's does. MSG_DONTWAIT: poll() may report
 * a datagram the kernel then drops (bad checksum), and a blocking recvfrom()
 * would then hang the loop (select(2), BUGS). */
static int datagram_get_request(struct ss_server *s, struct ss_request *r)
{
    size_t size = s->max_packet_size > 0 ? s->max_packet_size : 1;
    r->packet = malloc(size);
    if (r->packet == NULL) {
        back_off_if_exhausted(s, ENOMEM);
        return SS_ERROR;
    }
    r->client_address_len = sizeof r->client_address;
    ssize_t n = recvfrom(s->socket, r->packet, s->max_packet_size, MSG_DONTWAIT,
                         (struct sockaddr *)&r->client_address, &r->client_address_len);
    if (n < 0) {
        free(r->packet);
        r->packet = NULL;
        return SS_ERROR;
    }
    /* Keep only what arrived: a thread or child holds the packet while it
     * works, and most datagrams are far shorter than 8 KiB. */
    unsigned char *shrunk = realloc(r->packet, n > 0 ? (size_t)n : 1);
    if (shrunk != NULL)
        r->packet = shrunk;
    r->packet_len = (size_t)n;
    r->fd = s->socket;
    return SS_OK;
}

/* BaseServer.verify_request(): accept everyone. A program overrides it to
 * refuse (the course's server enforces -m max-clients here). */
static bool base_verify_request(struct ss_server *s, struct ss_request *r)
{
    (void)s;
    (void)r;
    return true;
}

/* BaseServer.process_request(), the synchronous one: serve the request
 * here, in the loop, then end it. If finish_request() fails, the loop
 * reports it and shuts the request down (as Python's exception would skip
 * the shutdown_request() below and land in _handle_request_noblock()). */
static int base_process_request(struct ss_server *s, struct ss_request *r)
{
    int status = s->ops.finish_request(s, r);
    if (status != SS_OK)
        return status;
    s->ops.shutdown_request(s, r);
    return SS_OK;
}

/* BaseServer's hooks that do nothing until a mix-in or program fills them. */
static void base_handle_timeout(struct ss_server *s)
{
    (void)s;
}

static void base_service_actions(struct ss_server *s)
{
    (void)s;
}

/* A lingering close. Python's shutdown_request() is shutdown(SHUT_WR) then
 * close(). But a close() while the client's bytes sit unread in our receive
 * queue makes the kernel send RST and throw away whatever of our replies it
 * has not sent yet: a client that sent 200 kB of lines and then "quit" may
 * never see its last replies. So after SHUT_WR (our FIN goes out after the
 * queued replies) we read and discard until the client closes too, and
 * close() only then, with nothing unread. Bounded, because a client may
 * never close: 2 s and 1 MiB at most, enough for a client to read its
 * replies and leave. The cost: the thread (or child) serving the request
 * waits that long at most; in the sync server, and for a client that
 * verify_request() refused, that is the loop, so every other client waits
 * with it. A client that closes promptly costs one recv() returning 0. */
#define LINGER_MS 2000
#define LINGER_BYTES (1024 * 1024)

static void discard_until_eof(int fd)
{
    char sink[16 * 1024]; /* read in 16 KiB bites: 64 calls for the 1 MiB bound */
    size_t total = 0;
    struct timespec deadline = deadline_after(LINGER_MS / 1e3);
    while (total < LINGER_BYTES) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, ms_until(&deadline));
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return; /* the time is up (or poll failed): give up */
        ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return; /* the client closed (EOF) or reset */
        if (n > 0)
            total += (size_t)n;
    }
}

/* TCPServer.shutdown_request(), with the lingering close above. shutdown()
 * fails (ENOTCONN) when the client has reset: there is nothing to wait for. */
static void stream_shutdown_request(struct ss_server *s, struct ss_request *r)
{
    if (r->fd >= 0 && shutdown(r->fd, SHUT_WR) == 0)
        discard_until_eof(r->fd);
    s->ops.close_request(s, r);
}

/* TCPServer.close_request(). Idempotent: the descriptor becomes -1. */
static void stream_close_request(struct ss_server *s, struct ss_request *r)
{
    (void)s;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

/* UDPServer.shutdown_request(): no connection to shut down. */
static void datagram_shutdown_request(struct ss_server *s, struct ss_request *r)
{
    s->ops.close_request(s, r);
}

/* UDPServer.close_request(). The socket is the server's and stays open;
 * what ends with the request is its packet, which Python's garbage
 * collector would free. Ownership rule of this library: close_request()
 * releases a request (its connection, or its packet). */
static void datagram_close_request(struct ss_server *s, struct ss_request *r)
{
    (void)s;
    free(r->packet);
    r->packet = NULL;
    r->packet_len = 0;
}

/* TCPServer.server_close(). Idempotent: the socket becomes -1, which is
 * what ss_fileno() then returns (Python: fileno() == -1). */
static void base_server_close(struct ss_server *s)
{
    if (s->socket >= 0)
        close(s->socket);
    s->socket = -1;
}

int ss_fileno(const struct ss_server *s)
{
    return s->socket;
}

/* The methods every server type shares; each type then changes a few. */
#define BASE_OPS                                                                        \
    .server_bind = base_server_bind, .verify_request = base_verify_request,             \
    .process_request = base_process_request, .finish_request = base_finish_request,    \
    .handle_error = base_handle_error, .handle_timeout = base_handle_timeout,          \
    .service_actions = base_service_actions, .server_close = base_server_close

#define STREAM_OPS                                                                      \
    BASE_OPS, .server_activate = stream_server_activate, .get_request = stream_get_request, \
    .shutdown_request = stream_shutdown_request, .close_request = stream_close_request

#define DATAGRAM_OPS                                                                    \
    BASE_OPS, .server_activate = datagram_server_activate,                             \
    .get_request = datagram_get_request, .shutdown_request = datagram_shutdown_request, \
    .close_request = datagram_close_request

/* Python's request_queue_size (5 in 3.11-3.14; 3.15 uses SOMAXCONN). */
#define REQUEST_QUEUE_SIZE 5
/* Python's UDPServer.max_packet_size: longer datagrams are cut. */
#define MAX_PACKET_SIZE 8192

/* UnixStreamServer derives from TCPServer and UnixDatagramServer from
 * UDPServer: only the family differs. */
const struct ss_server_type ss_TCPServer = {
    "TCPServer", AF_INET, SOCK_STREAM, REQUEST_QUEUE_SIZE, MAX_PACKET_SIZE, {STREAM_OPS}};
const struct ss_server_type ss_UDPServer = {
    "UDPServer", AF_INET, SOCK_DGRAM, REQUEST_QUEUE_SIZE, MAX_PACKET_SIZE, {DATAGRAM_OPS}};
const struct ss_server_type ss_UnixStreamServer = {
    "UnixStreamServer", AF_UNIX, SOCK_STREAM, REQUEST_QUEUE_SIZE, MAX_PACKET_SIZE, {STREAM_OPS}};
const struct ss_server_type ss_UnixDatagramServer = {
    "UnixDatagramServer", AF_UNIX, SOCK_DGRAM, REQUEST_QUEUE_SIZE, MAX_PACKET_SIZE,
    {DATAGRAM_OPS}};

/* The address to bind. IP: a numeric address ("" or NULL: every address,
 * as Python's ""; "localhost" as Python resolves it). Unix: a path, or
 * "@name" for a name in Linux's abstract namespace (Python's b"\0name"),
 * which has no file and vanishes with the socket. */
static int parse_address(struct ss_server *s, const char *address, int port)
{
    struct sockaddr_storage *a = &s->server_address;
    if (s->address_family == AF_UNIX) {
        struct sockaddr_un *un = (struct sockaddr_un *)a;
        size_t len = address != NULL ? strlen(address) : 0;
        if (len == 0 || len >= sizeof un->sun_path) {
            errno = len == 0 ? EINVAL : ENAMETOOLONG;
            return SS_ERROR;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, address, len);
        if (address[0] == '@')
            un->sun_path[0] = '\0'; /* abstract: no NUL at the end, the length says */
        s->server_address_len =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (address[0] != '@'));
        return SS_OK;
    }
    if (address == NULL || address[0] == '\0')
        address = s->address_family == AF_INET6 ? "::" : "0.0.0.0";
    else if (strcmp(address, "localhost") == 0)
        address = s->address_family == AF_INET6 ? "::1" : "127.0.0.1";
    if (port < 0 || port > 65535) {
        errno = EINVAL;
        return SS_ERROR;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)a;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)a;
    void *ip = s->address_family == AF_INET6 ? (void *)&in6->sin6_addr : (void *)&in->sin_addr;
    if (inet_pton(s->address_family, address, ip) != 1) {
        errno = EINVAL; /* not a numeric address of this family */
        return SS_ERROR;
    }
    a->ss_family = (sa_family_t)s->address_family;
    if (s->address_family == AF_INET6) {
        in6->sin6_port = htons((uint16_t)port);
        s->server_address_len = sizeof *in6;
    } else {
        in->sin_port = htons((uint16_t)port);
        s->server_address_len = sizeof *in;
    }
    return SS_OK;
}

/* The class attributes, copied so that a program can change them on its
 * own instance (Python: self.allow_reuse_address = True). The mix-ins'
 * attributes live on every server; only the forking one changes a default
 * (timeout 300 s, used by handle_request() alone). */
static void copy_attributes(struct ss_server *s, const struct ss_mixin *mixin,
                            const struct ss_server_type *type)
{
    s->address_family = type->address_family;
    s->socket_type = type->socket_type;
    s->request_queue_size = type->request_queue_size;
    s->allow_reuse_address = false;
    s->allow_reuse_port = false;
    s->max_packet_size = type->max_packet_size;
    s->timeout = mixin == &ss_ForkingMixIn ? SS_FORKING_TIMEOUT : -1;
    s->daemon_threads = false;
    s->block_on_close = true;
    s->max_children = SS_MAX_CHILDREN;
}

/* The methods in force: the type's, then each slot the mix-in fills
 * written over them. Writing the mix-in LAST is what Python's "the mix-in
 * comes first in the bases" means: in class ThreadingTCPServer(
 * ThreadingMixIn, TCPServer), method lookup finds the mix-in's
 * process_request() before TCPServer's. The mix-in reaches the type's
 * method (Python's super()) through s->type->ops. */
static void install_methods(struct ss_server *s)
{
    s->ops = s->type->ops;
    const struct ss_server_ops *m = &s->mixin->ops;
#define MIXIN_SLOT(slot) if (m->slot != NULL) s->ops.slot = m->slot
    MIXIN_SLOT(server_bind);
    MIXIN_SLOT(server_activate);
    MIXIN_SLOT(get_request);
    MIXIN_SLOT(verify_request);
    MIXIN_SLOT(process_request);
    MIXIN_SLOT(finish_request);
    MIXIN_SLOT(handle_error);
    MIXIN_SLOT(handle_timeout);
    MIXIN_SLOT(service_actions);
    MIXIN_SLOT(shutdown_request);
    MIXIN_SLOT(close_request);
    MIXIN_SLOT(server_close);
#undef MIXIN_SLOT
}

int ss_server_bind(struct ss_server *s)
{
    return s->ops.server_bind(s);
}

int ss_server_activate(struct ss_server *s)
{
    return s->ops.server_activate(s);
}

/* The method in force (the mix-in's: it waits per block_on_close), then
 * what only the library owns: the wake pipe, and the record of children.
 * The pipe's write end becomes -1 first, so that a signal handler calling
 * ss_request_shutdown() from now on writes nowhere. Children not reaped
 * yet (block_on_close false) are forgotten: init adopts them when this
 * process exits. */
void ss_server_close(struct ss_server *s)
{
    s->ops.server_close(s);
    for (int i = 1; i >= 0; i--) {
        int fd = s->wake[i];
        s->wake[i] = -1;
        if (fd >= 0)
            close(fd);
    }
    free(s->active_children);
    s->active_children = NULL;
    s->n_children = 0;
}

/* BaseServer.__init__ and TCPServer.__init__. The methods go in first, so
 * that ss_server_close() works whatever fails later. The wake pipe is
 * non-blocking at both ends: ss_request_shutdown() must never block in a
 * signal handler, and the loop empties the pipe until EAGAIN. */
int ss_server_init(struct ss_server *s, const struct ss_mixin *mixin,
                   const struct ss_server_type *type, const char *address, int port,
                   const struct ss_handler_class *handler, bool bind_and_activate)
{
    if (mixin == NULL)
        mixin = &ss_SyncMixIn; /* no mix-in: the plain, synchronous server */
    memset(s, 0, sizeof *s);
    s->type = type;
    s->mixin = mixin;
    s->RequestHandlerClass = handler;
    s->socket = s->wake[0] = s->wake[1] = -1;
    install_methods(s);
    copy_attributes(s, mixin, type);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->threads_lock, NULL);
    pthread_cond_init(&s->shut_down, NULL);

    if (parse_address(s, address, port) != SS_OK)
        return SS_ERROR;
    if (pipe2(s->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        s->wake[0] = s->wake[1] = -1;
        return SS_ERROR;
    }
    s->socket = socket(s->address_family, s->socket_type | SOCK_CLOEXEC, 0);
    if (s->socket < 0 ||
        (bind_and_activate && (ss_server_bind(s) != SS_OK || ss_server_activate(s) != SS_OK))) {
        int saved = errno; /* bpo-22435: a failed bind must not leak the socket */
        ss_server_close(s);
        errno = saved;
        return SS_ERROR;
    }
    return SS_OK;
}

/* ========================== The loop and shutdown ========================== */

/* The flag is shared between the loop, other threads and signal handlers.
 * The header declares it volatile sig_atomic_t (the type a signal handler
 * may store to); the __atomic built-ins add what threads need: the store is
 * seen by the other thread, in order, and ThreadSanitizer knows it. */
static bool shutdown_is_requested(struct ss_server *s)
{
    return __atomic_load_n(&s->shutdown_requested, __ATOMIC_SEQ_CST) != 0;
}

/* The half of shutdown() a signal handler may do: two async-signal-safe
 * steps, an atomic store and a write(2). The byte makes the loop's poll()
 * return now instead of after poll_interval. A full pipe (EAGAIN) already
 * holds a byte, which is all it takes. errno is the interrupted code's. */
void ss_request_shutdown(struct ss_server *s)
{
    int saved = errno;
    __atomic_store_n(&s->shutdown_requested, 1, __ATOMIC_SEQ_CST);
    int fd = s->wake[1];
    if (fd >= 0 && write(fd, "x", 1) < 0) {
        /* EAGAIN: the loop has a byte to wake it already */
    }
    errno = saved;
}

/* Empty the wake pipe, so that the next poll() sleeps again. */
static void drain_wake_pipe(struct ss_server *s)
{
    char bytes[64];
    while (read(s->wake[0], bytes, sizeof bytes) > 0)
        ;
}

/* BaseServer._handle_request_noblock(): one request, from get_request() to
 * its end. get_request() errors are silent, as in Python: a client that
 * reset before accept() is no news. The request lives on this stack; once
 * process_request() returned SS_OK it has been served, or handed to a
 * thread or a child which ends it. */
static int handle_request_noblock(struct ss_server *s)
{
    struct ss_request r;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    if (s->ops.get_request(s, &r) != SS_OK)
        return SS_OK;
    if (!s->ops.verify_request(s, &r)) {
        s->ops.shutdown_request(s, &r);
        return SS_OK;
    }
    int status = s->ops.process_request(s, &r);
    if (status == SS_ERROR)
        s->ops.handle_error(s, &r); /* an Exception: report it, serve on */
    if (status != SS_OK)
        s->ops.shutdown_request(s, &r); /* SS_EXIT too, before the loop ends */
    return status;
}

/* The loop's entry and exit, under the lock: Python's Event is a mutex and
 * a condition variable too. */
static void loop_starts(struct ss_server *s)
{
    pthread_mutex_lock(&s->lock);
    s->is_shut_down = false;
    s->serving = true;
    s->serving_thread = pthread_self();
    pthread_mutex_unlock(&s->lock);
}

static void loop_ends(struct ss_server *s)
{
    drain_wake_pipe(s);
    __atomic_store_n(&s->shutdown_requested, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&s->lock);
    s->serving = false;
    s->is_shut_down = true;
    pthread_cond_broadcast(&s->shut_down);
    pthread_mutex_unlock(&s->lock);
}

/* BaseServer.serve_forever(). poll() is select() without FD_SETSIZE (it
 * takes an array, so a listener past descriptor 1023 is fine) and without
 * epoll's extra descriptor: for two descriptors it is the simplest call.
 * It watches the listener and the wake pipe. The flag is checked before
 * each poll() and again right after it (bpo-35017: a shutdown that arrives
 * while poll() waits must not let one more request in). A flag set before
 * the loop starts ends it at once; the flag is cleared only as the loop
 * ends (Python's semantics, which test_shutdown relies on). */
int ss_serve_forever(struct ss_server *s, double poll_interval)
{
    int status = SS_OK;
    int timeout_ms = seconds_to_ms(poll_interval);
    struct pollfd fds[2] = {{.fd = s->socket, .events = POLLIN},
                            {.fd = s->wake[0], .events = POLLIN}};
    loop_starts(s);
    while (!shutdown_is_requested(s)) {
        int ready = poll(fds, 2, timeout_ms);
        if (shutdown_is_requested(s))
            break;
        if (ready < 0 && errno == EINTR)
            continue; /* a signal: its handler may have asked to stop */
        if (ready < 0) {
            status = SS_ERROR; /* EINVAL, ENOMEM: Python's select() would raise */
            break;
        }
        if (fds[1].revents != 0)
            drain_wake_pipe(s);
        if (fds[0].revents != 0 && handle_request_noblock(s) == SS_EXIT) {
            status = SS_EXIT;
            break;
        }
        s->ops.service_actions(s);
    }
    int saved = errno;
    loop_ends(s);
    errno = saved;
    return status;
}

/* BaseServer.handle_request(): wait for one request at most s->timeout
 * seconds, in several poll() calls if a signal wakes it early. Only the
 * listener is watched, as in Python: shutdown() is serve_forever's. */
int ss_handle_request(struct ss_server *s)
{
    struct timespec deadline = deadline_after(s->timeout >= 0 ? s->timeout : 0);
    for (;;) {
        struct pollfd p = {.fd = s->socket, .events = POLLIN};
        int ready = poll(&p, 1, s->timeout < 0 ? -1 : ms_until(&deadline));
        if (ready > 0)
            return handle_request_noblock(s);
        if (ready < 0 && errno != EINTR)
            return SS_ERROR;
        if (s->timeout >= 0 && ms_until(&deadline) == 0) {
            s->ops.handle_timeout(s);
            return SS_OK;
        }
    }
}

/* BaseServer.shutdown(): ask, then wait until the loop has ended. Python
 * hangs forever when the loop's own thread calls it (a sync handler, or a
 * signal handler on the main thread): it waits for an event only the loop
 * it sits in can set. Here that call still asks, and returns EDEADLK at
 * once, as pthread_join() on itself does; the loop ends after the request. */
int ss_shutdown(struct ss_server *s)
{
    pthread_mutex_lock(&s->lock);
    bool own_loop = s->serving && pthread_equal(s->serving_thread, pthread_self());
    pthread_mutex_unlock(&s->lock);
    ss_request_shutdown(s);
    if (own_loop)
        return EDEADLK;
    pthread_mutex_lock(&s->lock);
    while (!s->is_shut_down)
        pthread_cond_wait(&s->shut_down, &s->lock);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

const struct ss_mixin ss_SyncMixIn = {.name = "SyncMixIn"};

/* =========================== The threading mix-in ========================== */

/* A library cannot know how deep its handlers go: 1 MiB of stack is four
 * times chapter 04's 256 KiB (room for stdio and the sanitizers), and an
 * eighth of glibc's 8 MiB default, so a thousand threads reserve 1 GiB of
 * address space instead of 8. */
#define THREAD_STACK_SIZE (1024 * 1024)

/* One request's thread. The thread owns the request copy; a tracked thread
 * stays on s->threads until joined, and only the joiner frees it. */
struct ss_thread {
    pthread_t id;
    bool tracked;          /* joined by server_close(), else detached */
    bool done;             /* set by the thread as it ends, under threads_lock */
    struct ss_server *server;
    struct ss_request request;
    struct ss_thread *next;
};

/* ThreadingMixIn.process_request_thread(): serve, report an Exception, and
 * ALWAYS end the request. SS_EXIT ends this thread only (Python: SystemExit
 * in a thread stops that thread). */
static void *request_thread(void *arg)
{
    struct ss_thread *t = arg;
    struct ss_server *s = t->server;
    int status = s->ops.finish_request(s, &t->request);
    if (status == SS_ERROR)
        s->ops.handle_error(s, &t->request);
    s->ops.shutdown_request(s, &t->request);
    /* The lock orders all this thread did before server_close(), which
     * takes it too (a datagram reply uses the server's socket, which
     * server_close() closes). A tracked thread is then the joiner's to
     * free; a detached one frees itself. */
    pthread_mutex_lock(&s->threads_lock);
    t->done = true;
    bool tracked = t->tracked;
    pthread_mutex_unlock(&s->threads_lock);
    if (!tracked)
        free(t);
    return NULL;
}

/* Python's _Threads.reap() (only_done) and join() (all). The threads are
 * unlinked under the lock and joined outside it, so a thread that ends
 * meanwhile never waits for us to mark itself done. pthread_join() also
 * returns the thread's stack, which a never-joined thread keeps forever:
 * bpo-37193's leak, worse in C. */
static void join_threads(struct ss_server *s, bool only_done)
{
    struct ss_thread *ready = NULL;
    pthread_mutex_lock(&s->threads_lock);
    for (struct ss_thread **p = &s->threads; *p != NULL;) {
        struct ss_thread *t = *p;
        if (only_done && !t->done) {
            p = &t->next;
            continue;
        }
        *p = t->next;
        t->next = ready;
        ready = t;
    }
    pthread_mutex_unlock(&s->threads_lock);
    while (ready != NULL) {
        struct ss_thread *next = ready->next;
        pthread_join(ready->id, NULL);
        free(ready);
        ready = next;
    }
}

/* Python runs every signal handler in the main thread. The kernel gives a
 * process-wide signal (SIGTERM, SIGINT) to any thread that does not block
 * it, so request threads block them all: SIGTERM then always lands in a
 * thread that expects it (the loop's poll() returns EINTR) and never cuts
 * a client's recv() short. A new thread inherits the mask of its creator,
 * so it is set around pthread_create() (and a program a handler starts
 * inherits it too: unblock them in the child). Faults (SIGSEGV...) stay
 * unblocked: blocked, they would kill the process without any handler. */
static void block_signals(sigset_t *old)
{
    static const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT};
    sigset_t set;
    sigfillset(&set);
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++)
        sigdelset(&set, faults[i]);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

/* Start the thread, detached when nobody will join it. A detached thread
 * may end and free t before pthread_create() returns: its id goes to a
 * local. pthread functions return the error instead of setting errno. */
static int start_thread(struct ss_server *s, struct ss_thread *t)
{
    pthread_attr_t attr;
    pthread_t id;
    sigset_t old;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK_SIZE);
    if (!t->tracked)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    bool tracked = t->tracked;
    block_signals(&old);
    int err = pthread_create(&id, &attr, request_thread, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0)
        return err;
    if (tracked) {
        pthread_mutex_lock(&s->threads_lock);
        t->id = id;
        t->next = s->threads;
        s->threads = t;
        pthread_mutex_unlock(&s->threads_lock);
    }
    return 0;
}

/* ThreadingMixIn.process_request(): a new thread per request, with its own
 * heap copy of the request (the loop's copy dies with this call). Tracked
 * only when server_close() must join it: not for daemon threads, not when
 * block_on_close is false (bpo-33540). Every new start first joins the
 * threads that have ended (bpo-37193), so finished ones never pile up. If
 * the thread cannot start, the loop reports it and ends the request. */
static int threading_process_request(struct ss_server *s, struct ss_request *r)
{
    struct ss_thread *t = malloc(sizeof *t);
    if (t == NULL)
        return ss_fail(r, "process_request: malloc");
    *t = (struct ss_thread){.tracked = !s->daemon_threads && s->block_on_close, .server = s,
                            .request = *r};
    if (t->tracked)
        join_threads(s, true);
    int err = start_thread(s, t);
    if (err != 0) {
        free(t); /* the packet, if any, is still r's: the loop frees it */
        errno = err;
        return ss_fail(r, "process_request: pthread_create");
    }
    return SS_OK;
}

/* ThreadingMixIn.server_close(): the type's close (super()), then join
 * every tracked thread. C has no "non-daemon thread keeps the process
 * alive": exit() ends every thread, so this join is the only thing that
 * lets requests in flight finish. A datagram server joins FIRST: its
 * threads reply through the server's socket, and once it is closed its
 * number may already name another file (Python's threads would only get
 * EBADF from a closed socket object). */
static void threading_server_close(struct ss_server *s)
{
    if (s->socket_type == SOCK_DGRAM)
        join_threads(s, false);
    s->type->ops.server_close(s);
    join_threads(s, false);
}

const struct ss_mixin ss_ThreadingMixIn = {
    .name = "ThreadingMixIn",
    .ops = {.process_request = threading_process_request, .server_close = threading_server_close}};

/* ============================ The forking mix-in =========================== */

/* Forget the i-th recorded child (order does not matter: Python's is a set). */
static void forget_child(struct ss_server *s, int i)
{
    s->active_children[i] = s->active_children[--s->n_children];
}

static void forget_pid(struct ss_server *s, pid_t pid)
{
    for (int i = 0; i < s->n_children; i++)
        if (s->active_children[i] == pid) {
            forget_child(s, i);
            return;
        }
}

/* ForkingMixIn.collect_children(), as Python does it. At max_children the
 * loop blocks in waitpid(-1) until any child ends: the server stops
 * accepting and new clients wait in the backlog (it never refuses). That
 * waitpid(-1) may reap a child this process made for another reason;
 * Python has the same flaw. ECHILD means there are no children at all
 * (someone reaped them, or SIGCHLD is ignored): forget every pid. Below the
 * limit, only our own pids are waited for, one by one, so a child the
 * program made itself is left alone (Issue 1540386). No SIGCHLD handler:
 * Python reaps by polling, from service_actions() after every turn of the
 * loop, where chapter 05 reaps in a SIGCHLD handler. */
static void collect_children(struct ss_server *s, bool blocking)
{
    while (s->n_children > 0 && s->n_children >= s->max_children) {
        pid_t pid = waitpid(-1, NULL, 0);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0 && errno == ECHILD)
            s->n_children = 0;
        if (pid < 0)
            break;
        forget_pid(s, pid);
    }
    for (int i = 0; i < s->n_children;) {
        pid_t pid = waitpid(s->active_children[i], NULL, blocking ? 0 : WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid > 0 || (pid < 0 && errno == ECHILD))
            forget_child(s, i); /* reaped, or reaped by someone else */
        else
            i++; /* still running (0), or an error: ask again next time */
    }
}

/* ForkingMixIn.handle_timeout() and service_actions(): reap what ended. */
static void forking_collect(struct ss_server *s)
{
    collect_children(s, false);
}

/* The child's side: serve the request, then _exit() (never return to the
 * loop, never run atexit handlers or flush the parent's stdio again).
 * SIGINT and SIGTERM kill it again, rather than running the parent's
 * handler, which would ask a server the child does not run to stop. It
 * closes the wake pipe and, for a stream server, the listener: Python's
 * child keeps the listener open, which is harmless but shows in lsof and
 * keeps the port busy while children live. A datagram child keeps the
 * socket: its reply leaves from it. */
_Noreturn static void serve_in_child(struct ss_server *s, struct ss_request *r)
{
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    for (int i = 0; i < 2; i++) {
        close(s->wake[i]);
        s->wake[i] = -1;
    }
    if (s->socket_type == SOCK_STREAM) {
        close(s->socket);
        s->socket = -1;
    }
    int status = s->ops.finish_request(s, r);
    if (status == SS_ERROR)
        s->ops.handle_error(s, r);
    s->ops.shutdown_request(s, r);
    _exit(status == SS_OK ? 0 : 1);
}

/* ForkingMixIn.process_request(). fflush(NULL) first: fork() copies the
 * unwritten stdio buffers, and both processes would write them. The
 * record of children grows before fork(), so a child is never made that
 * could not be recorded. The parent only closes its copy of the request
 * (close_request): shutdown() would end the connection for the child too. */
static int forking_process_request(struct ss_server *s, struct ss_request *r)
{
    pid_t *grown = realloc(s->active_children, (size_t)(s->n_children + 1) * sizeof *grown);
    if (grown == NULL)
        return ss_fail(r, "process_request: realloc");
    s->active_children = grown;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return ss_fail(r, "process_request: fork");
    if (pid == 0)
        serve_in_child(s, r);
    s->active_children[s->n_children++] = pid;
    s->ops.close_request(s, r);
    return SS_OK;
}

/* ForkingMixIn.server_close(): the type's close, then wait for every child
 * if block_on_close (bpo-31151), else reap only those that have ended. */
static void forking_server_close(struct ss_server *s)
{
    s->type->ops.server_close(s);
    collect_children(s, s->block_on_close);
}

const struct ss_mixin ss_ForkingMixIn = {
    .name = "ForkingMixIn",
    .ops = {.process_request = forking_process_request,
            .handle_timeout = forking_collect,
            .service_actions = forking_collect,
            .server_close = forking_server_close}};
