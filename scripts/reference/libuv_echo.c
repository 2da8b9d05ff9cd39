/*
 * scripts/reference/libuv_echo.c: the course's echo protocol on libuv
 * (Debian's libuv1-dev, 1.44), the event loop under Node.js, written the
 * way the library is meant to be used: uv_listen accepts, uv_read_start has
 * libuv read each client and call on_read with the bytes, and replies go
 * out with uv_try_write, or uv_write for what the socket does not take now.
 *
 *     server [-H host] [-p port] [-m max-clients] [-q]
 *
 * The same command line and wire protocol as the chapters (README.md); the
 * greeting says chapter=libuv. make bench measures 06-epoll against it: one
 * thread and epoll underneath, as in 06.
 *
 * What libuv does not do for us, and a careful program must:
 *   - bound a client's output: uv_write queues whatever we give it, so a
 *     client that sends and never reads would grow our memory without limit.
 *     We stop reading (uv_read_stop) a client while 64 KiB of its replies
 *     wait, as 03 and 06 do, and start again as they go out;
 *   - close lingeringly: uv_shutdown (it waits for the queued writes, then
 *     sends our FIN), then read until EOF or 2 s, so that close() never meets
 *     unread bytes and answers them with a reset;
 *   - ignore SIGPIPE, which libuv leaves to the program.
 * libuv does handle running out of descriptors itself: it keeps one in
 * reserve and, at EMFILE, uses it to accept and close the waiting
 * connections, so the loop never spins on a failing accept().
 */
#define _GNU_SOURCE /* gettid() */
#include <netinet/in.h>
#include <stdlib.h>
#include <uv.h>

#define NAME "libuv" /* in the greeting: chapter=libuv */

/* Beside Python's socketserver reference (9800) and libevent's (9801). */
#define DEFAULT_PORT 9802

#include "echo_common.c"

/* One connected client: two libuv handles (its socket, and the timer of its
 * lingering close) and where it is in leaving. */
struct client {
    uv_tcp_t tcp;
    uv_timer_t linger;
    uv_shutdown_t shutdown;     /* the request that sends our FIN */
    int local_port;             /* our end of the connection, for the greeting */
    char peer[PEER_NAME_SIZE];  /* "127.0.0.1:54321", for the log */
    char *in;                   /* the start of a line whose '\n' has not come
                                   yet: IN_SIZE bytes, only while it holds some */
    size_t in_len;
    int reading;                /* uv_read_start is on */
    const char *leaving;        /* why it is leaving, once it is; NULL till then */
    int eof;                    /* it has closed its end */
    int shutting;               /* uv_shutdown requested */
    size_t discarded;           /* bytes thrown away since our FIN */
    int open_handles;           /* freed when both are closed */
};

/* A reply that the socket did not take at once, with its own copy of the
 * bytes: uv_write sends from them later and calls on_written. */
struct write_req {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
};

static uv_loop_t *loop;
static uv_tcp_t listener;
static int client_count;

/* The replies to one client, gathered while a read is answered and sent
 * together by flush(): one write for a whole batch of lines. One thread
 * answers one client at a time, so one buffer serves them all. */
static struct {
    char *data;
    size_t len, cap;
} batch;

/* Answer with one line: append it and its '\n' to the batch. */
static void reply(struct client *c, const char *line, size_t len)
{
    if (batch.len + len + 1 > batch.cap) {
        size_t cap = batch.cap > 0 ? batch.cap : 4096;
        while (cap < batch.len + len + 1)
            cap *= 2;
        char *grown = realloc(batch.data, cap);
        if (grown == NULL) {
            c->leaving = "out of memory";
            return;
        }
        batch.data = grown;
        batch.cap = cap;
    }
    memcpy(batch.data + batch.len, line, len);
    batch.data[batch.len + len] = '\n';
    batch.len += len + 1;
}

#include "echo_protocol.c"

/* =============================== Clients =================================== */

static uv_stream_t *stream_of(struct client *c)
{
    return (uv_stream_t *)&c->tcp;
}

static void on_handle_closed(uv_handle_t *handle)
{
    struct client *c = handle->data;
    if (--c->open_handles == 0) {
        free(c->in);
        free(c);
    }
}

/* uv_close() closes the socket; requests still pending (a write, the
 * shutdown) are called back with UV_ECANCELED first. */
static void close_client(struct client *c, const char *why)
{
    if (c->open_handles < 2)
        return; /* already closing */
    log_event("disconnect %s: %s", c->peer, why);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->linger, on_handle_closed);
    client_count--;
}

/* One buffer for every read: on_read takes what it needs out of it before
 * the next read. IN_SIZE bytes, as the chapters read: a read of "sleep\n"
 * lines queues at most 683 usage errors (31 KiB) past the 64 KiB bound. */
static void give_read_buffer(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    static char buffer[IN_SIZE];
    (void)handle;
    (void)suggested;
    *buf = uv_buf_init(buffer, sizeof buffer);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void start_reading(struct client *c)
{
    if (!c->reading && uv_read_start(stream_of(c), give_read_buffer, on_read) == 0)
        c->reading = 1;
}

static void stop_reading(struct client *c)
{
    uv_read_stop(stream_of(c));
    c->reading = 0;
}

/* A queued write is done (or cancelled by a close). Backpressure: a client
 * whose queue is under the bound again is read again. */
static void on_written(uv_write_t *req, int status)
{
    struct client *c = req->handle->data;
    free(req);
    if (status == UV_ECANCELED)
        return; /* the client is closing */
    if (status < 0)
        close_client(c, uv_strerror(status));
    else if (c->leaving == NULL && uv_stream_get_write_queue_size(stream_of(c)) < OUTPUT_HIGH_WATER)
        start_reading(c);
}

/* Send the batch: uv_try_write() writes at once what the socket takes, and
 * in the usual case that is all of it. What is left (the socket buffer is
 * full, or earlier replies still wait in libuv's queue) is copied and handed
 * to uv_write(), which sends it when the socket is writable. (uv_write()
 * alone would also do, but costs an epoll_ctl() per reply: libuv then
 * switches write interest off again after each one.)
 * Returns -1 when the client is gone. */
static int flush(struct client *c)
{
    uv_buf_t buf = uv_buf_init(batch.data, (unsigned)batch.len);
    int sent = batch.len > 0 ? uv_try_write(stream_of(c), &buf, 1) : 0;
    if (sent < 0 && sent != UV_EAGAIN) {
        batch.len = 0;
        close_client(c, uv_strerror(sent));
        return -1;
    }
    size_t rest = batch.len - (sent > 0 ? (size_t)sent : 0);
    batch.len = 0;
    if (rest == 0)
        return 0;
    struct write_req *w = malloc(sizeof *w + rest);
    if (w == NULL) {
        close_client(c, "out of memory");
        return -1;
    }
    memcpy(w->data, buf.base + buf.len - rest, rest);
    w->buf = uv_buf_init(w->data, (unsigned)rest);
    if (uv_write(&w->req, stream_of(c), &w->buf, 1, on_written) < 0) {
        free(w);
        close_client(c, "write failed");
        return -1;
    }
    return 0;
}

static void on_linger_timeout(uv_timer_t *timer)
{
    struct client *c = timer->data;
    close_client(c, c->leaving);
}

/* Our FIN is out (every reply before it). If the client has closed its end
 * too, close; otherwise read and throw away what it still sends, until its
 * EOF or LINGER_MS. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct client *c = req->data;
    if (status == UV_ECANCELED)
        return;
    if (status < 0 || c->eof) {
        close_client(c, c->leaving);
        return;
    }
    uv_timer_start(&c->linger, on_linger_timeout, LINGER_MS, 0);
    start_reading(c);
}

/* The client leaves: uv_shutdown() waits until libuv's queue of writes is
 * empty, then sends our FIN. */
static void start_leaving(struct client *c)
{
    c->shutting = 1;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, stream_of(c), on_shutdown) < 0)
        close_client(c, c->leaving);
}

/* The bytes of one read: every complete line is answered. A line may come
 * in several reads: its start waits in c->in. A line whole in this read is
 * answered where it lies, with no copy. */
static void take_input(struct client *c, const char *data, size_t n)
{
    while (n > 0 && c->leaving == NULL) {
        const char *newline = memchr(data, '\n', n);
        size_t len = newline != NULL ? (size_t)(newline - data) : n;
        if (c->in_len + len >= IN_SIZE) {
            reject_long_line(c); /* IN_SIZE bytes and still no '\n' */
            c->leaving = "closed by server";
            return;
        }
        if (c->in_len > 0 || newline == NULL) {
            if (c->in == NULL && (c->in = malloc(IN_SIZE)) == NULL) {
                c->leaving = "out of memory";
                return;
            }
            memcpy(c->in + c->in_len, data, len);
            c->in_len += len;
        }
        if (newline == NULL)
            return; /* the rest of this line comes later */
        enum next_step next = c->in_len > 0 ? answer_line(c, c->in, c->in_len) : answer_line(c, data, len);
        if (c->in_len > 0) {
            free(c->in); /* an idle client holds no input buffer */
            c->in = NULL;
            c->in_len = 0;
        }
        if (next == CLOSE)
            c->leaving = "closed by server";
        data += len + 1;
        n -= len + 1;
    }
}

/* The client has closed its end: the replies queued still go out (a
 * half-close), then our FIN, then the close (on_shutdown). */
static void on_eof(struct client *c)
{
    c->eof = 1;
    c->reading = 0; /* libuv stops reading at EOF */
    if (c->leaving == NULL)
        c->leaving = "client closed";
    if (uv_is_active((uv_handle_t *)&c->linger))
        close_client(c, c->leaving); /* lingering: this EOF is what it waited for */
    else if (!c->shutting)
        start_leaving(c);
}

/* libuv read (up to IN_SIZE bytes) from a readable client: answer, send,
 * and stop reading it while too much waits to be sent. */
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = stream->data;
    if (nread == UV_EOF) {
        on_eof(c);
    } else if (nread < 0) {
        close_client(c, uv_strerror((int)nread));
    } else if (c->leaving != NULL) {
        c->discarded += (size_t)nread;
        if (c->discarded > LINGER_BYTES)
            close_client(c, "kept sending after closing");
    } else if (nread > 0) {
        take_input(c, buf->base, (size_t)nread);
        if (flush(c) < 0)
            return;
        if (c->leaving != NULL)
            start_leaving(c);
        else if (uv_stream_get_write_queue_size(stream) >= OUTPUT_HIGH_WATER)
            stop_reading(c); /* on_written reads again */
    }
}

/* ============================== Accepting ================================== */

/* Past the cap: tell the client and close; it has sent nothing yet, so
 * close() sends a FIN after our line, no lingering needed. */
static void refuse(struct client *c)
{
    static const char busy[] = "error server busy\n";
    uv_buf_t buf = uv_buf_init((char *)busy, sizeof busy - 1);
    uv_try_write(stream_of(c), &buf, 1);
    c->peer[0] = '\0';
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->linger, on_handle_closed);
    log_event("refused a connection: at the cap");
}

/* Who the client is, for the log, and our port, for the greeting. */
static void describe(struct client *c)
{
    struct sockaddr_in addr;
    int len = sizeof addr;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&addr, &len) == 0)
        name_peer(&addr, c->peer);
    len = sizeof addr;
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&addr, &len) == 0)
        c->local_port = ntohs(addr.sin_port);
}

/* A connection waits: accept it into a new client, greet it, read it. An
 * error here is one libuv has dealt with (EMFILE: see the top). A client
 * is a few hundred bytes: if even they cannot be had, stop. */
static void on_connection(uv_stream_t *server, int status)
{
    uv_os_fd_t fd = -1;
    if (status < 0) {
        fprintf(stderr, "server: accept: %s\n", uv_strerror(status));
        return;
    }
    struct client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        perror("server: calloc");
        exit(1);
    }
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->linger);
    c->tcp.data = c->linger.data = c;
    c->open_handles = 2;
    if (uv_accept(server, stream_of(c)) < 0 || client_count >= opt.max_clients) {
        refuse(c);
        return;
    }
    client_count++;
    describe(c);
    uv_fileno((uv_handle_t *)&c->tcp, &fd);
    log_event("connect %s (fd %d)", c->peer, fd);
    send_greeting(c);
    if (flush(c) == 0)
        start_reading(c);
}

/* ================================== Main =================================== */

/* SIGINT and SIGTERM: stop the loop; main() returns 0. */
static void on_stop_signal(uv_signal_t *handle, int sig)
{
    (void)sig;
    log_stopping();
    uv_stop(handle->loop);
}

/* Bind and listen (libuv sets SO_REUSEADDR: restart at once on a port in
 * TIME_WAIT), then say where. Exits 1 when the port is taken: libuv reports
 * a bind() error at uv_listen(). */
static void listen_on(const char *host, int port)
{
    struct sockaddr_in addr;
    int len = sizeof addr, err;
    uv_ip4_addr(host, port, &addr); /* parse_options checked the address */
    uv_tcp_init(loop, &listener);
    err = uv_tcp_bind(&listener, (struct sockaddr *)&addr, 0);
    if (err == 0)
        err = uv_listen((uv_stream_t *)&listener, SOMAXCONN, on_connection);
    if (err < 0) {
        fprintf(stderr, "server: cannot listen on %s:%d: %s\n", host, port, strerror(-err));
        exit(1);
    }
    uv_tcp_getsockname(&listener, (struct sockaddr *)&addr, &len);
    printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static uv_signal_t term, intr;
    parse_options(argc, argv);
    /* A write to a connection the peer has closed raises SIGPIPE, which
     * kills the process; ignored, the write fails with EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    uv_signal_init(loop, &term);
    uv_signal_init(loop, &intr);
    uv_signal_start(&term, on_stop_signal, SIGTERM);
    uv_signal_start(&intr, on_stop_signal, SIGINT);
    listen_on(opt.host, opt.port);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
