/*
 * scripts/probe.c: a raw TCP client for the tests and the demos, for when the
 * chapter's own client is too polite. It controls exactly how bytes go out.
 * Every mode also works on a Unix stream socket: --unix PATH in place of -p
 * (07-socketserver-clone serves one).
 *
 *   probe -p PORT [-s] [-w | -r] [-n LINES] [-t SECONDS]   < bytes
 *       Send stdin in one send() as far as the socket takes it (or one byte
 *       per send(), 1 ms apart, with -s), copying replies meanwhile; then:
 *       -w  shut down the write side (half-close) and read until EOF;
 *       -r  reset the connection (RST) and exit at once (a Unix socket has
 *           no RST: it is closed, and the server sees it end mid-line);
 *       otherwise read until EOF, or until LINES lines came.
 *       Received bytes go to stdout untouched.
 *
 *   probe -p PORT[,PORT...] -c N [-t SECONDS]
 *       Open N connections (spread over the ports), print the first line
 *       each one receives ("(closed without a line)" or "(closed mid-line:
 *       BYTES)" if it ends first), then "answered A of N", A counting those
 *       lines and closes; hold them all open until stdin ends.
 *
 *   probe -p PORT -f MIB [-t SECONDS]
 *       Flood: send lines of 1 KiB, up to MIB MiB, and never read a reply.
 *       Prints "sent B bytes" once done or once the server stops taking
 *       bytes for a second; holds the connection open until stdin ends.
 *
 *   probe -p PORT -L [-t SECONDS]
 *       Does the server lose replies when it closes with input unread? With
 *       a 4 KiB receive buffer, read the greeting, send 2,000 lines of 100
 *       bytes and "quit" without reading, then keep sending: a short line at
 *       once, one 0.2 s later, one before each read while reading to the
 *       end. Prints "received N of 200004 bytes, bye: yes|no, end: EOF|
 *       reset|timeout" ("bytes (wrong bytes)" if the echoes differ; bye: yes
 *       when every echo and "bye" came). A lingering close gives all of it
 *       and EOF; a close() with our lines unread gives RST, which drops the
 *       replies still queued.
 *
 * Every wait is bounded by -t (default 5 s), even while the peer keeps
 * sending; in the first mode one deadline covers the send and the reads.
 * Exit status: 0 when the reads ended as asked (-L: at EOF or reset), 3 on
 * timeout (-r too, if the send did not end in time), 1 on a socket error,
 * 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 8
#define MAX_LINE 4097        /* the protocol's longest line and its '\n' */
#define FLOOD_LINE 1024      /* bytes per flood line, '\n' included */
#define STUCK_MS 1000        /* no progress this long: the server stopped reading */
#define SPLIT_GAP_US 1000    /* -s: time between one-byte segments */
#define RECHECK_MS 10        /* -c: how often to look again at part of a line */
#define CLOSE_LINES 2000     /* -L: lines sent before "quit", 100 bytes each */
#define CLOSE_RCVBUF 4096    /* -L: our receive buffer, to back the replies up */
#define CLOSE_PAUSE_MS 200   /* -L: time not reading after "quit" */

static struct {
    const char *host;
    int ports[MAX_PORTS], nports;
    const char *unix_path; /* --unix: this socket file instead of host and ports */
    int split, half_close, reset;
    int lines, conns, flood_mib;
    int close_check; /* -L */
    double timeout;
} opt = {.host = "127.0.0.1", .timeout = 5};

static void usage(void)
{
    fprintf(stderr, "usage: probe [-H host] -p port[,port...] [-s] [-w|-r] [-n lines]\n"
                    "             [-c conns] [-f mib] [-L] [-t seconds]\n"
                    "       probe --unix path [the same options but -H and -p]\n");
    exit(2);
}

static void parse_ports(char *list)
{
    char *rest = NULL;
    for (char *p = strtok_r(list, ",", &rest); p != NULL; p = strtok_r(NULL, ",", &rest)) {
        int port = atoi(p);
        if (port < 1 || port > 65535 || opt.nports == MAX_PORTS)
            usage();
        opt.ports[opt.nports++] = port;
    }
}

static void parse_options(int argc, char **argv)
{
    static const struct option long_options[] = {{"unix", required_argument, NULL, 'u'},
                                                 {NULL, 0, NULL, 0}};
    struct sockaddr_un un;
    int c;
    while ((c = getopt_long(argc, argv, "H:p:swrn:c:f:Lt:", long_options, NULL)) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p': parse_ports(optarg); break;
        case 'u': opt.unix_path = optarg; break;
        case 's': opt.split = 1; break;
        case 'w': opt.half_close = 1; break;
        case 'r': opt.reset = 1; break;
        case 'n': opt.lines = atoi(optarg); break;
        case 'c': opt.conns = atoi(optarg); break;
        case 'f': opt.flood_mib = atoi(optarg); break;
        case 'L': opt.close_check = 1; break;
        case 't': opt.timeout = atof(optarg); break;
        default: usage();
        }
    }
    /* Ports or a path, not both; a path must fit in sun_path with its NUL. */
    if ((opt.nports == 0) == (opt.unix_path == NULL) || optind != argc || opt.timeout <= 0 ||
        (opt.unix_path != NULL && strlen(opt.unix_path) >= sizeof un.sun_path))
        usage();
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Milliseconds left before the deadline, for poll(). */
static int ms_left(double deadline)
{
    double left = deadline - now();
    return left > 0 ? (int)(left * 1000) + 1 : 0;
}

/* Wait until fd is ready for events, or the deadline. Returns what poll()
 * reported, or 0 once the deadline has passed. The deadline is checked
 * first, on every call: poll() with no time left still reports a socket
 * that is ready, and a peer that keeps ours readable (it never stops
 * sending) would otherwise keep a loop around this one going forever. */
static int wait_until(int fd, short events, double deadline)
{
    int wait = ms_left(deadline);
    struct pollfd p = {.fd = fd, .events = events};
    if (wait == 0 || poll(&p, 1, wait) <= 0)
        return 0;
    return p.revents;
}

/* The server's address for connection i: the Unix socket file, or the ports
 * in turn. The only place that tells the two families apart; the length
 * parse_options() checked. */
static socklen_t server_address(int i, struct sockaddr_storage *addr)
{
    memset(addr, 0, sizeof *addr);
    if (opt.unix_path != NULL) {
        struct sockaddr_un *un = (struct sockaddr_un *)addr;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, opt.unix_path, strlen(opt.unix_path) + 1);
        return sizeof *un;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)addr;
    in->sin_family = AF_INET;
    in->sin_port = htons((unsigned short)opt.ports[i % opt.nports]);
    if (inet_pton(AF_INET, opt.host, &in->sin_addr) != 1)
        usage();
    return sizeof *in;
}

/* Connection i, connected (see server_address()), or the reason it is not. */
static int connect_to(int i)
{
    struct sockaddr_storage addr;
    socklen_t len = server_address(i, &addr);
    int fd = socket(addr.ss_family, SOCK_STREAM, 0);
    /* -L: a small receive buffer, set before connect() since it sizes the
     * window TCP offers (a Unix socket ignores it). */
    int rcvbuf = CLOSE_RCVBUF;
    if (fd >= 0 && opt.close_check &&
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0)
        perror("probe: setsockopt SO_RCVBUF");
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, len) < 0) {
        if (opt.unix_path != NULL)
            fprintf(stderr, "probe: cannot connect to unix:%s: %s\n", opt.unix_path,
                    strerror(errno));
        else
            fprintf(stderr, "probe: cannot connect to %s:%d: %s\n", opt.host,
                    opt.ports[i % opt.nports], strerror(errno));
        exit(1);
    }
    return fd;
}

/* Block until stdin ends: the caller holds its connections open till then. */
static void hold_until_stdin_ends(void)
{
    char buf[256];
    while (read(STDIN_FILENO, buf, sizeof buf) > 0)
        ;
}

/* ===================== One connection, exact bytes ======================= */

static size_t read_stdin(char **data)
{
    size_t len = 0, cap = 1 << 16;
    *data = malloc(cap);
    ssize_t n;
    while (*data != NULL && (n = read(STDIN_FILENO, *data + len, cap - len)) > 0) {
        len += (size_t)n;
        if (len == cap)
            *data = realloc(*data, cap *= 2);
    }
    if (*data == NULL) {
        perror("probe: stdin");
        exit(1);
    }
    return len;
}

/* What arrived so far, and how it ended: 1 while the connection is open, 0
 * once the server closed it, -1 after an error. */
static struct {
    int lines;
    int state;
} in = {.state = 1};

/* Copy what one recv() brings to stdout (the poll() before it said there is
 * something: bytes, the end, or an error). */
static void receive_some(int fd)
{
    char buf[65536];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (n < 0)
            perror("probe: recv");
        in.state = n < 0 ? -1 : 0;
        return;
    }
    fwrite(buf, 1, (size_t)n, stdout);
    for (ssize_t i = 0; i < n; i++)
        in.lines += buf[i] == '\n';
}

/* One send() for as much as the socket takes (several lines in one segment),
 * or (-s) one segment per byte: TCP_NODELAY turns off Nagle's algorithm,
 * which would otherwise glue the bytes back together (a Unix socket has no
 * Nagle to turn off), and a pause of SPLIT_GAP_US lets the server read each
 * byte on its own. Replies are read while sending: a client that only reads
 * once it has sent everything deadlocks with a server that echoes, as soon
 * as the replies fill the socket buffers (a few hundred KiB on a Unix
 * socket; TCP's grow to megabytes and hide it). No send() blocks
 * (MSG_DONTWAIT), so a server that stops reading cannot hold us past the
 * deadline. Returns 0, or 3 if the deadline came first. */
static int send_data(int fd, const char *data, size_t len, double deadline)
{
    int one = 1;
    if (opt.split && opt.unix_path == NULL)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    size_t step = opt.split ? 1 : len;
    for (size_t off = 0; off < len && in.state > 0;) {
        int revents = wait_until(fd, POLLIN | POLLOUT, deadline);
        if (revents == 0) {
            fprintf(stderr, "probe: timed out after sending %zu of %zu bytes\n", off, len);
            return 3;
        }
        if (revents & (POLLIN | POLLHUP | POLLERR))
            receive_some(fd);
        if (!(revents & POLLOUT) || in.state <= 0)
            continue;
        ssize_t n = send(fd, data + off, step < len - off ? step : len - off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            /* The server closed while we were still sending (a line too
             * long, say). What it said before closing may still be
             * waiting to be read, so go and read it. errno is only
             * meaningful here, where send() returned -1. */
            fprintf(stderr, "probe: send: %s\n", strerror(errno));
            return 0;
        }
        off += n > 0 ? (size_t)n : 0;
        if (opt.split && n > 0 && off < len)
            usleep(SPLIT_GAP_US);
    }
    return 0;
}

/* SO_LINGER with a zero timeout makes close() send RST instead of FIN: the
 * connection is torn down, not closed politely. */
static void reset_connection(int fd)
{
    struct linger lin = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
    close(fd);
}

/* Copy received bytes to stdout until EOF, -n lines, or the deadline. */
static int receive_all(int fd, double deadline)
{
    while (in.state > 0 && !(opt.lines > 0 && in.lines >= opt.lines)) {
        if (wait_until(fd, POLLIN, deadline) == 0) {
            fprintf(stderr, "probe: timed out after %d lines\n", in.lines);
            return 3;
        }
        receive_some(fd);
    }
    return in.state < 0 ? 1 : 0;
}

/* One deadline covers the whole exchange: the send, then the reads. */
static int run_exchange(void)
{
    char *data;
    size_t len = read_stdin(&data);
    int fd = connect_to(0);
    double deadline = now() + opt.timeout;
    int status = send_data(fd, data, len, deadline);
    free(data);
    if (opt.reset) {
        reset_connection(fd);
        return status;
    }
    if (status == 0 && opt.half_close && in.state > 0)
        shutdown(fd, SHUT_WR); /* FIN: "I am done sending", but still reading */
    if (status == 0)
        status = receive_all(fd, deadline);
    fflush(stdout);
    close(fd);
    return status;
}

/* ========================= Many connections =========================== */

/* Let this process open as many descriptors as the hard limit allows. */
static void raise_fd_limit(int wanted)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)wanted + 16) {
        fprintf(stderr, "probe: %d connections need `ulimit -n %d` (hard limit is %ld)\n",
                wanted, wanted + 16, (long)rl.rlim_max);
        exit(1);
    }
}

/* Print connection p's first line once it has come whole, or how the
 * connection ended without one. Returns 1 once something is printed, 0
 * while only part of the line is there (or nothing yet). MSG_PEEK looks
 * without taking: the line stays in the socket, and so does what follows. */
static int print_first_line(const struct pollfd *p)
{
    static char buf[MAX_LINE + 1];
    ssize_t len = recv(p->fd, buf, MAX_LINE, MSG_PEEK | MSG_DONTWAIT);
    if (len < 0 && errno == EAGAIN)
        return 0; /* nothing after all (MSG_DONTWAIT: never wait here, past -t) */
    char *nl = len > 0 ? memchr(buf, '\n', (size_t)len) : NULL;
    int closed = p->revents & (POLLRDHUP | POLLHUP | POLLERR);
    if (nl == NULL && len > 0 && len < MAX_LINE && !closed)
        return 0; /* part of a line: the rest may come */
    if (nl != NULL || len == MAX_LINE)
        printf("%.*s\n", (int)(nl ? nl - buf : len), buf);
    else if (len > 0)
        printf("(closed mid-line: %.*s)\n", (int)len, buf);
    else
        printf("(closed without a line)\n");
    return 1;
}

/* Read each connection's first line; print it as it arrives. A connection
 * with part of a line stops asking poll() for POLLIN: its socket stays
 * readable, so poll() would return at once, again and again (a busy loop).
 * It asks for POLLRDHUP only, which reports the peer closing, and we peek
 * again every RECHECK_MS for the rest of the line. */
static int collect_first_lines(struct pollfd *p, int n, double deadline)
{
    int answered = 0, partial = 0;
    while (answered < n && ms_left(deadline) > 0) {
        int wait = ms_left(deadline);
        if (partial > 0 && wait > RECHECK_MS)
            wait = RECHECK_MS;
        if (poll(p, (nfds_t)n, wait) < 0) {
            perror("probe: poll");
            break;
        }
        partial = 0;
        for (int i = 0; i < n; i++) {
            int has_part = p[i].events == POLLRDHUP; /* part of a line came: see below */
            if (p[i].fd < 0 || (p[i].revents == 0 && !has_part))
                continue;
            if (print_first_line(&p[i])) {
                p[i].fd = -p[i].fd - 1; /* poll() skips negative descriptors */
                answered++;
            } else {
                p[i].events = POLLRDHUP;
                partial++;
            }
        }
    }
    return answered;
}

static int run_many(void)
{
    raise_fd_limit(opt.conns);
    struct pollfd *p = calloc((size_t)opt.conns, sizeof *p);
    for (int i = 0; p != NULL && i < opt.conns; i++)
        p[i] = (struct pollfd){.fd = connect_to(i), .events = POLLIN | POLLRDHUP};
    if (p == NULL)
        return 1;
    int answered = collect_first_lines(p, opt.conns, now() + opt.timeout);
    printf("answered %d of %d\n", answered, opt.conns);
    fflush(stdout);
    hold_until_stdin_ends();
    for (int i = 0; i < opt.conns; i++)
        close(p[i].fd < 0 ? -p[i].fd - 1 : p[i].fd);
    free(p);
    return 0;
}

/* ================================ Flood ================================ */

static int run_flood(void)
{
    static char line[FLOOD_LINE];
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\n';

    int fd = connect_to(0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    long long total = (long long)opt.flood_mib << 20, sent = 0;
    double deadline = now() + opt.timeout;
    size_t off = 0;
    while (sent < total) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int wait = ms_left(deadline);
        if (poll(&p, 1, wait < STUCK_MS ? wait : STUCK_MS) == 0)
            break; /* no room for a second, or out of time */
        ssize_t n = send(fd, line + off, sizeof line - off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            perror("probe: send");
            return 1;
        }
        if (n > 0) {
            sent += n;
            off = (off + (size_t)n) % sizeof line;
        }
    }
    printf("sent %lld bytes\n", sent);
    fflush(stdout);
    hold_until_stdin_ends();
    close(fd);
    return 0;
}

/* ===================== Closing with input unread (-L) ===================== */

/* What we send (the lines, then "quit") and the replies they must bring. */
#define CLOSE_BODY (CLOSE_LINES * 100)
static char close_sent[CLOSE_BODY + sizeof "quit\n"], close_expected[CLOSE_BODY + sizeof "bye\n"];

/* What came back: bytes, whether they differ from close_expected, and
 * whether a send() saw the reset (the error is reported once: a recv()
 * after it ends with 0, as if at EOF). */
static struct {
    size_t got;
    int wrong, reset;
} back;

static void make_close_lines(void)
{
    for (int i = 0; i < CLOSE_LINES; i++)
        snprintf(close_sent + i * 100, 101, "%099d\n", i); /* 101: room for the NUL */
    memcpy(close_expected, close_sent, CLOSE_BODY);
    memcpy(close_sent + CLOSE_BODY, "quit\n", sizeof "quit\n");
    memcpy(close_expected + CLOSE_BODY, "bye\n", sizeof "bye\n");
}

/* Read the greeting up to its '\n', byte by byte: nothing follows it until
 * we send. 0 once read, -1 if the server closed, failed or took too long. */
static int skip_greeting(int fd, double deadline)
{
    char c = 0;
    while (c != '\n') {
        if (wait_until(fd, POLLIN, deadline) == 0 || recv(fd, &c, 1, 0) <= 0) {
            fprintf(stderr, "probe: no greeting\n");
            return -1;
        }
    }
    return 0;
}

/* All of close_sent, without reading a byte. 0 once sent, -1 if the socket
 * took no more before the deadline, or failed. */
static int send_without_reading(int fd, double deadline)
{
    size_t len = sizeof close_sent - 1;
    for (size_t off = 0; off < len;) {
        if (wait_until(fd, POLLOUT, deadline) == 0) {
            fprintf(stderr, "probe: sent only %zu of %zu bytes without reading\n", off, len);
            return -1;
        }
        ssize_t n = send(fd, close_sent + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            perror("probe: send");
            return -1;
        }
        off += n > 0 ? (size_t)n : 0;
    }
    return 0;
}

/* One more short line after "quit", so that our bytes are unread when the
 * server closes, or reach it after (a closed TCP socket answers them with
 * RST too). After a reset send() fails: ECONNRESET once, EPIPE after that
 * (and on a Unix socket once the server has closed). */
static void send_trailer(int fd)
{
    static const char trailer[] = "after quit\n";
    if (send(fd, trailer, sizeof trailer - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        back.reset |= errno == ECONNRESET;
        if (errno != ECONNRESET && errno != EPIPE && errno != EAGAIN)
            perror("probe: send");
    }
}

/* Read to the end, a short line sent before each read. How it ended: "EOF",
 * "reset", "timeout", or the error. */
static const char *read_to_the_end(int fd, double deadline)
{
    static char buf[65536];
    size_t len = sizeof close_expected - 1;
    for (;;) {
        send_trailer(fd);
        if (wait_until(fd, POLLIN, deadline) == 0)
            return "timeout";
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
            return back.reset ? "reset" : "EOF";
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return errno == ECONNRESET ? "reset" : strerror(errno);
        if (n > 0) {
            back.wrong |= back.got + (size_t)n > len ||
                          memcmp(buf, close_expected + back.got, (size_t)n) != 0;
            back.got += (size_t)n;
        }
    }
}

/* The pause is what makes the outcome certain. On loopback the server's send
 * buffer grows to hold the 200 kB of replies (ours holds 4 KiB), so it reaches
 * "quit" and closes within milliseconds (tens under valgrind) with nearly all
 * of them still queued; the line we send after the pause then finds it closed.
 * Without the pause we would read while it echoes, and a plain close() could
 * find nothing left to lose. */
static int run_close_check(void)
{
    make_close_lines();
    int fd = connect_to(0);
    double deadline = now() + opt.timeout;
    if (skip_greeting(fd, deadline) < 0 || send_without_reading(fd, deadline) < 0)
        return 3;
    send_trailer(fd);
    poll(NULL, 0, CLOSE_PAUSE_MS); /* not reading: the replies back up */
    const char *end = read_to_the_end(fd, deadline);
    close(fd); /* at once: a lingering server waits for our EOF */
    size_t len = sizeof close_expected - 1;
    printf("received %zu of %zu bytes%s, bye: %s, end: %s\n", back.got, len,
           back.wrong ? " (wrong bytes)" : "", !back.wrong && back.got == len ? "yes" : "no", end);
    if (strcmp(end, "timeout") == 0)
        return 3;
    return strcmp(end, "EOF") == 0 || strcmp(end, "reset") == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    if (opt.conns > 0)
        return run_many();
    if (opt.flood_mib > 0)
        return run_flood();
    if (opt.close_check)
        return run_close_check();
    return run_exchange();
}
