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
 *       each one receives, then "answered A of N"; hold them all open
 *       until stdin ends.
 *
 *   probe -p PORT -f MIB [-t SECONDS]
 *       Flood: send lines of 1 KiB, up to MIB MiB, and never read a reply.
 *       Prints "sent B bytes" once done or once the server stops taking
 *       bytes for a second; holds the connection open until stdin ends.
 *
 * Every wait is bounded by -t (default 5 s). Exit status: 0 when the reads
 * ended as asked, 3 on timeout, 1 on a socket error, 2 on bad arguments.
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

static struct {
    const char *host;
    int ports[MAX_PORTS], nports;
    const char *unix_path; /* --unix: this socket file instead of host and ports */
    int split, half_close, reset;
    int lines, conns, flood_mib;
    double timeout;
} opt = {.host = "127.0.0.1", .timeout = 5};

static void usage(void)
{
    fprintf(stderr, "usage: probe [-H host] -p port[,port...] [-s] [-w|-r] [-n lines]\n"
                    "             [-c conns] [-f mib] [-t seconds]\n"
                    "       probe --unix path [the same options but -H and -p]\n");
    exit(2);
}

static void parse_ports(char *list)
{
    for (char *p = strtok(list, ","); p != NULL; p = strtok(NULL, ",")) {
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
    while ((c = getopt_long(argc, argv, "H:p:swrn:c:f:t:", long_options, NULL)) != -1) {
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
 * socket; TCP's grow to megabytes and hide it). */
static void send_data(int fd, const char *data, size_t len, double deadline)
{
    int one = 1;
    if (opt.split && opt.unix_path == NULL)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    size_t step = opt.split ? 1 : len;
    for (size_t off = 0; off < len && in.state > 0;) {
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
        if (poll(&p, 1, ms_left(deadline)) == 0) {
            fprintf(stderr, "probe: timed out after sending %zu of %zu bytes\n", off, len);
            return;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR))
            receive_some(fd);
        if (!(p.revents & POLLOUT) || in.state <= 0)
            continue;
        ssize_t n = send(fd, data + off, step < len - off ? step : len - off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            /* The server closed while we were still sending (a line too
             * long, say). What it said before closing may still be
             * waiting to be read, so go and read it. */
            fprintf(stderr, "probe: send: %s\n", strerror(errno));
            return;
        }
        off += n > 0 ? (size_t)n : 0;
        if (opt.split && n > 0 && off < len)
            usleep(SPLIT_GAP_US);
    }
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
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ms_left(deadline)) == 0) {
            fprintf(stderr, "probe: timed out after %d lines\n", in.lines);
            return 3;
        }
        receive_some(fd);
    }
    return in.state < 0 ? 1 : 0;
}

static int run_exchange(void)
{
    char *data;
    size_t len = read_stdin(&data);
    int fd = connect_to(0);
    double deadline = now() + opt.timeout;
    send_data(fd, data, len, deadline);
    free(data);
    if (opt.reset) {
        reset_connection(fd);
        return 0;
    }
    if (opt.half_close && in.state > 0)
        shutdown(fd, SHUT_WR); /* FIN: "I am done sending", but still reading */
    int status = receive_all(fd, deadline);
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

/* Read each connection's first line; print it as it arrives. */
static int collect_first_lines(struct pollfd *p, int n, double deadline)
{
    static char buf[MAX_LINE + 1];
    int answered = 0;
    while (answered < n && poll(p, (nfds_t)n, ms_left(deadline)) > 0) {
        for (int i = 0; i < n; i++) {
            if (p[i].revents == 0)
                continue;
            /* MSG_PEEK first: take only the first line, leave the rest. */
            ssize_t len = recv(p[i].fd, buf, MAX_LINE, MSG_PEEK);
            char *nl = len > 0 ? memchr(buf, '\n', (size_t)len) : NULL;
            if (nl == NULL && len > 0 && len < MAX_LINE)
                continue; /* a partial line: wait for the rest */
            if (len > 0)
                printf("%.*s\n", (int)(nl ? nl - buf : len), buf);
            else
                printf("(closed without a line)\n");
            p[i].fd = -p[i].fd - 1; /* poll() skips negative descriptors */
            answered++;
        }
    }
    return answered;
}

static int run_many(void)
{
    raise_fd_limit(opt.conns);
    struct pollfd *p = calloc((size_t)opt.conns, sizeof *p);
    for (int i = 0; p != NULL && i < opt.conns; i++)
        p[i] = (struct pollfd){.fd = connect_to(i), .events = POLLIN};
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

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    if (opt.conns > 0)
        return run_many();
    if (opt.flood_mib > 0)
        return run_flood();
    return run_exchange();
}
