/*
 * 10-io-uring/server.c: one thread, one ring: the kernel does the I/O and
 * tells us when it is done.
 *
 *     io_uring_queue_init: a submission queue (SQ) and a completion queue
 *     (CQ), shared memory between us and the kernel; a ring of buffers
 *     loop: io_uring_submit_and_wait: one io_uring_enter hands the kernel
 *             every request this turn queued, and waits for one completion
 *           a completion (CQE) -> what finished, and how:
 *             accept  -> a new client (the accept stays armed: multishot)
 *             recv    -> bytes, already in one of our buffers: answer them;
 *                        then, one chain: send the reply, then recv again
 *             send    -> a reply with no recv behind it went out, or failed
 *             timeout -> a client's sleep is over, or its linger
 *
 * 06 asks the kernel "which sockets are ready?", then makes the calls
 * itself, one system call each. Here the loop asks for the work ("accept
 * on this socket, and keep doing it"; "send this reply, then receive into
 * a buffer of that ring") in requests (SQEs) written to the submission
 * queue; the kernel does each when its socket is ready, and writes the
 * result (a CQE) to the completion queue. One io_uring_enter per turn: no
 * recv, send, accept or epoll_wait in a trace. And "sleep" is a timeout on
 * the ring: only its client waits (06's loop slept, stalling everyone; 09
 * gave the sleep to a worker thread).
 *
 * This file is the stage. What does not change from chapter to chapter
 * lives in files of its own, included below: setup.c (command line numbers,
 * the log, signals, the listening socket) and protocol.h/.c (what the server
 * answers), the same in chapters 01 to 10 but 07; overload.c (refusing,
 * shedding), the same in 02, 03, 06, 09 and 10. nonblocking_io.c is not
 * here: it calls send() and recv() itself, which is the kernel's job now,
 * so its rules (the output queue, backpressure, the lingering close) are
 * written again below, in the ring's terms.
 */
#define _GNU_SOURCE /* gettid() */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHAPTER "10-io-uring"

/* Chapter N listens on 9N00, which does not fit 10 (91000 is past the last
 * port, 65535): chapter 10 takes 10000, the next round number no chapter
 * uses. Like 02 and 06 it can listen on up to three ports. */
#define DEFAULT_PORT 10000
#define MAX_PORTS 3

/* As in 06: an idle client costs a small struct (make c10k measures it). */
#define DEFAULT_MAX_CLIENTS 10000

/* Requests per turn; a turn that queues more submits early (make_room). */
#define SQ_ENTRIES 256

/* Completions the CQ holds between two of our reads of it: a turn where
 * thousands of clients each finish something fits; past it, the kernel
 * holds the rest (IORING_FEAT_NODROP): slower, never lost. 16 bytes each. */
#define CQ_ENTRIES 8192

/* The provided buffers, which the kernel receives into: 256 of 4 KiB, 1 MiB
 * for all clients, each taken by one completion and given back once its
 * bytes are copied. So 256 completions with bytes can wait for us at once;
 * past it, a recv fails with ENOBUFS and is armed again. 4 KiB: about what
 * one recv() in 06 took (IN_SIZE). A power of two, as it must be. */
#define BUFFER_COUNT 256
#define BUFFER_SIZE 4096
#define BUFFER_GROUP 0

/* Backpressure, 03's rule: stop receiving from a client whose unsent
 * replies reach 64 KiB (06's nonblocking_io.c has the arithmetic: with one
 * IN_SIZE of input past the mark, we hold at most about 97 KB of replies). */
#define OUTPUT_HIGH_WATER (64 * 1024)

/* The output queue's first allocation: a few replies' worth. */
#define OUT_MIN_CAP 256

/* setup.c leaves the ready line to set_up_loop, once the ring is there. */
#define READY_LINE_LATER

#include "setup.c"
#include "protocol.h"

/* protocol.c hands "sleep" to this chapter instead of sleeping (below). */
#define HAND_OFF_SLEEP
static enum next_step hand_off_sleep(struct client *c, long ms);
/* ... so protocol.c's sleep_ms(), which blocks the thread, is never called. */
static void sleep_ms(long ms) __attribute__((unused));

/* What the command line asked for (parse_options, at the end). */
static struct {
    const char *host;       /* an IPv4 address to bind */
    int ports[MAX_PORTS];   /* 0 asks the kernel for a free port */
    int nports;
    int max_clients;
} opt = {"127.0.0.1", {0}, 0, DEFAULT_MAX_CLIENTS};

/* One connected client: 06's, plus what the kernel holds of it. A request
 * in flight names it by its address (see tag), so the struct, and its
 * descriptor (which must not come to mean another socket), live until the
 * last request has come back (inflight), even after the client has gone. */
struct client {
    int fd;
    int local_port;             /* our end of the connection */
    char peer[PEER_NAME_SIZE];  /* "127.0.0.1:54321", for the log */
    char *in;                   /* bytes received, not yet a whole line;
                                   IN_SIZE bytes, only while it holds some */
    size_t in_len;
    char *out;                  /* replies queued, not sent yet; NULL when none */
    size_t out_len, out_cap;
    char *sending;              /* the replies the kernel is sending: ours
                                   again when the send completes; or NULL */
    size_t sending_len, sent;
    char *pending;              /* bytes that came while it was not taking
                                   lines: one recv's at most; or NULL */
    size_t pending_len;
    const char *leaving;        /* why it is leaving, once it is; NULL till then */
    int eof;                    /* it has closed its end: nothing more to receive */
    size_t discarded;           /* bytes thrown away since it started leaving */
    int receiving;              /* a recv is armed */
    int chained;                /* and linked behind the send in flight */
    int sleeping;               /* a sleep's timeout is armed */
    int lingering;              /* our FIN is sent */
    long long linger_until;     /* and the linger ends then (now_ms) */
    int gone;                   /* dropped: waiting for its requests to come back */
    int inflight;               /* requests in the kernel that name it */
    long sleep_ms;
    struct __kernel_timespec sleep_time, linger_time; /* read by the kernel */
};

#include "protocol.c"
#include "overload.c"

/* ======================= Requests and their results ======================== */

static struct io_uring ring;

/* What a request was for, in the low 4 bits of its user_data (see tag). */
enum op { ACCEPT, LISTENER_READY, ACCEPT_PAUSE, RECV, SEND, SLEEP, LINGER_TIMEOUT, CANCEL, CLOSE_FD };

/* Each request carries 64 bits of ours, user_data, which its completion
 * gives back: here, the address of what it was for (a client, a listener,
 * the accept pause; 16-aligned, so its low 4 bits are 0) with the kind of
 * request in those bits (on_completion takes them apart). A client's is
 * calloc's: aligned for any type, max_align_t. */
_Static_assert(_Alignof(max_align_t) >= 16, "a client's address must have 4 low bits free");

static uint64_t tag(const void *object, enum op op)
{
    return (uint64_t)(uintptr_t)object | (uint64_t)op;
}

/* Room for n requests in the SQ (a chain's go in one submission, or it is
 * two chains); when the turn has filled it, io_uring_submit hands what it
 * holds to the kernel now (one io_uring_enter), not at the turn's end. */
static void make_room(unsigned n)
{
    while (io_uring_sq_space_left(&ring) < n) {
        int ret = io_uring_submit(&ring);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            fprintf(stderr, "server: io_uring_submit: %s\n", strerror(-ret));
            exit(1);
        }
    }
}

/* A free entry of the submission queue. */
static struct io_uring_sqe *get_sqe(void)
{
    make_room(1);
    return io_uring_get_sqe(&ring);
}

/* Ask the kernel to stop the request whose user_data is this. Its own
 * completion (tagged CANCEL) says only whether it found it; what counts
 * comes with the stopped request's (-ECANCELED). A cancel that outlives its
 * client (freed in the same turn) finds nothing: a new client at the same
 * address queues its requests after it, and the kernel takes them in order. */
static void cancel(const void *object, enum op op)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_cancel64(sqe, tag(object, op), 0);
    io_uring_sqe_set_data64(sqe, tag(NULL, CANCEL));
}

/* A relative timeout: a completion (-ETIME) after the time in *when, which
 * stays where it is until the kernel has read it (at submission). */
static void arm_timeout(struct __kernel_timespec *when, long ms, uint64_t user_data)
{
    struct io_uring_sqe *sqe = get_sqe();
    when->tv_sec = ms / 1000;
    when->tv_nsec = (ms % 1000) * 1000000L;
    io_uring_prep_timeout(sqe, when, 0, 0);
    io_uring_sqe_set_data64(sqe, user_data);
}

/* ============================ Provided buffers ============================= */

/* A ring of buffers we lend the kernel: a receive takes the next one when
 * bytes arrive, and its completion says which (its buffer id). Without
 * them, each waiting recv would hold a buffer of its own: 4 KiB per idle
 * client. With them, an idle client holds none. */
static struct io_uring_buf_ring *buffers;
static char *buffer_memory;

static char *buffer_of(const struct io_uring_cqe *cqe)
{
    return buffer_memory + (size_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT) * BUFFER_SIZE;
}

/* Lend a buffer to the kernel again, at the ring's tail. */
static void give_back(const struct io_uring_cqe *cqe)
{
    unsigned short id = (unsigned short)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    io_uring_buf_ring_add(buffers, buffer_of(cqe), BUFFER_SIZE, id,
                          io_uring_buf_ring_mask(BUFFER_COUNT), 0);
    io_uring_buf_ring_advance(buffers, 1);
}

/* ================================== Output ================================= */

/* Replies not yet on the wire: the ones queued and the rest of the send. */
static size_t unsent(const struct client *c)
{
    return c->out_len + (c->sending != NULL ? c->sending_len - c->sent : 0);
}

/* Ask the kernel to send the rest of c->sending. It sends when the socket
 * has room, however long that takes: the loop never sees EAGAIN. Chained
 * (after_io): the recv linked behind it starts once it has succeeded, which
 * posts nothing; MSG_WAITALL: the kernel sends the rest of a partial send. */
static void submit_send(struct client *c, int chained)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_send(sqe, c->fd, c->sending + c->sent, c->sending_len - c->sent,
                       chained ? MSG_NOSIGNAL | MSG_WAITALL : MSG_NOSIGNAL);
    sqe->flags |= chained ? IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS : 0;
    io_uring_sqe_set_data64(sqe, tag(c, SEND));
    c->chained = chained;
    c->inflight++;
}

/* One send in flight per client, or its bytes could leave out of order. The
 * kernel reads the buffer until the send completes, so it is not ours to
 * touch till then: the queue moves over to c->sending, and the replies
 * made meanwhile go to a new c->out (which may move as it grows). */
static void start_send(struct client *c, int chained)
{
    if (c->sending != NULL || c->out_len == 0)
        return;
    c->sending = c->out;
    c->sending_len = c->out_len;
    c->sent = 0;
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    submit_send(c, chained);
}

/* Answer with one line: append it and its '\n' to the client's queue.
 * Nothing is sent here; start_send() does that. */
static enum next_step reply(struct client *c, const char *line, size_t len)
{
    if (c->out_len + len + 1 > c->out_cap) {
        size_t cap = c->out_cap > 0 ? c->out_cap : OUT_MIN_CAP;
        while (cap < c->out_len + len + 1)
            cap *= 2;
        char *out = realloc(c->out, cap);
        if (out == NULL) {
            perror("server: realloc");
            return CLOSE;
        }
        c->out = out;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, line, len);
    c->out[c->out_len + len] = '\n';
    c->out_len += len + 1;
    return KEEP_OPEN;
}

/* ================================== Input ================================== */

/* It answers lines now: it is not leaving, not in a sleep (the lines after
 * one wait for its answer, 09's rule), and its unsent replies are under
 * the high-water mark. */
static int takes_lines(const struct client *c)
{
    return c->leaving == NULL && !c->sleeping && unsent(c) < OUTPUT_HIGH_WATER;
}

/* 03's rule for reading, in the ring's terms: a recv stays armed while the
 * client takes lines, and while it is leaving (its bytes are thrown away);
 * never once it has closed its end, nor while bytes wait in c->pending. */
static int wants_input(const struct client *c)
{
    return !c->eof && c->pending_len == 0 && (c->leaving != NULL || takes_lines(c));
}

static void release_input(struct client *c)
{
    if (c->in_len == 0 || c->leaving != NULL) {
        free(c->in);
        c->in = NULL;
        c->in_len = 0;
    }
}

/* Bytes the kernel received: into c->in (IN_SIZE, as protocol.c wants) a
 * piece at a time, each piece's complete lines answered, while the client
 * takes lines; thrown away, and counted, once it is leaving. Returns how
 * many it took: the rest wait (keep_pending). */
static size_t take_bytes(struct client *c, const char *bytes, size_t len)
{
    size_t taken = 0;
    while (taken < len && takes_lines(c)) {
        if (c->in == NULL && (c->in = malloc(IN_SIZE)) == NULL) {
            c->leaving = "out of memory";
            break;
        }
        size_t n = len - taken < IN_SIZE - c->in_len ? len - taken : IN_SIZE - c->in_len;
        memcpy(c->in + c->in_len, bytes + taken, n);
        c->in_len += n;
        taken += n;
        if (handle_input(c) == CLOSE)
            c->leaving = "closed by server";
    }
    release_input(c);
    if (c->leaving != NULL) {
        c->discarded += len - taken;
        taken = len;
    }
    return taken;
}

/* Bytes that came after the client stopped taking lines: the recv was
 * armed before it stopped (see arm_recv). Kept for when it takes lines
 * again: one buffer's worth at most, since no recv is armed meanwhile. */
static void keep_pending(struct client *c, const char *bytes, size_t len)
{
    char *more = realloc(c->pending, c->pending_len + len);
    if (more == NULL) {
        perror("server: realloc");
        c->leaving = "out of memory";
        return;
    }
    memcpy(more + c->pending_len, bytes, len);
    c->pending = more;
    c->pending_len += len;
}

/* The client takes lines again: the pending bytes first, then (once they
 * are all taken) the recv is armed again. */
static void take_pending(struct client *c)
{
    size_t taken = take_bytes(c, c->pending, c->pending_len);
    memmove(c->pending, c->pending + taken, c->pending_len - taken);
    c->pending_len -= taken;
    if (c->pending_len == 0) {
        free(c->pending);
        c->pending = NULL;
    }
}

/* The linger's time limit, on a leaving client's recv: a link timeout,
 * linked behind it, cancels it (-ECANCELED) when the time is up, and goes
 * away by itself if the recv completes first: no cancel of ours, no enter
 * of its own. Its completion would add nothing but a turn late (ending a
 * wait early): IOSQE_CQE_SKIP_SUCCESS, tagged with no client (one posted
 * even so names nothing freed). The time: what is left of LINGER_MS since
 * our FIN; a recv armed before it (beside bye's send) gets it all. */
static void link_linger_timeout(struct client *c, struct io_uring_sqe *recv)
{
    long long ms = c->lingering ? c->linger_until - now_ms() : LINGER_MS;
    recv->flags |= IOSQE_IO_LINK;
    struct io_uring_sqe *sqe = get_sqe();
    c->linger_time.tv_sec = ms > 0 ? ms / 1000 : 0;
    c->linger_time.tv_nsec = ms > 0 ? (ms % 1000) * 1000000L : 0;
    io_uring_prep_link_timeout(sqe, &c->linger_time, 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, tag(NULL, LINGER_TIMEOUT));
}

/* Arm a recv: when bytes arrive, the kernel takes a buffer from our ring
 * (IOSQE_BUFFER_SELECT), receives into it, and posts a completion. It
 * waits for the bytes itself (it polls the socket): no recv() returns
 * EAGAIN to us, and no thread waits. One recv, one completion; after_io()
 * arms the next (behind the reply, usually) only while the client wants
 * input: 06's rule. Why not a multishot recv, armed once, a completion per
 * arrival until cancelled? It does not wait for us: on a client that
 * floods, it goes on receiving, up to 32 buffers a pass, pass after pass,
 * within the one io_uring_enter that our cancel could only ride in on
 * next: measured, 390 KiB a client to keep, where the backpressure rule
 * allows about 97 KB. A chained recv waits while the reply does. And what
 * multishot saves, one request per arrival, costs no system call here. */
static void arm_recv(struct client *c)
{
    if (c->leaving != NULL)
        make_room(2); /* it and its linger's timeout: one submission */
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_recv(sqe, c->fd, NULL, 0, 0); /* length 0: the buffer's */
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUFFER_GROUP;
    io_uring_sqe_set_data64(sqe, tag(c, RECV));
    c->receiving = 1;
    c->inflight++;
    if (c->leaving != NULL)
        link_linger_timeout(c, sqe);
}

/* =============================== The clients =============================== */

static int client_count;

/* Its last request has come back: its socket goes, by a last request, a
 * close (sooner, a request run later could find its number naming a new
 * client's socket). The next io_uring_enter, a wait anyway, runs it; with
 * IOSQE_CQE_SKIP_SUCCESS it posts nothing (that would end the wait). A
 * failed one posts, tagged with no client (the request holds the number,
 * nothing of the struct), so the struct goes now. */
static void free_client(struct client *c)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_close(sqe, c->fd);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, tag(NULL, CLOSE_FD));
    free(c->sending);
    free(c);
}

/* The client goes: every request of its still in flight is cancelled, and
 * it is freed (its socket closed) when the last one has come back, never
 * before: a completion must never find freed memory. (A request that
 * completes before its cancel arrives comes back all the same.) A chain:
 * its send cancelled fails it, recv and all; or, once sent, its recv is
 * (and a recv cancelled, its linger's timeout). */
static void drop_client(struct client *c, const char *why)
{
    c->gone = 1;
    client_count--;
    log_event("disconnect %s: %s", c->peer, why);
    make_room(2); /* a chain's two cancels, in one submission */
    if (c->receiving)
        cancel(c, RECV);
    if (c->sending != NULL)
        cancel(c, SEND);
    if (c->sleeping)
        cancel(c, SLEEP);
    free(c->in);
    free(c->out);
    free(c->pending);
    c->in = c->out = c->pending = NULL;
    if (c->inflight == 0)
        free_client(c);
}

/* The lingering close, as in 03 and 06: once a leaving client's replies are
 * all sent, shutdown(SHUT_WR) sends our FIN, and its bytes are received and
 * thrown away until its EOF, or LINGER_BYTES, or LINGER_MS (its recv's
 * linked timeout), so that the close never meets unread bytes and resets
 * the connection. shutdown() stays a system call: io_uring hands every
 * IORING_OP_SHUTDOWN to a thread of its own (io-wq), though it never waits. */
static void start_lingering(struct client *c)
{
    if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN) /* ENOTCONN: reset */
        perror("server: shutdown");
    c->lingering = 1;
    c->linger_until = now_ms() + LINGER_MS;
}

/* After anything happened to a client: give it the bytes that waited, then
 * send what is queued, go on receiving or stop, and let it go once it
 * must: it is leaving, all is sent, and its end is closed. The one place
 * that decides, as settle() and update_interest() do in 06. An echo is one
 * chain, "send the reply, then wait for the next line": linked requests the
 * kernel runs in order as one, whose one completion is the recv's. */
static void after_io(struct client *c)
{
    if (c->pending_len > 0)
        take_pending(c);
    if (c->eof && c->pending_len == 0 && !c->sleeping && c->leaving == NULL)
        c->leaving = "client closed"; /* EOF, or a half-close: answer, then go */
    if (c->discarded > LINGER_BYTES) {
        drop_client(c, "kept sending after closing");
        return;
    }
    if (c->leaving == NULL && !c->receiving && wants_input(c)) {
        make_room(2); /* the chain in one submission */
        start_send(c, 1);
        arm_recv(c); /* alone if nothing is to be sent */
    }
    start_send(c, 0); /* no recv behind it: sleeping, too much unsent, leaving */
    if (c->leaving != NULL && unsent(c) == 0) {
        if (c->eof) {
            drop_client(c, c->leaving);
            return;
        }
        if (!c->lingering)
            start_lingering(c);
    }
    if (wants_input(c) && !c->receiving)
        arm_recv(c);
}

/* A new connection: a client, greeted; or, past the cap or without memory,
 * refused. Its port is the listener's (port). The peer's address is for
 * the log only, and a multishot accept has no room for it: getpeername()
 * asks, and describe_connection() names it, but not under -q, which
 * silences the log (two calls fewer per connection). */
static void welcome(int fd, int port)
{
    if (client_count >= opt.max_clients) {
        refuse_connection(fd, "at the cap");
        return;
    }
    struct client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        refuse_connection(fd, "out of memory");
        return;
    }
    c->fd = fd;
    c->local_port = port;
    if (!quiet) {
        struct sockaddr_in peer = {0};
        socklen_t peer_len = sizeof peer;
        getpeername(fd, (struct sockaddr *)&peer, &peer_len); /* if it fails, 0.0.0.0:0 */
        describe_connection(fd, &peer, c->peer);
    }
    client_count++;
    log_event("connect %s (fd %d)", c->peer, c->fd);
    send_greeting(c);
    after_io(c); /* the greeting's send, and the first recv: one io_uring_enter */
}

/* ============================ The client's events ========================== */

/* Its linked timeout cancelled a leaving client's recv (ours come only
 * once it is dropped). LINGER_MS since our FIN: closed, bytes unread or
 * not; returns 1. Else after_io arms the recv again. */
static int on_linger_over(struct client *c)
{
    if (!c->lingering || now_ms() < c->linger_until)
        return 0;
    drop_client(c, c->leaving);
    return 1;
}

/* A recv completed: bytes (res > 0, in the buffer the kernel picked), the
 * client's EOF (0), or an error; or no buffer was left (ENOBUFS): after_io
 * arms it again, and the kernel takes it when this turn has given buffers
 * back. Bytes it does not take now wait in c->pending. */
static void on_received(struct client *c, const struct io_uring_cqe *cqe)
{
    c->receiving = 0;
    if (cqe->res > 0) {
        size_t taken = take_bytes(c, buffer_of(cqe), (size_t)cqe->res);
        if (taken < (size_t)cqe->res)
            keep_pending(c, buffer_of(cqe) + taken, (size_t)cqe->res - taken);
    } else if (cqe->res == 0) {
        c->eof = 1;
    } else if (cqe->res == -ECANCELED) { /* its linger's timeout: see on_linger_over */
        if (on_linger_over(c))
            return;
    } else if (cqe->res != -ENOBUFS) {
        drop_client(c, strerror(-cqe->res)); /* ECONNRESET: the client reset */
        return;
    }
    after_io(c);
}

/* A send completed: res bytes went out. The kernel usually sends all of
 * it, but a send may take part (a signal, a socket shut down meanwhile):
 * the rest goes again. All sent: the buffer is ours again, and freed, so
 * an idle client holds none; after_io() sends what was queued meanwhile. */
static void on_sent(struct client *c, int res, int chained)
{
    if (res < 0 || chained) { /* EPIPE, ECONNRESET: gone; chained: it failed */
        drop_client(c, res < 0 ? strerror(-res) : "send cut short");
        return;
    }
    c->sent += (size_t)res;
    if (c->sent < c->sending_len) {
        submit_send(c, 0);
        return;
    }
    free(c->sending);
    c->sending = NULL;
    after_io(c);
}

/* "sleep <ms>" (protocol.c): a timeout on the ring instead of a sleep. The
 * loop goes on serving everyone; this client's next lines wait (in c->in,
 * or in the kernel: it is not read meanwhile) until the answer is out. */
static enum next_step hand_off_sleep(struct client *c, long ms)
{
    c->sleep_ms = ms;
    arm_timeout(&c->sleep_time, ms, tag(c, SLEEP));
    c->sleeping = 1;
    c->inflight++;
    return LATER;
}

/* The sleep is over (-ETIME, the timeout's normal end): answer it, then the
 * lines that waited behind it (one may be a sleep again), then send and
 * receive as usual. A client that started leaving meanwhile (its line
 * too long) is not answered. */
static void on_slept(struct client *c)
{
    c->sleeping = 0;
    if (c->leaving == NULL &&
        (reply_slept(c, c->sleep_ms) == CLOSE || (c->in_len > 0 && handle_input(c) == CLOSE)))
        c->leaving = "closed by server";
    release_input(c);
    after_io(c);
}


/* A completion for a client: one request fewer in flight, two for a chain's
 * (its other request never posts). A client already dropped waits for zero. */
static void on_client_event(struct client *c, enum op op, const struct io_uring_cqe *cqe)
{
    int chain = c->chained && (op == RECV || op == SEND);
    c->inflight -= chain ? 2 : 1;
    if (chain) { /* the send went out whole (the recv ran), or failed (it never will) */
        free(c->sending);
        c->sending = NULL;
        c->chained = c->receiving = 0;
    }
    if (c->gone) {
        if (c->inflight == 0)
            free_client(c);
        return;
    }
    switch (op) {
    case RECV: on_received(c, cqe); break;
    case SEND: on_sent(c, cqe->res, chain); break;
    case SLEEP: on_slept(c); break;
    default: break;
    }
}

/* =============================== The listeners ============================= */

/* A listening socket, and whether a request waits on it: its multishot
 * accept, or a poll (see wait_for_connection). (_Alignas: its address
 * carries a request's kind in its low 4 bits.) */
static struct listener {
    _Alignas(16) int fd;
    int port;   /* every socket it accepts has this port too */
    int armed;
} listeners[MAX_PORTS];
static int listener_count;

/* The pause in accepting after an error (overload.c), as a timeout. */
static struct {
    _Alignas(16) struct __kernel_timespec when; /* its address: a tag's */
    int armed;
} accept_pause;

/* One request that accepts connection after connection, a completion each
 * with the new socket, until it fails. io_uring waits for connections
 * itself, though the listener is non-blocking (for shed_connection's own
 * accept()). The new socket need not be: the kernel waits on it for us. */
static void arm_accept(struct listener *l)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tag(l, ACCEPT));
    l->armed = 1;
}

/* Out of descriptors, io_uring's accept fails with EMFILE at once, whether
 * a connection waits or not: it takes the descriptor before it looks. Armed
 * again, it would fail again, turn after turn. So, until a connection
 * comes, a poll waits on the listener; then the accept (which sheds the
 * connection, or takes it if descriptors were freed meanwhile). */
static void wait_for_connection(struct listener *l)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_poll_add(sqe, l->fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag(l, LISTENER_READY));
    l->armed = 1;
}

/* Every listener whose accept has ended accepts again; while accepting is
 * paused (overload.c), a timeout brings us back when the pause is over. */
static void arm_accepts(void)
{
    long long now = now_ms();
    for (int i = 0; i < listener_count; i++) {
        if (listeners[i].armed)
            continue;
        if (now >= accept_paused_until) {
            arm_accept(&listeners[i]);
        } else if (!accept_pause.armed) {
            arm_timeout(&accept_pause.when, (long)(accept_paused_until - now), tag(&accept_pause, ACCEPT_PAUSE));
            accept_pause.armed = 1;
        }
    }
}

/* An accept completed: a new client (res is its descriptor), or an error,
 * which ends the multishot accept: overload.c says what to do (EMFILE:
 * shed a connection; ENOMEM and the like: pause), and arm_accepts() arms
 * it again, now or after the pause; after EMFILE, once a connection waits. */
static void on_accepted(struct listener *l, const struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        l->armed = 0;
    if (cqe->res >= 0) {
        welcome(cqe->res, l->port);
    } else {
        errno = -cqe->res;
        after_accept_error(l->fd);
        if (cqe->res == -EMFILE && !l->armed)
            wait_for_connection(l);
    }
    arm_accepts();
}

/* ================================ The loop ================================= */

/* One completion: what it was for says who handles it. Whoever that was,
 * a buffer it carried goes back to the ring once its bytes are copied. */
static void on_completion(const struct io_uring_cqe *cqe)
{
    uint64_t user_data = io_uring_cqe_get_data64(cqe);
    void *object = (void *)(uintptr_t)(user_data & ~(uint64_t)15);
    enum op op = (enum op)(user_data & 15);
    switch (op) {
    case ACCEPT: on_accepted(object, cqe); break;
    case LISTENER_READY:
        ((struct listener *)object)->armed = 0;
        arm_accepts();
        break;
    case ACCEPT_PAUSE:
        accept_pause.armed = 0;
        arm_accepts();
        break;
    case CANCEL: break;
    case LINGER_TIMEOUT: break; /* what counts comes with its recv's */
    case CLOSE_FD: /* only a failed close posts one (see free_client) */
        fprintf(stderr, "server: close: %s\n", strerror(-cqe->res));
        break;
    default: on_client_event(object, op, cqe); break;
    }
    if (cqe->flags & IORING_CQE_F_BUFFER)
        give_back(cqe);
}

/* One turn per io_uring_enter: it submits every request the last turn
 * queued and waits for at least one completion (a reply's send, done at
 * once, would be it: hence the chains, see after_io); then every
 * completion in the CQ is handled, and the CQ's head moves past them all
 * at once. A signal makes it return -EINTR: go round again. */
static void serve_forever(void)
{
    for (;;) {
        int ret = io_uring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            fprintf(stderr, "server: io_uring_submit_and_wait: %s\n", strerror(-ret));
            exit(1);
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            on_completion(cqe);
            seen++;
        }
        io_uring_cq_advance(&ring, seen);
    }
}

/* ================================= Set-up ================================== */

/* Where io_uring cannot be used, say why and stop: a container's seccomp
 * filter (Docker's: EPERM), kernel.io_uring_disabled (EPERM), a kernel
 * without it (ENOSYS) or older than 6.1, which this server needs (EINVAL). */
static void io_uring_unavailable(int err)
{
    fprintf(stderr, "server: io_uring is not available here: %s (a kernel older than 6.1, "
                    "kernel.io_uring_disabled, or a seccomp filter)\n", strerror(err));
    exit(1);
}

/* The ring. SINGLE_ISSUER: only this thread submits. DEFER_TASKRUN: the
 * kernel finishes our requests' work (copying received bytes, posting
 * completions) only when we enter it to wait: fewer interruptions,
 * completions in batches. Both came in Linux 6.1, after everything else
 * used here (multishot accept and provided buffer rings, 5.19): asking for
 * them checks that the kernel is recent enough. SUBMIT_ALL: one bad request
 * does not hold back the others. CQSIZE: a CQ larger than the SQ. */
static void set_up_ring(void)
{
    struct io_uring_params params = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                 IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE,
        .cq_entries = CQ_ENTRIES};
    int ret = io_uring_queue_init_params(SQ_ENTRIES, &ring, &params);
    if (ret < 0)
        io_uring_unavailable(-ret);
}

/* The provided buffers: their ring (an array the kernel reads: page
 * aligned, mmap) and their memory, registered as group 0, all lent at once;
 * MAP_POPULATE makes the 1 MiB resident now, whoever the clients are. */
static void set_up_buffers(void)
{
    size_t ring_size = BUFFER_COUNT * sizeof(struct io_uring_buf);
    size_t memory_size = (size_t)BUFFER_COUNT * BUFFER_SIZE;
    /* cppcheck-suppress invalidFunctionArg ; an anonymous mapping takes fd -1 */
    buffers = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* cppcheck-suppress invalidFunctionArg ; the same */
    buffer_memory = mmap(NULL, memory_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (buffers == MAP_FAILED || buffer_memory == MAP_FAILED) {
        perror("server: mmap");
        exit(1);
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)buffers, .ring_entries = BUFFER_COUNT, .bgid = BUFFER_GROUP};
    int ret = io_uring_register_buf_ring(&ring, &reg, 0);
    if (ret < 0)
        io_uring_unavailable(-ret);
    io_uring_buf_ring_init(buffers);
    for (int id = 0; id < BUFFER_COUNT; id++)
        io_uring_buf_ring_add(buffers, buffer_memory + (size_t)id * BUFFER_SIZE, BUFFER_SIZE,
                              (unsigned short)id, io_uring_buf_ring_mask(BUFFER_COUNT), id);
    io_uring_buf_ring_advance(buffers, BUFFER_COUNT);
}

/* The listeners first (non-blocking, as in 06: shed_connection's accept()
 * must not wait), so that a bad address is a usage error (exit 2) and a
 * port in use a clear one (exit 1), wherever the server runs; then the
 * ring, and only then the ready lines: where io_uring is refused, none is
 * printed. Then the accepts, armed, and the spare descriptor. */
static void set_up_loop(const char *host, const int *ports, int nports)
{
    for (listener_count = 0; listener_count < nports; listener_count++) {
        int fd = open_listener(host, ports[listener_count]);
        if (fd < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
            exit(1);
        struct sockaddr_in addr;
        socklen_t len = sizeof addr;
        getsockname(fd, (struct sockaddr *)&addr, &len); /* -p 0: the kernel's pick */
        listeners[listener_count].fd = fd;
        listeners[listener_count].port = ntohs(addr.sin_port);
    }
    set_up_ring();
    set_up_buffers();
    for (int i = 0; i < listener_count; i++)
        print_ready_line(listeners[i].fd, host);
    arm_accepts();
    reserve_spare_fd();
}

/* ============================== Command line =============================== */

static void usage(void)
{
    fprintf(stderr, "usage: server [-H host] [-p port]... (up to 3) [-m max-clients] [-q]\n");
    exit(2);
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
        case 'm': opt.max_clients = parse_number(optarg, 1, MAX_CLIENTS_LIMIT); break;
        case 'q': quiet = 1; break;
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
    set_up_loop(opt.host, opt.ports, opt.nports);
    serve_forever();
}
