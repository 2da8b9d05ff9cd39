/*
 * scripts/loadgen.c: a load generator for the course's line protocol. One
 * thread, one epoll instance and non-blocking sockets drive thousands of
 * connections at once, so the client costs less than the servers it measures.
 *
 *   loadgen -p PORT[,PORT...] [-H host] [-c conns] [-i idle] [-n msgs]
 *           [-s size] [-S percent] [-k inflight] [-r] [-t seconds]
 *           [-P server-pid] [-C]
 *   loadgen --unix PATH [the same options but -H and -p]
 *
 *   -p  the server's port(s); connections are spread over them round-robin
 *   -H  the server's address, loopback only (default 127.0.0.1)
 *   --unix  every connection to this Unix stream socket instead (07 serves one)
 *   -c  busy connections (default 10)
 *   -i  idle connections: greeted, then held open and silent (default 0)
 *   -n  lines each busy connection sends (default 1000; 0: connect only);
 *       with -r, the number of connections to complete
 *   -s  bytes per line, '\n' included (default 64, from 16 to 4097)
 *   -S  this share of the lines, in percent, is "sleep 10" instead: slow
 *       work for the server (10 ms), answered "slept 10" (default 0)
 *   -k  lines in flight per connection (default 1: strict ping-pong)
 *   -r  churn: -c connections at a time, each connects, reads the greeting,
 *       sends "quit", reads "bye", sees the server close, and closes
 *   -t  time limit for the whole run, in seconds (default 30)
 *   -P  the server's pid: report its CPU time per message and its memory
 *       (resident now, and at its peak: the kernel's VmHWM)
 *   -C  print one CSV line instead of the report, with these columns:
 *       mode,conns,idle,msgs,size,inflight,opened,greeted,failed,seconds,rate,
 *       p50_us,p99_us,p999_us,max_us,connect_p50_us,connect_p99_us,
 *       server_cpu_us_per_op,server_rss_kib,server_peak_kib,loadgen_cpu_pct
 *       (mode is echo, connect or churn; rate is messages or connections per
 *       second; a column that does not apply is left empty). loadgen_cpu_pct
 *       is loadgen's own CPU time over the wall time of phase 2 (or the
 *       churn): near 100, the figures measure loadgen's limit, not the
 *       server's.
 *
 * Phase 1, connect: every connection, idle and busy, is opened at once, and
 * each must receive its "hello" line while all of them are still open. That
 * proves the server serves them concurrently: chapter 01 greets only one.
 * Phase 2, echo: each busy connection sends its lines in a closed loop (a new
 * line when an echo completes) and checks every echoed byte, so the figures
 * count only correct work. With -r, churn replaces phase 2 and measures what
 * a connection itself costs the server.
 *
 * Exit status: 0 when every connection was greeted and every line came back
 * byte for byte, 1 on any failure or timeout, 2 on bad arguments. Failures
 * are described on stderr, the report goes to stdout. For example:
 *
 *   03-select-rw-split/server -p 0 -q &       (prints its port)
 *   scripts/loadgen -p PORT -c 100 -n 1000 -P $!
 *
 * The file reads top to bottom: configuration, command line, time and
 * histograms, connections, phase 1, phase 2, churn, the event loop, the
 * server's CPU and memory, reporting, main.
 */
#define _GNU_SOURCE /* SOCK_NONBLOCK, SOCK_CLOEXEC, getopt_long */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ============================== Configuration ============================== */

#define MAX_PORTS 8 /* plenty: chapter 02 listens on three */

/* Every line starts "m<connection>.<sequence> " in hex. These caps keep that
 * header within 14 bytes (5 and 6 hex digits), so it fits the shortest line
 * and no two lines of a run are alike. */
#define MAX_CONNS 1000000
#define MAX_MSGS 10000000
#define MIN_SIZE 16   /* the 14-byte header, one filler byte, '\n' */
#define MAX_SIZE 4097 /* the protocol's longest line, 4096 bytes, and '\n' */

/* Each line in flight costs 8 bytes per connection (its send time). Deeper
 * pipelines measure socket buffers more than the server. */
#define MAX_INFLIGHT 1024

/* Descriptors beyond the sockets: stdio, the epoll instance, /proc files. */
#define FD_SPARE 16

/* Events taken per epoll_wait(): with thousands of sockets ready at once, a
 * bigger batch means fewer system calls. */
#define EVENT_BATCH 1024

/* One recv() takes up to 64 KiB, sixteen of the longest lines: one call per
 * event mostly drains a socket, and epoll reports again what is left. */
#define RECV_CHUNK 65536

/* Failures described on stderr; past these, they are only counted. */
#define MAX_FAILURE_REPORTS 5

/* The longest excerpt of a wrong line quoted in a failure report. */
#define QUOTE_MAX 60

static const char HELLO[] = "hello "; /* how every greeting starts */
static const char QUIT[] = "quit\n";
static const char BYE[] = "bye\n";

/* ============================== Command line =============================== */

static struct {
    struct in_addr host;
    int ports[MAX_PORTS], nports;
    const char *unix_path; /* --unix: this socket file instead of host and ports */
    int conns, idle, msgs, size, inflight;
    int sleep_pct;    /* -S */
    int churn, csv;
    int timeout;      /* seconds, for the whole run */
    long server_pid;  /* 0: no -P */
} opt = {.conns = 10, .msgs = 1000, .size = 64, .inflight = 1, .timeout = 30};

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen -p port[,port...] [-H host] [-c conns] [-i idle] [-n msgs]\n"
            "               [-s size] [-S percent] [-k inflight] [-r] [-t seconds]\n"
            "               [-P server-pid] [-C]\n"
            "       loadgen --unix path [the same options but -H and -p]\n");
    exit(2);
}

/* A system call failed where going on makes no sense: say which, and stop. */
static void die(const char *call)
{
    fprintf(stderr, "loadgen: %s: %s\n", call, strerror(errno));
    exit(1);
}

/* A decimal number in [min, max]; anything else is a usage error. */
static long parse_number(const char *text, long min, long max)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        usage();
    return value;
}

static void parse_ports(char *list)
{
    char *rest;
    for (char *p = strtok_r(list, ",", &rest); p != NULL; p = strtok_r(NULL, ",", &rest)) {
        if (opt.nports == MAX_PORTS)
            usage();
        opt.ports[opt.nports++] = (int)parse_number(p, 1, 65535);
    }
}

/* Loopback only (127.0.0.0/8): load aimed at another machine is an attack,
 * and across a network the figures would measure the network anyway. */
static void parse_host(const char *text)
{
    if (inet_pton(AF_INET, text, &opt.host) != 1 || ntohl(opt.host.s_addr) >> 24 != 127) {
        fprintf(stderr, "loadgen: -H takes a loopback IPv4 address (127.x.y.z)\n");
        usage();
    }
}

static void parse_options(int argc, char **argv)
{
    static const struct option long_options[] = {{"unix", required_argument, NULL, 'u'},
                                                 {NULL, 0, NULL, 0}};
    struct sockaddr_un un;
    int c;
    parse_host("127.0.0.1");
    while ((c = getopt_long(argc, argv, "p:H:c:i:n:s:S:k:rt:P:C", long_options, NULL)) != -1) {
        switch (c) {
        case 'p': parse_ports(optarg); break;
        case 'u': opt.unix_path = optarg; break;
        case 'H': parse_host(optarg); break;
        case 'c': opt.conns = (int)parse_number(optarg, 1, MAX_CONNS); break;
        case 'i': opt.idle = (int)parse_number(optarg, 0, MAX_CONNS); break;
        case 'n': opt.msgs = (int)parse_number(optarg, 0, MAX_MSGS); break;
        case 's': opt.size = (int)parse_number(optarg, MIN_SIZE, MAX_SIZE); break;
        case 'S': opt.sleep_pct = (int)parse_number(optarg, 0, 100); break;
        case 'k': opt.inflight = (int)parse_number(optarg, 1, MAX_INFLIGHT); break;
        case 'r': opt.churn = 1; break;
        case 't': opt.timeout = (int)parse_number(optarg, 1, 3600); break;
        case 'P': opt.server_pid = parse_number(optarg, 1, INT32_MAX); break;
        case 'C': opt.csv = 1; break;
        default: usage();
        }
    }
    if (optind != argc || opt.conns + opt.idle > MAX_CONNS)
        usage();
    /* Ports or a path, not both; a path must fit in sun_path with its NUL. */
    if ((opt.nports == 0) == (opt.unix_path == NULL) ||
        (opt.unix_path != NULL && strlen(opt.unix_path) >= sizeof un.sun_path))
        usage();
    if (opt.churn && opt.msgs == 0)
        usage(); /* churn with nothing to complete */
}

/* ========================== Time and histograms ============================ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        die("clock_gettime");
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t deadline; /* when -t runs out, in now_ns() time */

/* Milliseconds until the deadline, rounded up, for epoll_wait(); 0 when past. */
static int ms_left(void)
{
    uint64_t t = now_ns();
    return t >= deadline ? 0 : (int)((deadline - t) / 1000000) + 1;
}

/* A log-linear histogram, as HdrHistogram does it: exact to the microsecond
 * below 1024 us, then each power of two split into 512 buckets, so no value
 * is off by more than 0.2 %, and 8192 buckets (64 KiB) reach 2^24 us, 16.8 s,
 * past any sensible -t. Larger values share the last bucket; max stays exact. */
#define LINEAR_BITS 10
#define LINEAR_US (1u << LINEAR_BITS)
#define SUB_BUCKETS (LINEAR_US / 2)
#define MAX_BITS 24
#define HIST_BUCKETS (LINEAR_US + (MAX_BITS - LINEAR_BITS) * SUB_BUCKETS)

struct histogram {
    uint64_t count, max;
    uint64_t bucket[HIST_BUCKETS];
};

static struct histogram latency;         /* per line, or connect to bye */
static struct histogram connect_latency; /* connect() to established */

static size_t bucket_of(uint64_t us)
{
    if (us < LINEAR_US)
        return (size_t)us;
    if (us >> MAX_BITS != 0)
        return HIST_BUCKETS - 1;
    int bits = LINEAR_BITS; /* us lies in [2^bits, 2^(bits+1)) */
    while (us >> (bits + 1) != 0)
        bits++;
    int shift = bits - LINEAR_BITS + 1; /* keeps the top 10 bits of us */
    return LINEAR_US + (size_t)(bits - LINEAR_BITS) * SUB_BUCKETS + (us >> shift) - SUB_BUCKETS;
}

/* The largest value a bucket holds: a percentile never flatters. */
static uint64_t bucket_top(size_t i)
{
    if (i < LINEAR_US)
        return i;
    size_t j = i - LINEAR_US;
    int shift = (int)(j / SUB_BUCKETS) + 1;
    return ((uint64_t)(j % SUB_BUCKETS + SUB_BUCKETS + 1) << shift) - 1;
}

static void hist_add(struct histogram *h, uint64_t since_ns)
{
    uint64_t us = (now_ns() - since_ns) / 1000;
    h->bucket[bucket_of(us)]++;
    h->count++;
    if (us > h->max)
        h->max = us;
}

/* The value below which a fraction q of the samples lie (nearest rank). */
static uint64_t hist_quantile(const struct histogram *h, double q)
{
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen > 0 && (double)seen >= q * (double)h->count)
            return bucket_top(i) < h->max ? bucket_top(i) : h->max;
    }
    return h->max;
}

/* ============================== Connections ================================ */

enum kind { IDLE, BUSY, CHURN };

/* A connection's life; every one may end in FAILED:
 *
 *   UNUSED -> CONNECTING -> GREETING -> OPEN -> ECHOING -> FINISHED    (busy)
 *                                         (idle ones stay OPEN)
 *                                   `-> QUITTING -> CLOSING -> FINISHED (churn)
 */
enum state {
    UNUSED,     /* no socket yet, or a churn slot between connections */
    CONNECTING, /* connect() is under way: waiting for writable */
    GREETING,   /* connected, reading the "hello" line */
    OPEN,       /* greeted; idle connections stay here to the end */
    ECHOING,    /* phase 2: lines in flight */
    QUITTING,   /* churn: "quit" sent, reading "bye" */
    CLOSING,    /* churn: "bye" read, waiting for the server to close */
    FINISHED,   /* every line echoed; or churn: closed cleanly */
    FAILED,     /* something went wrong; the socket is closed */
    NSTATES
};

/* 72 bytes per connection on 64-bit Linux; output space only while bytes
 * wait. */
struct conn {
    int fd;
    int id;            /* part of every line it sends */
    int port;
    enum kind kind;
    enum state state;
    uint32_t events;   /* what epoll watches for it now */
    uint32_t sent;     /* lines sent */
    uint32_t echoed;   /* lines echoed in full */
    uint32_t rx;       /* bytes of the current incoming line so far */
    uint64_t started;  /* when connect() was called */
    uint64_t *sent_at; /* send time of each line in flight: a ring of -k */
    char *out;         /* bytes the socket has not taken yet, or NULL */
    size_t out_len;
};

static int epfd;
static struct conn *conns; /* phases 1 and 2: the idle ones, then the busy */
static int nconns;

/* How many connections are in each state: every change goes through
 * set_state(), so the loops can tell when a phase is over without a scan. */
static int in_state[NSTATES];

static struct {
    uint64_t opened, greeted, echoed, completed, failed, churn_failed;
} stats;

static void set_state(struct conn *c, enum state s)
{
    in_state[c->state]--;
    in_state[s]++;
    c->state = s;
}

/* Closing the descriptor also takes it out of the epoll set. */
static void close_conn(struct conn *c)
{
    if (c->fd >= 0 && close(c->fd) < 0)
        perror("loadgen: close");
    c->fd = -1;
    free(c->out);
    c->out = NULL;
    c->out_len = 0;
}

/* A failure costs only its connection: describe the first few, close it,
 * count it. */
__attribute__((format(printf, 2, 3)))
static void fail(struct conn *c, const char *fmt, ...)
{
    if (stats.failed < MAX_FAILURE_REPORTS) {
        va_list ap;
        va_start(ap, fmt);
        if (opt.unix_path != NULL)
            fprintf(stderr, "loadgen: connection %d: ", c->id);
        else
            fprintf(stderr, "loadgen: connection %d (port %d): ", c->id, c->port);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    close_conn(c);
    stats.failed++;
    stats.churn_failed += c->kind == CHURN;
    set_state(c, FAILED);
}

/* How much of buf to quote in a failure: up to its first '\n'. */
static int quote_len(const char *buf, size_t n)
{
    const char *nl = memchr(buf, '\n', n);
    size_t len = nl != NULL ? (size_t)(nl - buf) : n;
    return len < QUOTE_MAX ? (int)len : QUOTE_MAX;
}

/* Tell epoll what to report for c; a system call only when that changes. */
static void watch(struct conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (events == c->events)
        return;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
    c->events = events;
}

/* The server's address for connection number i: the Unix socket file, or
 * the ports in turn (its port goes to c->port, for failure reports). The
 * only place that tells the two families apart; parse_options() checked the
 * path's length. */
static socklen_t server_address(struct conn *c, int i, struct sockaddr_storage *addr)
{
    memset(addr, 0, sizeof *addr);
    if (opt.unix_path != NULL) {
        struct sockaddr_un *un = (struct sockaddr_un *)addr;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, opt.unix_path, strlen(opt.unix_path) + 1);
        return sizeof *un;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)addr;
    c->port = opt.ports[i % opt.nports];
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)c->port);
    in->sin_addr = opt.host;
    return sizeof *in;
}

/* A non-blocking connect() returns at once (EINPROGRESS) and epoll reports
 * the socket writable once the handshake is over, so thousands of connects
 * are under way together. (A Unix socket connects at once, or fails with
 * EAGAIN when the server's backlog is full.) TCP_NODELAY: a short line goes
 * out at once, not after Nagle's algorithm has waited for the previous one's
 * ACK; a Unix socket has no Nagle to turn off. */
static void start_conn(struct conn *c, int i)
{
    struct sockaddr_storage addr;
    socklen_t len = server_address(c, i, &addr);
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    int one = 1;
    c->rx = 0;
    c->events = EPOLLOUT;
    c->started = now_ns();
    set_state(c, CONNECTING);
    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        fail(c, "socket: %s", strerror(errno));
    else if (addr.ss_family == AF_INET &&
             setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        fail(c, "setsockopt TCP_NODELAY: %s", strerror(errno));
    else if (connect(c->fd, (struct sockaddr *)&addr, len) < 0 && errno != EINPROGRESS)
        fail(c, "connect: %s", strerror(errno));
    else if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        fail(c, "epoll_ctl: %s", strerror(errno));
}

/* The handshake is over, one way or the other: SO_ERROR says which. The
 * latency counts until we notice, so phase 1 looks (without waiting) after
 * each connect(); otherwise the first connections would be charged for the
 * time it took us to start all the others. */
static void finish_connect(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        fail(c, "connect: %s", strerror(err));
        return;
    }
    hist_add(&connect_latency, c->started);
    stats.opened++;
    set_state(c, GREETING);
    watch(c, EPOLLIN);
}

/* Send now what the socket takes, keep the rest, and ask for EPOLLOUT only
 * while bytes wait: a socket with room is always writable, so watching it
 * all the time would wake the loop for nothing. */
static void send_bytes(struct conn *c, const char *data, size_t len)
{
    if (c->out == NULL) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL); /* no SIGPIPE */
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            fail(c, "send: %s", strerror(errno));
            return;
        }
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        }
        if (len == 0)
            return;
    }
    char *grown = realloc(c->out, c->out_len + len);
    if (grown == NULL) {
        fail(c, "out of memory");
        return;
    }
    memcpy(grown + c->out_len, data, len);
    c->out = grown;
    c->out_len += len;
    watch(c, EPOLLIN | EPOLLOUT);
}

/* The socket has room again: send what waits, and stop watching for room
 * once nothing does. */
static void flush_output(struct conn *c)
{
    ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            fail(c, "send: %s", strerror(errno));
        return;
    }
    c->out_len -= (size_t)n;
    memmove(c->out, c->out + n, c->out_len);
    if (c->out_len == 0) {
        free(c->out);
        c->out = NULL;
        watch(c, EPOLLIN);
    }
}

/* ================================ Phase 1 ================================== */

/* The greeting must start with "hello " and end in '\n'. Bytes come in any
 * pieces, so each piece is checked as it arrives. Returns the bytes used. */
static size_t take_greeting(struct conn *c, const char *buf, size_t n)
{
    const char *nl = memchr(buf, '\n', n);
    size_t len = nl != NULL ? (size_t)(nl - buf) + 1 : n;
    for (size_t i = 0; i < len && c->rx + i < sizeof HELLO - 1; i++) {
        if (buf[i] != HELLO[c->rx + i]) {
            fail(c, "greeting was \"%.*s\"", quote_len(buf, n), buf);
            return n;
        }
    }
    c->rx += (uint32_t)len;
    if (c->rx > MAX_SIZE)
        fail(c, "greeting longer than %d bytes", MAX_SIZE);
    if (nl == NULL || c->fd < 0)
        return len;
    c->rx = 0;
    stats.greeted++;
    if (c->kind == CHURN) {
        set_state(c, QUITTING);
        send_bytes(c, QUIT, sizeof QUIT - 1);
    } else {
        set_state(c, OPEN);
    }
    return len;
}

/* ================================ Phase 2 ================================== */

/* -S: slow work for the server, and its answer. */
static const char SLEEP_LINE[] = "sleep 10\n";
static const char SLEPT_LINE[] = "slept 10\n";

/* Is line seq of connection id a "sleep 10"? Those whose (37 seq + id) mod
 * 100 falls below -S: exactly that share of every 100 lines of a
 * connection (37 and 100 have no common factor), spread out, and at other
 * places on each connection. */
static int is_sleep(int id, uint32_t seq)
{
    return (int)((seq * 37u + (uint32_t)id) % 100u) < opt.sleep_pct;
}

/* Line seq of connection id, '\n' included; returns its length. It starts
 * with 'm', so the server never takes it for a command (quit, exit, sleep),
 * and the filler shifts with seq and position, so a byte out of place
 * shows. Or, for -S, "sleep 10". */
static size_t make_line(char *line, int id, uint32_t seq)
{
    size_t size = (size_t)opt.size;
    if (is_sleep(id, seq)) {
        memcpy(line, SLEEP_LINE, sizeof SLEEP_LINE - 1);
        return sizeof SLEEP_LINE - 1;
    }
    int head = snprintf(line, size, "m%x.%x ", (unsigned)id, (unsigned)seq);
    for (size_t j = (size_t)head; j < size - 1; j++)
        line[j] = (char)('a' + (seq + j) % 26);
    line[size - 1] = '\n';
    return size;
}

/* The answer line seq must get: its echo, rebuilt (no connection keeps a
 * copy), or "slept 10". Returns its length. */
static size_t make_reply(char *line, int id, uint32_t seq)
{
    if (is_sleep(id, seq)) {
        memcpy(line, SLEPT_LINE, sizeof SLEPT_LINE - 1);
        return sizeof SLEPT_LINE - 1;
    }
    return make_line(line, id, seq);
}

static void send_line(struct conn *c)
{
    static char line[MAX_SIZE];
    size_t len = make_line(line, c->id, c->sent);
    c->sent_at[c->sent % (uint32_t)opt.inflight] = now_ns();
    c->sent++;
    send_bytes(c, line, len);
}

/* A line came back whole: its latency runs from its send to its last byte.
 * Closed loop: the next line goes out now, so -k lines stay in flight. */
static void line_echoed(struct conn *c)
{
    hist_add(&latency, c->sent_at[c->echoed % (uint32_t)opt.inflight]);
    c->echoed++;
    c->rx = 0;
    stats.echoed++;
    if (c->sent < (uint32_t)opt.msgs)
        send_line(c);
    else if (c->echoed == (uint32_t)opt.msgs)
        set_state(c, FINISHED);
}

/* Compare the bytes that came with the answer they should be (make_reply),
 * as far as this piece of it goes. Returns the bytes used. */
static size_t take_echo(struct conn *c, const char *buf, size_t n)
{
    static char expected[MAX_SIZE];
    if (c->echoed == c->sent) {
        fail(c, "%zu bytes arrived that were never sent", n);
        return n;
    }
    size_t len = make_reply(expected, c->id, c->echoed);
    size_t want = len - c->rx;
    size_t take = n < want ? n : want;
    for (size_t i = 0; i < take; i++) {
        if (buf[i] != expected[c->rx + i]) {
            fail(c, "echo of line %u differs at byte %zu: sent 0x%02x, got 0x%02x",
                 c->echoed, c->rx + i, (unsigned char)expected[c->rx + i], (unsigned char)buf[i]);
            return n;
        }
    }
    c->rx += (uint32_t)take;
    if (c->rx == (uint32_t)len)
        line_echoed(c);
    return take;
}

/* Give every busy connection its first -k lines; the echoes do the rest.
 * times holds the send times, -k for each busy connection. */
static void start_echo(uint64_t *times)
{
    for (int i = opt.idle; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->sent_at = times + (size_t)(i - opt.idle) * (size_t)opt.inflight;
        set_state(c, ECHOING);
        for (int k = 0; k < opt.inflight && k < opt.msgs && c->fd >= 0; k++)
            send_line(c);
    }
}

/* ================================= Churn =================================== */

/* After "quit", exactly "bye\n", then the server closes. */
static size_t take_bye(struct conn *c, const char *buf, size_t n)
{
    size_t want = sizeof BYE - 1 - c->rx;
    size_t take = n < want ? n : want;
    if (memcmp(buf, BYE + c->rx, take) != 0) {
        fail(c, "\"quit\" was answered \"%.*s\"", quote_len(buf, n), buf);
        return n;
    }
    c->rx += (uint32_t)take;
    if (c->rx == sizeof BYE - 1) {
        hist_add(&latency, c->started);
        set_state(c, CLOSING);
    }
    return take;
}

/* The server closed after "bye": the whole exchange worked. Our close()
 * comes second, so the TIME_WAIT state stays on the server's side and our
 * ephemeral ports are free for the next connections at once. */
static void churn_complete(struct conn *c)
{
    close_conn(c);
    stats.completed++;
    set_state(c, FINISHED);
}

/* Give every free slot a new connection until -n have been started. Called
 * between epoll_wait()s, not from a handler, so a connect that fails at
 * once cannot recurse into starting the next one; a slot whose connect
 * failed at once is refilled at once, so the loop never waits on nothing. */
static void refill_slots(struct conn *slots, int *started)
{
    for (int i = 0; i < opt.conns; i++) {
        while (slots[i].fd < 0 && *started < opt.msgs) {
            slots[i].id = *started;
            slots[i].kind = CHURN;
            start_conn(&slots[i], *started);
            (*started)++;
        }
    }
}

/* ============================== The event loop ============================= */

/* What a connection's bytes must be depends on where it stands; one recv()
 * may hold the end of one step and the start of the next. */
static void take_input(struct conn *c, const char *buf, size_t n)
{
    while (n > 0 && c->fd >= 0) {
        size_t used;
        switch (c->state) {
        case GREETING: used = take_greeting(c, buf, n); break;
        case ECHOING: used = take_echo(c, buf, n); break;
        case QUITTING: used = take_bye(c, buf, n); break;
        default:
            fail(c, "unexpected bytes \"%.*s\"", quote_len(buf, n), buf);
            return;
        }
        buf += used;
        n -= used;
    }
}

static void read_input(struct conn *c)
{
    static char buf[RECV_CHUNK];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        fail(c, "recv: %s", strerror(errno)); /* ECONNRESET: the server reset */
    else if (n == 0 && c->state == CLOSING)
        churn_complete(c);
    else if (n == 0)
        fail(c, "closed by the server");
    else if (n > 0)
        take_input(c, buf, (size_t)n);
}

/* Level-triggered epoll: whatever one turn leaves unread is reported again
 * on the next, so one recv() per event is enough. A connecting socket turns
 * writable (or errors) when its handshake ends. */
static void handle_event(struct conn *c, uint32_t events)
{
    if (c->state == CONNECTING) {
        finish_connect(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        read_input(c);
    if ((events & EPOLLOUT) && c->out != NULL)
        flush_output(c);
}

/* One turn: wait (until the deadline at most; not at all unless block),
 * then serve what is ready. Returns 0 once the time is up. */
static int run_once(int block)
{
    static struct epoll_event events[EVENT_BATCH];
    int wait = ms_left();
    if (wait == 0)
        return 0;
    int n = epoll_wait(epfd, events, EVENT_BATCH, block ? wait : 0);
    if (n < 0 && errno != EINTR)
        die("epoll_wait");
    for (int i = 0; i < n; i++)
        handle_event(events[i].data.ptr, events[i].events);
    return 1;
}

/* ==================== The server's CPU and memory (/proc) ================== */

/* /proc/PID/FILE, open for reading; NULL when the process has gone. */
static FILE *open_proc(long pid, const char *file)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", pid, file);
    return fopen(path, "r");
}

/* utime + stime + cutime + cstime, fields 14-17 of /proc/PID/stat, in clock
 * ticks: CPU of all its threads, and of the children it has reaped. The
 * command name (field 2) may hold spaces, so counting starts after its ')'. */
static long long cpu_ticks(long pid)
{
    char line[1024];
    long long total = 0;
    FILE *f = open_proc(pid, "stat");
    if (f == NULL)
        return -1;
    char *p = fgets(line, sizeof line, f) != NULL ? strrchr(line, ')') : NULL;
    fclose(f);
    if (p == NULL)
        return -1;
    char *rest;
    p = strtok_r(p + 1, " ", &rest);
    for (int field = 3; p != NULL && field <= 17; field++, p = strtok_r(NULL, " ", &rest))
        if (field >= 14)
            total += strtoll(p, NULL, 10);
    return total;
}

/* A "Name: N kB" field of /proc/PID/status, in KiB; a zombie has none. */
static long long status_kib(long pid, const char *field)
{
    char line[256];
    size_t len = strlen(field);
    long long kib = 0;
    FILE *f = open_proc(pid, "status");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, len) == 0 && line[len] == ':' &&
            sscanf(line + len + 1, "%lld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Resident memory now (VmRSS), and the most it has been (VmHWM). */
static long long rss_kib(long pid)
{
    return status_kib(pid, "VmRSS");
}

static long long peak_kib(long pid)
{
    return status_kib(pid, "VmHWM");
}

/* measure() summed over the processes a children file lists. */
static long long children_total(const char *path, long long (*measure)(long))
{
    long long total = 0, part;
    long child;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0; /* the thread has just ended */
    while (fscanf(f, "%ld", &child) == 1)
        if ((part = measure(child)) > 0) /* -1: the child has just exited */
            total += part;
    fclose(f);
    return total;
}

/* The CPU time of a live child, in nanoseconds: the first field of
 * /proc/PID/schedstat. Its /proc/PID/stat counts whole clock ticks (10 ms),
 * and a child that served a few hundred messages has used less than one:
 * summed over a hundred children, the ticks would read 0. */
static long long child_cpu_ns(long pid)
{
    long long ns = -1;
    FILE *f = open_proc(pid, "schedstat");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%lld", &ns) != 1)
        ns = -1;
    fclose(f);
    return ns;
}

/* The server's own CPU time, threads and reaped children included, in
 * nanoseconds (from clock ticks: the kernel sums them precisely, then
 * rounds once). */
static long long own_cpu_ns(long pid)
{
    long long ticks = cpu_ticks(pid);
    return ticks < 0 ? -1 : ticks * (1000000000LL / sysconf(_SC_CLK_TCK));
}

/* measure() for the server, and child_measure() for its live children,
 * which each of its threads lists in /proc/PID/task/TID/children. A forking
 * server (chapter 05) works in children, whose CPU time reaches its cutime
 * only once they are reaped; adding the live ones keeps the sum steady as
 * they come and go. (Summed RSS counts pages shared with the parent more
 * than once: an upper bound.) Returns -1 when the server itself is gone. */
static long long server_total(long long (*measure)(long), long long (*child_measure)(long))
{
    char path[300];
    struct dirent *t;
    long long total = measure(opt.server_pid);
    snprintf(path, sizeof path, "/proc/%ld/task", opt.server_pid);
    DIR *tasks = total >= 0 ? opendir(path) : NULL;
    if (tasks == NULL)
        return total;
    while ((t = readdir(tasks)) != NULL) {
        if (t->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%ld/task/%s/children", opt.server_pid, t->d_name);
        total += children_total(path, child_measure);
    }
    closedir(tasks);
    return total;
}

/* ================================ Reporting ================================ */

static struct {
    int opened, greeted, failed; /* phase 1; with -r, the churn's */
    double seconds;              /* of phase 2, or of the churn */
    uint64_t ops;                /* lines echoed, or connections completed */
    long long cpu_before, cpu_after; /* ns; -1: not measured */
    long long rss_start, rss_end;    /* KiB; -1: not measured */
    long long rss_peak;              /* KiB, VmHWM at the end; -1: not measured */
    double own_cpu;                  /* loadgen's CPU seconds during the work */
} result = {.cpu_before = -1, .cpu_after = -1, .rss_start = -1, .rss_end = -1, .rss_peak = -1};

/* Microseconds as a person reads them: "45 us", "1.2 ms", "3.00 s". */
static const char *human(char *buf, uint64_t us)
{
    if (us < 1000)
        snprintf(buf, 16, "%llu us", (unsigned long long)us);
    else if (us < 1000000)
        snprintf(buf, 16, "%.1f ms", (double)us / 1e3);
    else
        snprintf(buf, 16, "%.2f s", (double)us / 1e6);
    return buf;
}

/* p50, p99, p99.9 and max of h, in microseconds. */
static void quantiles(const struct histogram *h, unsigned long long q[4])
{
    q[0] = hist_quantile(h, 0.5);
    q[1] = hist_quantile(h, 0.99);
    q[2] = hist_quantile(h, 0.999);
    q[3] = h->max;
}

static void print_latency(const char *label, const struct histogram *h)
{
    char a[16], b[16], c[16], d[16];
    unsigned long long q[4];
    quantiles(h, q);
    if (h->count == 0)
        printf("%s none\n", label);
    else
        printf("%s p50 %s, p99 %s, p99.9 %s, max %s\n", label, human(a, q[0]), human(b, q[1]),
           human(c, q[2]), human(d, q[3]));
}

/* Server CPU time per line echoed (or per connection churned); -1 if unknown.
 * The server's own share is counted in clock ticks, usually 10 ms: run long
 * enough for it. */
static double cpu_us_per_op(void)
{
    if (result.cpu_before < 0 || result.cpu_after < 0 || result.ops == 0)
        return -1;
    return (double)(result.cpu_after - result.cpu_before) / 1e3 / (double)result.ops;
}

/* Printed as soon as phase 1 ends, so a reader sees it before phase 2 runs. */
static void print_connections(void)
{
    char a[16], b[16], c[16];
    printf("connections: %d opened, %d greeted while all open, %d failed", result.opened,
           result.greeted, result.failed);
    if (connect_latency.count > 0)
        printf("; connect p50 %s, p99 %s, max %s", human(a, hist_quantile(&connect_latency, 0.5)),
               human(b, hist_quantile(&connect_latency, 0.99)), human(c, connect_latency.max));
    printf("\n");
    fflush(stdout);
}

/* loadgen's own CPU time over the wall time of the work, in percent. */
static double own_cpu_pct(void)
{
    return result.seconds > 0 ? 100.0 * result.own_cpu / result.seconds : 0;
}

static void print_work(void)
{
    double rate = (double)result.ops / result.seconds;
    if (opt.churn) {
        printf("churn: %d connections, %d at a time: %llu completed, %d failed, %.3f s, "
               "%.0f conn/s\n", opt.msgs, opt.conns, (unsigned long long)result.ops,
               result.failed, result.seconds, rate);
        print_latency("latency (connect to bye):", &latency);
        print_latency("connect:", &connect_latency);
        return;
    }
    printf("echo: %d x %d messages of %d B, %d in flight: %llu echoed, %d failed, %.3f s, "
           "%.0f msg/s\n", opt.conns, opt.msgs, opt.size, opt.inflight,
           (unsigned long long)result.ops, result.failed, result.seconds, rate);
    print_latency("latency:", &latency);
    printf("loadgen: %.0f%% of one CPU\n", own_cpu_pct());
}

static void print_server(void)
{
    printf("server:");
    if (cpu_us_per_op() >= 0)
        printf(" %.1f us CPU per %s,", cpu_us_per_op(), opt.churn ? "connection" : "message");
    if (result.rss_start >= 0)
        printf(" RSS %lld KiB %s", result.rss_start, opt.churn ? "before" : "after connect");
    if (result.rss_end >= 0)
        printf(", %lld KiB at end", result.rss_end);
    if (result.rss_peak >= 0)
        printf(", peak %lld KiB", result.rss_peak);
    printf("\n");
}


/* One CSV row, columns as in the comment at the top; empty where none apply. */
static void print_csv(void)
{
    unsigned long long q[4];
    double cpu = cpu_us_per_op();
    long long rss = result.rss_end >= 0 ? result.rss_end : result.rss_start;
    printf("%s,%d,%d,%d,%d,%d,%d,%d,%d,", opt.churn ? "churn" : opt.msgs > 0 ? "echo" : "connect",
           opt.conns, opt.idle, opt.msgs, opt.size, opt.inflight, result.opened, result.greeted,
           result.failed);
    if (result.seconds > 0)
        printf("%.3f,%.0f", result.seconds, (double)result.ops / result.seconds);
    quantiles(&latency, q);
    if (latency.count > 0)
        printf(",%llu,%llu,%llu,%llu", q[0], q[1], q[2], q[3]);
    else
        printf(",,,,");
    quantiles(&connect_latency, q);
    printf(",%llu,%llu,", q[0], q[1]);
    if (cpu >= 0)
        printf("%.1f", cpu);
    printf(",");
    if (rss >= 0)
        printf("%lld", rss);
    printf(",");
    if (result.rss_peak >= 0)
        printf("%lld", result.rss_peak);
    printf(",");
    if (result.seconds > 0)
        printf("%.0f", own_cpu_pct());
    printf("\n");
}

/* ================================== Main =================================== */

/* Each connection is a descriptor: raise the soft limit to the hard one, and
 * stop early and clearly when even the hard limit is too low. */
static void raise_fd_limit(int sockets)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)sockets + FD_SPARE;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit");
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        fprintf(stderr, "loadgen: %d connections need ulimit -n %llu (hard limit is %llu)\n",
                sockets, (unsigned long long)need, (unsigned long long)rl.rlim_max);
        exit(1);
    }
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY ? rl.rlim_max : need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("setrlimit");
}

static void *must_calloc(size_t count, size_t size)
{
    void *p = calloc(count, size);
    if (p == NULL)
        die("calloc");
    return p;
}

static void complain_if_timed_out(const char *doing, int count)
{
    if (count > 0)
        fprintf(stderr, "loadgen: timed out after %d s with %d connections still %s\n",
                opt.timeout, count, doing);
}

/* Phase 1: every connection (with -r, only the idle ones) gets its greeting
 * while all are open, or the run stops here. */
static int phase_connect(void)
{
    nconns = opt.idle + (opt.churn ? 0 : opt.conns);
    conns = must_calloc((size_t)nconns + 1, sizeof *conns); /* +1: never calloc(0) */
    in_state[UNUSED] = nconns;
    for (int i = 0; i < nconns; i++) {
        conns[i].id = i;
        conns[i].kind = i < opt.idle ? IDLE : BUSY;
        start_conn(&conns[i], i);
        run_once(0); /* see the handshakes done so far: see finish_connect() */
    }
    while (in_state[CONNECTING] + in_state[GREETING] > 0 && run_once(1))
        ;
    complain_if_timed_out("connecting", in_state[CONNECTING]);
    complain_if_timed_out("waiting for a greeting", in_state[GREETING]);
    result.opened = (int)stats.opened;
    result.greeted = in_state[OPEN];
    result.failed = nconns - in_state[OPEN];
    return result.failed == 0;
}

/* Phase 2: the busy connections echo; the idle ones must simply survive. */
static int phase_echo(void)
{
    uint64_t start = now_ns();
    uint64_t *times = must_calloc((size_t)opt.conns * (size_t)opt.inflight, sizeof *times);
    start_echo(times);
    while (in_state[ECHOING] > 0 && run_once(1))
        ;
    result.seconds = (double)(now_ns() - start) / 1e9;
    complain_if_timed_out("echoing", in_state[ECHOING]);
    result.ops = stats.echoed;
    result.failed = nconns - in_state[FINISHED] - in_state[OPEN];
    free(times);
    return result.failed == 0;
}

/* Churn: -n short connections, -c at a time; the idle ones must survive. */
static int phase_churn(void)
{
    struct conn *slots = must_calloc((size_t)opt.conns, sizeof *slots);
    int started = 0;
    for (int i = 0; i < opt.conns; i++)
        slots[i].fd = -1;
    in_state[UNUSED] += opt.conns;
    stats.opened = stats.greeted = 0;
    memset(&connect_latency, 0, sizeof connect_latency); /* churn connects only */
    uint64_t start = now_ns();
    do
        refill_slots(slots, &started);
    while (stats.completed + stats.churn_failed < (uint64_t)opt.msgs && run_once(1));
    result.seconds = (double)(now_ns() - start) / 1e9;
    complain_if_timed_out("in flight", started - (int)(stats.completed + stats.churn_failed));
    for (int i = 0; i < opt.conns; i++)
        close_conn(&slots[i]);
    free(slots);
    result.opened = (int)stats.opened;
    result.greeted = (int)stats.greeted;
    result.ops = stats.completed;
    result.failed = opt.msgs - (int)stats.completed + opt.idle - in_state[OPEN];
    return result.failed == 0;
}

/* This process's CPU time so far, user and system, in seconds. */
static double self_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        die("getrusage");
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Phase 2 or the churn, between two readings of the server's CPU time (and
 * of ours). The peak memory is the server's VmHWM, plus that of each child
 * still alive at the end (a forking server's). */
static int run_work(void)
{
    int ok;
    double own_before = self_cpu_seconds();
    result.cpu_before = opt.server_pid != 0 ? server_total(own_cpu_ns, child_cpu_ns) : -1;
    ok = opt.churn ? phase_churn() : phase_echo();
    result.cpu_after = opt.server_pid != 0 ? server_total(own_cpu_ns, child_cpu_ns) : -1;
    result.own_cpu = self_cpu_seconds() - own_before;
    result.rss_end = opt.server_pid != 0 ? server_total(rss_kib, rss_kib) : -1;
    result.rss_peak = opt.server_pid != 0 ? server_total(peak_kib, peak_kib) : -1;
    return ok;
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    raise_fd_limit(opt.idle + opt.conns);
    if (opt.server_pid != 0 && cpu_ticks(opt.server_pid) < 0) {
        fprintf(stderr, "loadgen: cannot read /proc/%ld/stat\n", opt.server_pid);
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    deadline = now_ns() + (uint64_t)opt.timeout * 1000000000u;
    int ok = phase_connect();
    if (!opt.csv && nconns > 0)
        print_connections();
    if (opt.server_pid != 0)
        result.rss_start = server_total(rss_kib, rss_kib);
    if (ok && (opt.churn || opt.msgs > 0))
        ok = run_work();
    if (opt.csv)
        print_csv();
    else if (result.seconds > 0)
        print_work();
    if (!opt.csv && opt.server_pid != 0)
        print_server();
    if (stats.failed > MAX_FAILURE_REPORTS)
        fprintf(stderr, "loadgen: %llu more failures, counted but not described\n",
                (unsigned long long)(stats.failed - MAX_FAILURE_REPORTS));
    for (int i = 0; i < nconns; i++)
        close_conn(&conns[i]);
    free(conns);
    close(epfd);
    return ok ? 0 : 1;
}
