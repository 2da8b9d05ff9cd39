/*
 * client.c: talks the course's line protocol to a server.
 *
 *     socket -> connect -> recv the greeting -> (send a line, recv its reply)... -> close
 *
 * Prints the greeting (any other first line refuses us: it is printed too,
 * and the client exits 1), then for each line on stdin sends it and prints
 * the reply line. On a terminal it shows a "> " prompt; from a pipe it is
 * silent, so scripts can drive it. The same client serves every chapter.
 */
#define _POSIX_C_SOURCE 200809L /* getline() */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ============================== Configuration ============================== */

/* Chapter N's server listens on 9N00, but 9100 is chapter 01's, and 91000
 * is no port (they end at 65535): chapter 10 takes 10000, the first round
 * number past 9900 that no chapter uses. */
#define DEFAULT_PORT 10000

/* The server's longest line is 4096 bytes; room for that and its '\n'. */
#define MAX_REPLY 4097

/* How long to wait for the greeting before telling the user why nothing
 * happens: a serial server has not accepted us yet. */
#define GREETING_NOTICE_MS 1000

/* ============================== Command line =============================== */

static struct {
    const char *host;
    int port;
} opt = {"127.0.0.1", DEFAULT_PORT};

static void usage(void)
{
    fprintf(stderr, "usage: client [-H host] [-p port]\n");
    exit(2);
}

static void parse_options(int argc, char **argv)
{
    int c;
    char *end;
    while ((c = getopt(argc, argv, "H:p:")) != -1) {
        switch (c) {
        case 'H': opt.host = optarg; break;
        case 'p':
            opt.port = (int)strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || opt.port < 1 || opt.port > 65535)
                usage();
            break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
}

/* ================================ Connecting =============================== */

static int connect_to_server(void)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)opt.port);
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "client: -H %s: not an IPv4 address\n", opt.host);
        usage();
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("client: socket");
        exit(1);
    }
    /* connect() returns once the kernel's three-way handshake is done. The
     * server's program may not have called accept() yet: we sit in its
     * listen queue, connected, and nobody reads what we send. */
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "client: cannot connect to %s:%d: %s\n", opt.host, opt.port,
                strerror(errno));
        exit(1);
    }
    return fd;
}

/* ============================== Reading lines ============================== */

/* Replies arrive as a byte stream, like everything on TCP: collect them and
 * hand out one line at a time. */
static struct {
    char buf[MAX_REPLY];
    size_t len;  /* bytes in buf */
    size_t used; /* bytes of buf already handed out */
} in;

/* Read one reply line into line (without its '\n'). Returns its length,
 * or -1 when the server closed the connection or it failed. */
static ssize_t read_reply(int fd, char *line)
{
    for (;;) {
        char *start = in.buf + in.used;
        char *newline = memchr(start, '\n', in.len - in.used);
        if (newline != NULL) {
            size_t len = (size_t)(newline - start);
            memcpy(line, start, len);
            in.used += len + 1;
            return (ssize_t)len;
        }
        /* No whole line yet: keep the partial one, then read more. */
        memmove(in.buf, start, in.len - in.used);
        in.len -= in.used;
        in.used = 0;
        if (in.len == sizeof in.buf) {
            fprintf(stderr, "client: reply longer than %d bytes\n", MAX_REPLY);
            return -1;
        }
        ssize_t n = recv(fd, in.buf + in.len, sizeof in.buf - in.len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0)
                perror("client: recv");
            return -1;
        }
        in.len += (size_t)n;
    }
}

/* If the greeting is slow, say so once, then keep waiting. */
static void wait_for_greeting(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, GREETING_NOTICE_MS) == 0)
        fprintf(stderr, "client: connected, but no greeting yet "
                        "(is the server busy with another client?)\n");
}

/* Print one line as it came, whatever bytes it holds. */
static void print_line(const char *line, size_t len)
{
    fwrite(line, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

/* A server that takes us says "hello ..." first. Any other first line (say
 * "error server busy") refuses us, and the server closes the connection. */
static int is_greeting(const char *line, ssize_t len)
{
    return len >= 6 && memcmp(line, "hello ", 6) == 0;
}

/* ============================== Sending lines ============================== */

/* Send all len bytes. A blocking send() can still take only part of them:
 * when the connection breaks halfway (a server that rejects a long line
 * closes while we send it), it returns the count it took and leaves errno
 * alone. So send the rest: the next send() then fails, with -1 and errno
 * saying why. Returns 0, or -1 with errno set. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The server closed while we were sending, most likely because of this very
 * line ("error line too long"). Its last words may wait in our receive
 * queue: show them, then why we stop (err: send()'s errno). */
static void report_send_failure(int fd, char *reply, int err)
{
    ssize_t len = read_reply(fd, reply);
    if (len >= 0)
        print_line(reply, (size_t)len);
    fprintf(stderr, "client: connection closed by the server while sending (send: %s)\n",
            strerror(err));
}

/* ================================== Main =================================== */

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    int fd = connect_to_server();
    int interactive = isatty(STDIN_FILENO);
    static char reply[MAX_REPLY];

    wait_for_greeting(fd);
    ssize_t len = read_reply(fd, reply);
    if (len < 0) {
        fprintf(stderr, "client: connection closed before the greeting\n");
        return 1;
    }
    print_line(reply, (size_t)len); /* the server's words, greeting or not */
    if (!is_greeting(reply, len)) {
        fprintf(stderr, "client: refused by the server (no greeting)\n");
        return 1;
    }

    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int status = 0;
    for (;;) {
        if (interactive) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        if ((n = getline(&line, &cap, stdin)) < 0) {
            if (interactive)
                fputc('\n', stdout); /* leave the prompt line after Ctrl-D */
            break;                    /* end of input: we are done */
        }
        if (line[n - 1] != '\n')
            line[n++] = '\n'; /* getline left room: cap > n */
        if (send_all(fd, line, (size_t)n) < 0) {
            report_send_failure(fd, reply, errno);
            status = 1;
            break;
        }
        if ((len = read_reply(fd, reply)) < 0) {
            fprintf(stderr, "client: connection closed by the server\n");
            status = 1;
            break;
        }
        print_line(reply, (size_t)len);
        if (len == 3 && memcmp(reply, "bye", 3) == 0)
            break;
    }
    free(line);
    close(fd);
    return status;
}
