/*
 * scripts/framing.c: where does a message end? TCP delivers bytes, not
 * messages, so the receiver must find the boundaries itself. This program
 * sends the same messages with three framings through a real TCP connection
 * on 127.0.0.1 and shows what each decoder recovers (chapter 01's lesson,
 * "Framing").
 *
 *   framing [-s SEED] [-v]
 *       Five messages, one of them binary (a '\n' and a NUL inside), framed
 *       three ways:
 *         delimiter      each message, then '\n' (the course's protocol);
 *         fixed length   each message in a record of RECORD_SIZE bytes,
 *                        padded with NULs, cut if longer;
 *         length prefix  the message's length in 4 bytes, big-endian
 *                        (Python's struct.pack('>I', n)), then the message.
 *       Each framing's bytes go through a connection of their own, cut into
 *       pieces of 1 to 7 bytes at points drawn from SEED (default 1), one
 *       send() per piece. The receiving side feeds whatever each recv()
 *       returns to its decoder and prints the messages it recovered, "ok"
 *       beside each one equal to the message sent in that place. Only the
 *       first line depends on SEED: where the stream is cut changes nothing
 *       a correct decoder finds. -v also prints each recv()'s bytes.
 *
 *   framing -n
 *       Nagle's algorithm and delayed ACK. On one connection, 6 rounds of:
 *       10 writes of 2 bytes ("x\n") in a row, then wait for the receiver
 *       (another process) to answer once it has all 10 lines. Prints, per
 *       round, how long it took, how many data segments TCP sent for the 10
 *       writes (TCP_INFO), and the sizes of the receiver's recv()s. First
 *       with Nagle's algorithm (the default), then with TCP_NODELAY.
 *
 * Exit status: 0, 1 if a socket call fails, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h> /* TCP_NODELAY, and TCP_INFO's full struct tcp_info */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ============================== Configuration ============================== */

/* The fixed-length framing's record: longer than most of the messages below
 * (they get padded), shorter than one (it gets cut). */
#define RECORD_SIZE 16

/* STRING(RECORD_SIZE) is "16": the macro's value as a string literal. */
#define STRING(x) STRING_(x)
#define STRING_(x) #x

/* The length prefix: 4 bytes, as in most binary protocols (2^32 - 1 at most). */
#define PREFIX_SIZE 4

/* The longest message a decoder accepts. A length prefix says how much to
 * wait for, so it needs a cap, like MAX_LINE for the course's lines: a bad
 * or hostile prefix must not make the receiver wait for, or allocate, 4 GiB. */
#define MAX_MESSAGE 64

/* What the receiver keeps between recv()s: one whole framed message at most. */
#define STREAM_SIZE (PREFIX_SIZE + MAX_MESSAGE)

/* The sender's pieces: 1 to MAX_PIECE bytes, one send() each. */
#define MAX_PIECE 7

/* Columns for a quoted message: the longest one and a gap. */
#define QUOTE_WIDTH 40

/* -n: rounds, and small writes per round. 10 writes stay within the
 * congestion window a new connection starts with (10 segments), so without
 * Nagle nothing else holds a segment back. */
#define NAGLE_ROUNDS 6
#define NAGLE_WRITES 10

struct message {
    const unsigned char *data;
    size_t len;
};

/* sizeof - 1: the literal's length, NULs inside included. */
#define MESSAGE(text) {(const unsigned char *)(text), sizeof(text) - 1}

static const struct message messages[] = {
    MESSAGE("hello"),
    MESSAGE("sleep 1000"),
    MESSAGE("bin\n\0ary"), /* binary data: it may hold any byte, '\n' too */
    MESSAGE("a message longer than one record"),
    MESSAGE("quit"),
};
#define NMESSAGES (sizeof messages / sizeof messages[0])

/* ============================== Small helpers ============================== */

static void die(const char *call)
{
    fprintf(stderr, "framing: %s: %s\n", call, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: framing [-s seed] [-v]\n"
                    "       framing -n\n");
    exit(2);
}

/* The sender's cuts come from this generator (xorshift32), not from rand():
 * the same seed gives the same cuts with any C library. */
static uint32_t random_state;

static uint32_t next_random(void)
{
    random_state ^= random_state << 13;
    random_state ^= random_state >> 17;
    random_state ^= random_state << 5;
    return random_state;
}

/* Write len bytes of data in quotes, with C's escapes for '\n', NUL and the
 * other bytes that do not print, then spaces up to `width` columns. */
static void print_quoted(const unsigned char *data, size_t len, int width)
{
    int printed = printf("\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = data[i];
        if (c == '\n')
            printed += printf("\\n");
        else if (c == '\0')
            printed += printf("\\0");
        else if (c == '"' || c == '\\')
            printed += printf("\\%c", c);
        else if (c < ' ' || c > '~')
            printed += printf("\\x%02x", c);
        else
            printed += printf("%c", c);
    }
    printed += printf("\"");
    if (width > 0)
        printf("%*s", width > printed ? width - printed : 1, "");
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ========================== A connection on loopback ======================= */

/* A TCP connection to ourselves: *sender is the connecting end, *receiver
 * the accepted one. The listener (on a port the kernel picks) is closed
 * once it has given us the connection. */
static void connect_pair(int *sender, int *receiver)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0)
        die("socket");
    if (bind(listener, (struct sockaddr *)&addr, len) < 0 || listen(listener, 1) < 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) < 0)
        die("bind/listen");
    *sender = socket(AF_INET, SOCK_STREAM, 0);
    if (*sender < 0 || connect(*sender, (struct sockaddr *)&addr, len) < 0)
        die("connect");
    *receiver = accept(listener, NULL, NULL);
    if (*receiver < 0)
        die("accept");
    close(listener);
}

static void set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        die("setsockopt TCP_NODELAY");
}

static void send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR)
            die("send");
        p += n > 0 ? n : 0;
        len -= n > 0 ? (size_t)n : 0;
    }
}

/* ============================ The three framings =========================== */

/* Each framing is a pair of functions. put writes one framed message to out
 * and returns its length on the wire. cut looks at the bytes received so
 * far: if they start with a whole message, it points *m at it and returns
 * how many bytes that message took; 0 if more bytes must come first;
 * CUT_BROKEN if the bytes cannot be a message (the stream is lost). */
#define CUT_BROKEN SIZE_MAX

/* Delimiter: the message, then '\n'. Nothing stops a '\n' inside it. */
static size_t put_delimited(unsigned char *out, const struct message *m)
{
    memcpy(out, m->data, m->len);
    out[m->len] = '\n';
    return m->len + 1;
}

/* A message ends at the first '\n': what handle_input does in every chapter. */
static size_t cut_delimited(const unsigned char *in, size_t len, struct message *m)
{
    const unsigned char *newline = memchr(in, '\n', len);
    if (newline == NULL)
        return 0;
    *m = (struct message){in, (size_t)(newline - in)};
    return m->len + 1;
}

/* Fixed length: RECORD_SIZE bytes, the message padded with NULs, or cut. */
static size_t put_fixed(unsigned char *out, const struct message *m)
{
    size_t n = m->len < RECORD_SIZE ? m->len : RECORD_SIZE;
    memset(out, 0, RECORD_SIZE);
    memcpy(out, m->data, n);
    return RECORD_SIZE;
}

/* Every RECORD_SIZE bytes are a message; the NULs at its end are padding
 * (so a message that ends in NUL loses it: padding needs a byte that a
 * message never ends with, or a length). */
static size_t cut_fixed(const unsigned char *in, size_t len, struct message *m)
{
    if (len < RECORD_SIZE)
        return 0;
    *m = (struct message){in, RECORD_SIZE};
    while (m->len > 0 && in[m->len - 1] == '\0')
        m->len--;
    return RECORD_SIZE;
}

/* Length prefix: the length as 4 bytes in network byte order (big-endian,
 * most significant byte first), then the message. htonl() turns the host's
 * order into network order (on x86, little-endian, it swaps the bytes);
 * memcpy() writes them, since out + 0 need not be aligned for a uint32_t. */
static size_t put_prefixed(unsigned char *out, const struct message *m)
{
    uint32_t n = htonl((uint32_t)m->len);
    memcpy(out, &n, PREFIX_SIZE);
    memcpy(out + PREFIX_SIZE, m->data, m->len);
    return PREFIX_SIZE + m->len;
}

/* Read the 4-byte length, then wait until that many bytes follow it. The
 * length is read byte by byte, most significant first: the same number as
 * memcpy() then ntohl(), on any machine. */
static size_t cut_prefixed(const unsigned char *in, size_t len, struct message *m)
{
    if (len < PREFIX_SIZE)
        return 0;
    uint32_t n = (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
    if (n > MAX_MESSAGE)
        return CUT_BROKEN;
    if (len - PREFIX_SIZE < n)
        return 0;
    *m = (struct message){in + PREFIX_SIZE, n};
    return PREFIX_SIZE + n;
}

static const struct framing {
    const char *name;
    size_t (*put)(unsigned char *out, const struct message *m);
    size_t (*cut)(const unsigned char *in, size_t len, struct message *m);
} framings[] = {
    {"delimiter: each message, then '\\n'", put_delimited, cut_delimited},
    {"fixed length: records of " STRING(RECORD_SIZE) " bytes, padded with NULs", put_fixed,
     cut_fixed},
    {"length prefix: 4 bytes, big-endian, then the message", put_prefixed, cut_prefixed},
};

/* =============================== The receiver ============================== */

/* What one decoder holds: the bytes not yet part of a message, and how many
 * messages it found, how many of them equal the one sent in that place. */
static struct {
    const struct framing *framing;
    unsigned char in[STREAM_SIZE];
    size_t len;
    size_t found, exact;
    int broken;
} rx;

/* Print a message the decoder found: "ok" if it is the one sent in that
 * place, else which message it is, if any. */
static void print_found(const struct message *m)
{
    size_t sent = NMESSAGES;
    for (size_t i = 0; i < NMESSAGES && sent == NMESSAGES; i++)
        if (messages[i].len == m->len && memcmp(messages[i].data, m->data, m->len) == 0)
            sent = i;
    printf("  %zu  ", rx.found + 1);
    print_quoted(m->data, m->len, QUOTE_WIDTH);
    if (sent == rx.found)
        printf("ok\n");
    else if (sent < NMESSAGES)
        printf("wrong: sent as message %zu\n", sent + 1);
    else
        printf("wrong: never sent\n");
    rx.exact += sent == rx.found;
    rx.found++;
}

/* Cut every whole message out of what has come so far; keep the rest. */
static void decode(void)
{
    struct message m;
    size_t start = 0, used;
    while (!rx.broken && (used = rx.framing->cut(rx.in + start, rx.len - start, &m)) != 0) {
        if (used == CUT_BROKEN) {
            printf("  (broken stream: a message longer than %d bytes, or a bad length)\n",
                   MAX_MESSAGE);
            rx.broken = 1;
            return;
        }
        print_found(&m);
        start += used;
    }
    memmove(rx.in, rx.in + start, rx.len - start);
    rx.len -= start;
}

/* Take what the socket holds, without waiting unless `wait` (then until at
 * least one byte or the end). Returns 0 once the sender has closed. */
static int receive(int fd, int wait, int verbose)
{
    for (;;) {
        if (rx.len == sizeof rx.in && !rx.broken) {
            printf("  (broken stream: %d bytes and no whole message)\n", STREAM_SIZE);
            rx.broken = 1;
        }
        if (rx.broken)
            rx.len = 0; /* read on, to the end, and throw it away */
        ssize_t n = recv(fd, rx.in + rx.len, sizeof rx.in - rx.len, wait ? 0 : MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 1;
        if (n < 0)
            die("recv");
        if (n == 0)
            return 0;
        if (verbose) {
            printf("     recv() = %zd: ", n);
            print_quoted(rx.in + rx.len, (size_t)n, 0);
            putchar('\n');
        }
        rx.len += (size_t)n;
        decode();
        wait = 0;
    }
}

/* ============================== The demonstration ========================== */

/* One framing: frame every message, send the bytes in pieces, decode them
 * on the other end of the connection as they come. One process does both:
 * the stream is far smaller than the socket buffers, so no send() blocks,
 * and the receiver reads after every piece. */
static void run_framing(const struct framing *f, int verbose)
{
    static unsigned char wire[NMESSAGES * (PREFIX_SIZE + MAX_MESSAGE + RECORD_SIZE)];
    size_t len = 0, payload = 0;
    for (size_t i = 0; i < NMESSAGES; i++) {
        len += f->put(wire + len, &messages[i]);
        payload += messages[i].len;
    }
    printf("\n%s\n  %zu bytes on the wire for %zu bytes of messages; received:\n", f->name, len,
           payload);

    int sender, receiver;
    connect_pair(&sender, &receiver);
    set_nodelay(sender); /* each piece a segment of its own: Nagle would glue them */
    rx.framing = f;
    rx.len = rx.found = rx.exact = 0;
    rx.broken = 0;
    for (size_t off = 0, piece; off < len; off += piece) {
        piece = 1 + next_random() % MAX_PIECE;
        piece = piece < len - off ? piece : len - off;
        send_all(sender, wire + off, piece);
        receive(receiver, 0, verbose);
    }
    shutdown(sender, SHUT_WR); /* FIN: the end of the stream */
    while (receive(receiver, 1, verbose))
        ;
    if (rx.len > 0)
        printf("  (the stream ended inside a message: %zu bytes left)\n", rx.len);
    printf("  %zu of %zu messages recovered exactly", rx.exact, NMESSAGES);
    if (rx.found != NMESSAGES)
        printf(" (%zu found)", rx.found);
    putchar('\n');
    close(sender);
    close(receiver);
}

static int run_demo(uint32_t seed, int verbose)
{
    random_state = seed != 0 ? seed : 1; /* xorshift32 stays at 0 forever */
    printf("%zu messages, framed three ways; each stream sent through TCP on 127.0.0.1\n"
           "in pieces of 1 to %d bytes, one send() each (seed %u). Sent:\n",
           NMESSAGES, MAX_PIECE, (unsigned)seed);
    for (size_t i = 0; i < NMESSAGES; i++) {
        printf("  %zu  ", i + 1);
        print_quoted(messages[i].data, messages[i].len, QUOTE_WIDTH);
        printf("%zu bytes\n", messages[i].len);
    }
    for (size_t i = 0; i < sizeof framings / sizeof framings[0]; i++)
        run_framing(&framings[i], verbose);
    return 0;
}

/* ========================= Nagle and delayed ACK (-n) ====================== */

/* Nagle's algorithm (RFC 896), on the sender: a small segment (less than a
 * full one) is not sent while an earlier small one is unacknowledged (so
 * Linux; RFC 896 waits for any unacknowledged data). Small writes made
 * meanwhile wait in the send buffer and leave together, glued, when the
 * ACK comes. Delayed ACK, on the receiver: it does not acknowledge each
 * segment at once, hoping to carry the ACK on a reply; with nothing to
 * reply, the ACK leaves when a timer fires (40 ms at least, on Linux by
 * default). A new connection acknowledges at once (Linux's quick-ACK mode)
 * until it looks interactive: here, once the receiver has answered the
 * first round. TCP_NODELAY turns Nagle off: every write is sent at once. */

/* Data segments this socket has sent so far (Linux's TCP_INFO). */
static unsigned data_segments_out(int fd)
{
    struct tcp_info info;
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0)
        die("getsockopt TCP_INFO");
    return info.tcpi_data_segs_out;
}

/* The receiver, in a child process: read until NAGLE_WRITES lines have
 * come, then answer with the size of each recv() ("2 18\n"). Until EOF.
 * A round is 2 * NAGLE_WRITES bytes, so at most that many recv()s: the
 * answer fits in 128 bytes. */
static void nagle_receiver(int fd)
{
    for (;;) {
        char answer[128];
        int used = 0;
        for (int lines = 0; lines < NAGLE_WRITES;) {
            char buf[256];
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0)
                _exit(n < 0 ? 1 : 0);
            for (ssize_t i = 0; i < n; i++)
                lines += buf[i] == '\n';
            used += snprintf(answer + used, sizeof answer - (size_t)used, "%s%zd",
                             used > 0 ? " " : "", n);
        }
        answer[used++] = '\n';
        send_all(fd, answer, (size_t)used);
    }
}

/* Read the receiver's answer, one line. */
static void read_answer(int fd, char *line, size_t size)
{
    size_t len = 0;
    while (len == 0 || line[len - 1] != '\n') {
        ssize_t n = recv(fd, line + len, size - 1 - len, 0);
        if (n <= 0 || len + (size_t)n >= size - 1)
            die("recv the answer");
        len += (size_t)n;
    }
    line[len - 1] = '\0';
}

static void nagle_rounds(int nodelay)
{
    int sender, receiver;
    connect_pair(&sender, &receiver);
    if (nodelay)
        set_nodelay(sender);
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(sender);
        nagle_receiver(receiver);
    }
    close(receiver);
    printf("\n%s\n  round     time  segments  the receiver's recv() sizes\n",
           nodelay ? "with TCP_NODELAY (Nagle off):" : "without TCP_NODELAY (Nagle on, the default):");
    for (int round = 1; round <= NAGLE_ROUNDS; round++) {
        char answer[256];
        unsigned before = data_segments_out(sender);
        double start = now_ms();
        for (int i = 0; i < NAGLE_WRITES; i++)
            send_all(sender, "x\n", 2);
        read_answer(sender, answer, sizeof answer);
        printf("  %5d  %5.1f ms  %8u  %s\n", round, now_ms() - start,
               data_segments_out(sender) - before, answer);
    }
    close(sender); /* the receiver sees EOF and exits */
    waitpid(child, NULL, 0);
}

static int run_nagle(void)
{
    printf("%d rounds on one TCP connection on 127.0.0.1: %d writes of 2 bytes in a row,\n"
           "then wait for the receiver's answer (it answers once all %d lines are in).\n"
           "Per round: the time, the data segments TCP sent, the receiver's recv() sizes.\n",
           NAGLE_ROUNDS, NAGLE_WRITES, NAGLE_WRITES);
    fflush(stdout); /* before fork(): the child must not inherit unwritten lines */
    nagle_rounds(0);
    fflush(stdout);
    nagle_rounds(1);
    return 0;
}

/* ================================== Main =================================== */

int main(int argc, char **argv)
{
    unsigned long seed = 1;
    int verbose = 0, nagle = 0, c;
    char *end;
    while ((c = getopt(argc, argv, "s:vn")) != -1) {
        switch (c) {
        case 's':
            errno = 0;
            seed = strtoul(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || end == optarg || seed > UINT32_MAX)
                usage();
            break;
        case 'v': verbose = 1; break;
        case 'n': nagle = 1; break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    return nagle ? run_nagle() : run_demo((uint32_t)seed, verbose);
}
