/*
 * scripts/reference/libevent_echo.c: the course's echo protocol on libevent
 * (Debian's libevent-dev, 2.1), written the way the library is meant to be
 * used: an evconnlistener accepts, and each client is a bufferevent, a
 * socket with an input and an output buffer that libevent fills and drains
 * for us, calling us back when a line may have come in (on_read), when the
 * output has drained (on_drained), and on EOF or an error (on_event).
 *
 *     server [-H host] [-p port] [-m max-clients] [-q]
 *
 * The same command line and wire protocol as the chapters (README.md); the
 * greeting says chapter=libevent. make bench measures 06-epoll against it:
 * one thread and epoll underneath, as in 06, but the library decides which
 * system calls an echo costs (see the note at on_read).
 *
 * What libevent does not do for us, and a careful program must:
 *   - bound a client's output: a bufferevent queues whatever we write, so a
 *     client that sends and never reads would grow our memory without limit
 *     (the research note measured 290 MB for one such client). We stop
 *     reading a client while 64 KiB of its replies wait, as 03 and 06 do;
 *   - close lingeringly: shutdown(), then read until EOF or 2 s, so that
 *     close() never meets unread bytes and answers them with a reset;
 *   - handle running out of descriptors, or the listener spins on accept().
 */
#define _GNU_SOURCE /* gettid() */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

#define NAME "libevent" /* in the greeting: chapter=libevent */

/* Beside Python's socketserver reference (9800), so they run side by side. */
#define DEFAULT_PORT 9801

/* After an accept() error that retrying cannot fix at once (no memory),
 * the listener is left alone this long (nginx waits 500 ms, HAProxy 100 ms). */
#define ACCEPT_PAUSE_MS 100

#include "echo_common.c"

/* One connected client. */
struct client {
    struct bufferevent *bev;    /* its socket, and the buffers libevent keeps */
    int local_port;             /* our end of the connection, for the greeting */
    char peer[PEER_NAME_SIZE];  /* "127.0.0.1:54321", for the log */
    const char *leaving;        /* why it is leaving, once it is; NULL till then */
    int eof;                    /* it has closed its end */
    size_t discarded;           /* bytes thrown away since it started leaving */
    struct event *linger;       /* the lingering close's deadline, once started */
};

static struct event_base *base;
static struct evconnlistener *listener;
static int client_count;

/* Answer with one line: libevent's output buffer takes it, and libevent
 * sends it when the socket is writable. Nothing is sent here. */
static void reply(struct client *c, const char *line, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_add(out, line, len) < 0 || evbuffer_add(out, "\n", 1) < 0)
        c->leaving = "out of memory";
}

#include "echo_protocol.c"

/* =============================== Clients =================================== */

/* bufferevent_free() closes the socket (BEV_OPT_CLOSE_ON_FREE). */
static void close_client(struct client *c, const char *why)
{
    log_event("disconnect %s: %s", c->peer, why);
    bufferevent_free(c->bev);
    if (c->linger != NULL)
        event_free(c->linger);
    free(c);
    client_count--;
}

static void on_linger_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    (void)fd;
    (void)what;
    close_client(c, c->leaving);
}

/* Every reply has gone out: send our FIN (shutdown), and read and throw
 * away what the client still sends until its EOF (on_event) or LINGER_MS. */
static void start_lingering(struct client *c)
{
    struct timeval deadline = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    c->linger = evtimer_new(base, on_linger_timeout, c);
    if (c->linger == NULL || evtimer_add(c->linger, &deadline) < 0) {
        close_client(c, c->leaving);
        return;
    }
    bufferevent_enable(c->bev, EV_READ);
}

/* A leaving client's bytes are counted and thrown away. */
static void discard_input(struct client *c, struct evbuffer *in)
{
    c->discarded += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (c->discarded > LINGER_BYTES)
        close_client(c, "kept sending after closing");
}

/* Bytes came in. evbuffer_readln() cuts out each complete line (bytes come
 * in any pieces: half a line, or several at once); what is left is the
 * start of a line whose '\n' has not come yet, and the read high-water mark
 * (accept_client) keeps it under IN_SIZE bytes unless it is too long.
 * The replies are only queued here: libevent sends them in its next turn.
 * That is where its system calls come from: it asks how many bytes wait
 * (ioctl FIONREAD) before each readv(), and switches write interest on
 * (epoll_ctl) when a reply is queued and off again once it has gone out:
 * five calls per echo, where 06 makes two. */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char *line;
    size_t len;
    while (c->leaving == NULL && (line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF)) != NULL) {
        if (answer_line(c, line, len) == CLOSE)
            c->leaving = "closed by server";
        free(line);
    }
    if (c->leaving == NULL && evbuffer_get_length(in) >= IN_SIZE) {
        reject_long_line(c); /* a full buffer and still no '\n' */
        c->leaving = "closed by server";
    }
    if (c->leaving != NULL) {
        discard_input(c, in);
        return;
    }
    if (evbuffer_get_length(bufferevent_get_output(bev)) >= OUTPUT_HIGH_WATER)
        bufferevent_disable(bev, EV_READ); /* backpressure: see on_drained */
}

/* The output buffer is empty (the write low-water mark is 0): a leaving
 * client can go, or start its lingering close; a served one whose reading
 * stopped for backpressure is read again. */
static void on_drained(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->eof)
        close_client(c, c->leaving);
    else if (c->leaving != NULL && c->linger == NULL)
        start_lingering(c);
    else if (c->leaving == NULL && !(bufferevent_get_enabled(bev) & EV_READ))
        bufferevent_enable(bev, EV_READ);
}

/* EOF (libevent stops reading) or an error. At EOF, the replies queued
 * still go out (a half-close), then on_drained closes. */
static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct client *c = arg;
    if (what & BEV_EVENT_ERROR) {
        close_client(c, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return;
    }
    if (!(what & BEV_EVENT_EOF))
        return;
    c->eof = 1;
    if (c->leaving == NULL)
        c->leaving = "client closed";
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        close_client(c, c->leaving);
}

/* ============================== Accepting ================================== */

/* Past the cap: tell the client and close; it has sent nothing yet, so
 * close() sends a FIN after our line, no lingering needed. */
static void refuse(evutil_socket_t fd)
{
    static const char busy[] = "error server busy\n";
    if (send(fd, busy, sizeof busy - 1, MSG_DONTWAIT) < 0) {
        /* it is gone already: nothing more to tell it */
    }
    evutil_closesocket(fd);
    log_event("refused a connection");
}

/* A new connection (the listener has made it non-blocking): a bufferevent
 * for it, greeted. The read high-water mark makes libevent stop reading a
 * client whose input holds IN_SIZE bytes: a longest line and its "\r\n". */
static void accept_client(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr,
                          int addr_len, void *arg)
{
    struct sockaddr_in local;
    socklen_t local_len = sizeof local;
    struct client *c;
    (void)l;
    (void)addr_len;
    (void)arg;
    if (client_count >= opt.max_clients || (c = calloc(1, sizeof *c)) == NULL) {
        refuse(fd);
        return;
    }
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        free(c);
        refuse(fd);
        return;
    }
    client_count++;
    name_peer((struct sockaddr_in *)addr, c->peer);
    if (getsockname(fd, (struct sockaddr *)&local, &local_len) == 0)
        c->local_port = ntohs(local.sin_port);
    bufferevent_setcb(c->bev, on_read, on_drained, on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, IN_SIZE);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    log_event("connect %s (fd %d)", c->peer, (int)fd);
    send_greeting(c);
}

/* One descriptor kept open for the day they run out (see on_accept_error). */
static int spare_fd = -1;

static void reserve_spare_fd(void)
{
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

/* accept() failed in a way a retry does not fix at once, and the listener
 * stays readable: libevent would call accept() again at once, forever.
 * Out of descriptors (EMFILE), the spare one gets us out, as in the
 * chapters' overload.c and in libuv: give it up, accept the waiting
 * connection, tell it we are busy, take the spare back; libevent calls
 * accept() again for the next one. Anything else (ENFILE, ENOBUFS), or no
 * spare: stop listening for ACCEPT_PAUSE_MS; the clients already here go
 * on being served. (EAGAIN, EINTR and ECONNABORTED never come here: the
 * listener retries them itself.) */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    static const struct timeval pause = {0, ACCEPT_PAUSE_MS * 1000};
    (void)arg;
    if (EVUTIL_SOCKET_ERROR() == EMFILE && spare_fd >= 0) {
        close(spare_fd);
        int fd = accept(evconnlistener_get_fd(l), NULL, NULL);
        if (fd >= 0)
            refuse(fd);
        reserve_spare_fd();
        return;
    }
    perror("server: accept");
    evconnlistener_disable(l);
    event_base_once(base, -1, EV_TIMEOUT, resume_accepting, l, &pause);
}

/* ================================== Main =================================== */

/* SIGINT and SIGTERM: leave the loop; main() returns 0. */
static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    log_stopping();
    event_base_loopbreak(base);
}

/* Bind and listen (SO_REUSEADDR: restart at once on a port in TIME_WAIT),
 * then say where. Exits 1 when the port is taken. */
static void listen_on(const char *host, int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof addr;
    inet_pton(AF_INET, host, &addr.sin_addr); /* parse_options checked it */
    listener = evconnlistener_new_bind(base, accept_client, NULL,
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
                                       SOMAXCONN, (struct sockaddr *)&addr, sizeof addr);
    if (listener == NULL) {
        fprintf(stderr, "server: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
        exit(1);
    }
    evconnlistener_set_error_cb(listener, on_accept_error);
    reserve_spare_fd();
    getsockname(evconnlistener_get_fd(listener), (struct sockaddr *)&addr, &len);
    printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    /* A write to a connection the peer has closed raises SIGPIPE, which
     * kills the process; ignored, the write fails with EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    struct event *term = base ? evsignal_new(base, SIGTERM, on_stop_signal, NULL) : NULL;
    struct event *intr = base ? evsignal_new(base, SIGINT, on_stop_signal, NULL) : NULL;
    if (term == NULL || intr == NULL || evsignal_add(term, NULL) < 0 || evsignal_add(intr, NULL) < 0) {
        fprintf(stderr, "server: cannot set up libevent\n");
        return 1;
    }
    listen_on(opt.host, opt.port);
    event_base_dispatch(base);
    return 0;
}
