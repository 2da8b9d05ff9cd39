/*
 * nonblocking_io.c: how chapter 03 talks to a client without ever waiting:
 * replies go into the client's output queue and leave as the socket takes
 * them, input is read only while the queue is short (backpressure), and
 * even the close is a state of the client with a deadline, not a wait.
 * Chapters 06 and 09 serve their clients with this same code, so it lives
 * in this file, byte-for-byte the same in 03, 06 and 09 (the suite checks
 * it). server.c includes it after struct client and protocol.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Backpressure: stop reading a client whose unsent replies reach 64 KiB. The
 * largest answer per byte read is the usage error (46 bytes) to "sleep\n" (6
 * bytes): one recv() of IN_SIZE bytes can queue 683 of them, 31,418 bytes. So
 * a client can make us hold at most 65,535 + 31,418 = 96,953 bytes of
 * replies, in a buffer that doubles as it grows: 128 KiB, whatever it does
 * (the suite measures it). */
#define OUTPUT_HIGH_WATER (64 * 1024)

/* The output queue's first allocation: a few replies' worth. */
#define OUT_MIN_CAP 256

/* ================================== Output ================================= */

/* Send what the output queue holds, as much as the socket takes right now.
 * On a non-blocking socket, send() never waits: it takes part of the bytes
 * (a partial write) or fails with EAGAIN when the socket buffer is full. What
 * is left stays queued until the loop reports the socket writable.
 * Returns -1 when the connection failed. */
static int flush_output(struct client *c)
{
    while (c->out_len > 0) {
        ssize_t n = send(c->fd, c->out, c->out_len, 0);
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

/* The one rule for reading a client: never once it has closed its end;
 * always while it is leaving (its bytes are thrown away, see
 * start_lingering); while it is served, only while its queue is under the
 * high-water mark. */
static int wants_input(const struct client *c)
{
    return !c->eof && (c->leaving != NULL || c->out_len < OUTPUT_HIGH_WATER);
}

/* One recv() into c->in, which is allocated here when it is needed and
 * given back once no partial line waits in it: an idle client holds no
 * input buffer. Once the client is leaving, its bytes go to a scrap buffer
 * and are counted. Returns what recv() returned. */
static ssize_t receive(struct client *c)
{
    static char scrap[4096];
    ssize_t n;
    if (c->leaving == NULL && c->in == NULL && (c->in = malloc(IN_SIZE)) == NULL)
        return -1; /* errno is ENOMEM */
    do
        n = c->leaving ? recv(c->fd, scrap, sizeof scrap, 0)
                       : recv(c->fd, c->in + c->in_len, IN_SIZE - c->in_len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0 && c->leaving)
        c->discarded += (size_t)n;
    else if (n > 0)
        c->in_len += (size_t)n;
    return n;
}

static void release_input(struct client *c)
{
    if (c->in_len == 0 || c->leaving != NULL) {
        free(c->in);
        c->in = NULL;
        c->in_len = 0;
    }
}

/* Read once from a readable client and act on it: answer its complete lines
 * while it is served, note its EOF, throw its bytes away while it leaves.
 * Returns 1 when bytes came (more may be waiting), 0 when none did (EAGAIN,
 * or EOF), -1 when it must go now, c->leaving saying why. */
static int read_some(struct client *c)
{
    ssize_t n = receive(c);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0; /* nothing to read after all */
    if (n < 0) {
        c->leaving = strerror(errno); /* ECONNRESET: the client reset */
        return -1;
    }
    if (n == 0) {
        c->eof = 1;
        if (c->leaving == NULL)
            c->leaving = "client closed"; /* EOF, or a half-close: answer, then go */
        return 0;
    }
    if (c->leaving == NULL && handle_input(c) == CLOSE)
        c->leaving = "closed by server";
    if (c->discarded > LINGER_BYTES) {
        c->leaving = "kept sending after closing";
        return -1;
    }
    return 1;
}

/* =========================== The lingering close =========================== */

/* Clients whose FIN is sent, oldest first. Every linger lasts LINGER_MS, so
 * the oldest has the nearest deadline: a list kept in arrival order is
 * sorted by deadline, and the loop only ever looks at its head. */
static struct client *lingering_first, *lingering_last;

/* A leaving client's replies have all gone out. close() now, while its
 * bytes may still arrive, would make the kernel answer them with RST and
 * throw away replies it has not delivered yet. So: shutdown(SHUT_WR) sends
 * our FIN after the replies, and the loop keeps reading and discarding what
 * the client sends until it closes too, or LINGER_MS or LINGER_BYTES run
 * out. Nobody waits for it: it is one more state the loop keeps. */
static void start_lingering(struct client *c)
{
    shutdown(c->fd, SHUT_WR);
    c->linger_deadline = now_ms() + LINGER_MS;
    c->prev = lingering_last;
    c->next = NULL;
    if (lingering_last != NULL)
        lingering_last->next = c;
    else
        lingering_first = c;
    lingering_last = c;
}

static void stop_lingering(struct client *c)
{
    if (c->linger_deadline == 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        lingering_first = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        lingering_last = c->prev;
}

/* After a read or a write: send what fits, then say whether the client must
 * go now (CLOSE, c->leaving saying why): the connection failed, or it is
 * leaving, everything has gone out and it has closed its end. Leaving, all
 * sent, its end still open: its lingering close starts. */
static enum next_step settle(struct client *c)
{
    if (flush_output(c) < 0) {
        c->leaving = strerror(errno);
        return CLOSE;
    }
    if (c->leaving == NULL || c->out_len > 0)
        return KEEP_OPEN;
    if (c->eof)
        return CLOSE;
    if (c->linger_deadline == 0)
        start_lingering(c);
    return KEEP_OPEN;
}

/* Where the loop's wait must end: the oldest lingering close's deadline, or
 * the end of a pause in accepting (overload.c), whichever comes first.
 * Returns milliseconds from now, or -1 for no limit. */
static int ms_to_next_deadline(void)
{
    long long now = now_ms(), next = -1;
    if (lingering_first != NULL)
        next = lingering_first->linger_deadline;
    if (accept_paused_until > now && (next < 0 || accept_paused_until < next))
        next = accept_paused_until;
    if (next < 0)
        return -1;
    return next > now ? (int)(next - now) : 0;
}
