/*
 * overload.c: what an event loop does when it cannot take a connection: it
 * refuses it with a line that says why, sheds it when descriptors run out,
 * and pauses accepting (never serving) on errors a retry cannot fix at once.
 * The same file in every chapter with an event loop (02, 03, 06, 09; the
 * suite checks it). server.c includes it after protocol.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

/* After an accept() error that retrying cannot fix at once (no memory),
 * the listeners are left alone this long. */
#define ACCEPT_PAUSE_MS 100

/* One descriptor kept open for the day they run out: see shed_connection. */
static int spare_fd = -1;

/* Taken at start, while descriptors are plentiful, and after each use. */
static void reserve_spare_fd(void)
{
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Until then, the loop leaves the listeners alone (see after_accept_error). */
static long long accept_paused_until;

/* Past the cap, or on a descriptor the loop cannot watch: tell the client
 * and let it go. It has sent nothing yet, so close() ends the connection
 * with a FIN after our line, no lingering needed. */
static void refuse_connection(int fd, const char *why)
{
    static const char busy[] = "error server busy\n";
    if (send(fd, busy, sizeof busy - 1, MSG_DONTWAIT) < 0) {
        /* it is gone already: nothing more to tell it */
    }
    close(fd);
    log_event("refused a connection: %s", why);
}

/* Out of descriptors (EMFILE): the connection stays in the accept queue, so
 * the listener stays readable, and the loop would spin on a failing accept().
 * A descriptor kept in reserve gets us out: give it up, accept the waiting
 * connection, tell it we are busy, close it, take the reserve back (libuv
 * does the same). Returns 0 if a connection was shed. */
static int shed_connection(int listen_fd)
{
    if (spare_fd < 0)
        reserve_spare_fd();
    if (spare_fd < 0)
        return -1; /* the reserve was lost to another process: cannot shed */
    close(spare_fd);
    int fd = accept(listen_fd, NULL, NULL);
    if (fd >= 0)
        refuse_connection(fd, "out of descriptors");
    reserve_spare_fd();
    return fd >= 0 ? 0 : -1;
}

/* accept() failed. A signal (EINTR), or a connection reset before we took
 * it (ECONNABORTED): try again. Out of descriptors (EMFILE): shed the
 * connection, and try again. No connection waiting after all (EAGAIN): stop.
 * Anything else (ENOBUFS, ENOMEM, ENFILE, EPERM, or a shed that failed): the
 * listener stays ready and retrying at once would spin at full CPU, so stop
 * watching the listeners for ACCEPT_PAUSE_MS, while the clients already here
 * go on being served. Returns 1 when accept() may be tried again now. */
static int after_accept_error(int listen_fd)
{
    if (errno == EINTR || errno == ECONNABORTED)
        return 1;
    if (errno == EMFILE && shed_connection(listen_fd) == 0)
        return 1;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
    perror("server: accept");
    accept_paused_until = now_ms() + ACCEPT_PAUSE_MS;
    return 0;
}
