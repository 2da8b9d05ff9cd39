/*
 * blocking_io.c: how chapter 01 talks to a client, with blocking calls:
 * recv() waits for bytes, send() waits for room, and the lingering close
 * waits for the client to close its end. Chapters 02, 04, 05 and 08 serve
 * their clients with this same code, so it lives in this file, byte-for-byte
 * the same in those five chapters (the suite checks it). server.c includes
 * it after struct client and protocol.c.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Send all of buf. send() on a blocking socket may still send less than asked
 * (a signal, a full buffer), so loop until all of it is gone. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, 0);
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
    return send_all(c->fd, out, len + 1) == 0 ? KEEP_OPEN : CLOSE;
}

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

/* Read and throw away what the client still sends, until it closes its end
 * (recv() returns 0), fails, or LINGER_MS or LINGER_BYTES run out. */
static void discard_until_eof(int fd)
{
    char scrap[4096];
    size_t total = 0;
    long long deadline = now_ms() + LINGER_MS;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        long long left = deadline - now_ms();
        if (left <= 0 || total >= LINGER_BYTES)
            return;
        int ready = poll(&p, 1, (int)left);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return;
        ssize_t n = recv(fd, scrap, sizeof scrap, 0);
        if (n <= 0)
            return;
        total += (size_t)n;
    }
}

/* The lingering close. close() on a socket whose receive queue still holds
 * bytes we never read makes the kernel answer with RST and throw away every
 * reply not yet delivered: a client that sent "quit" and more lines after it
 * would lose its last echoes and the "bye". So: shutdown(SHUT_WR) sends a FIN
 * after the replies, then we read and discard until the client closes too,
 * and only then close(). A client that never closes holds us LINGER_MS: in
 * 01 the next client waits that long, in 02 every client does, in 04 and 05
 * only this client's own thread or process, in 08 one worker of the pool. */
static void close_client(struct client *c, const char *why)
{
    shutdown(c->fd, SHUT_WR);
    discard_until_eof(c->fd);
    close(c->fd);
    log_event("disconnect %s: %s", c->peer, why);
}
