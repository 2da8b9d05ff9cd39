/*
 * examples/stream_handler.c: stream_handler.py in C, on the library, almost
 * line for line. A threaded echo server whose handler reads lines from
 * rfile and writes to wfile.
 *
 *     examples/stream_handler [-p PORT]        then: ./client -p PORT
 *
 * rfile is the socket behind a stdio buffer: ss_readline() returns exactly
 * one line however the bytes arrived, glued to the next line or split in
 * pieces, and keeps the rest for the next call. wfile is unbuffered, as
 * Python's (wbufsize = 0): each fwrite() is sent at once, whole.
 */
#define _POSIX_C_SOURCE 200809L /* getopt() */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../socketserver.h"

#define DEFAULT_PORT 9702 /* the chapter's 9700, plus one per example */
#define LINE_SIZE 1024    /* readline(1024), as the Python asks */

/* bytes.rstrip(b"\r\n"): the length without the line end. */
static size_t rstrip_newline(const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    return len;
}

/* class EchoHandler(socketserver.StreamRequestHandler): def handle(self) */
static int echo_handle(struct ss_handler *h)
{
    char line[LINE_SIZE + 1], reply[6 + LINE_SIZE]; /* + 1: ss_readline's NUL */
    if (fputs("welcome, send exit to quit\n", h->wfile) == EOF)
        return ss_fail(h->request, "handle: write");
    for (;;) {
        ssize_t n = ss_readline(h->rfile, line, sizeof line); /* one line, or 1024 bytes of one */
        if (n < 0)
            return ss_fail(h->request, "handle: readline");
        if (n == 0)
            break; /* the client left */
        if (rstrip_newline(line, (size_t)n) == 4 && memcmp(line, "exit", 4) == 0) {
            if (fputs("bye\n", h->wfile) == EOF)
                return ss_fail(h->request, "handle: write");
            break;
        }
        memcpy(reply, "echo: ", 6); /* b"echo: " + line, one write: one send() */
        memcpy(reply + 6, line, (size_t)n);
        if (fwrite(reply, 1, 6 + (size_t)n, h->wfile) != 6 + (size_t)n)
            return ss_fail(h->request, "handle: write");
    }
    return SS_OK;
}

static const struct ss_handler_class EchoHandler = {
    .name = "EchoHandler", .base = &ss_StreamRequestHandler, .handle = echo_handle};

/* argparse: -p PORT, 0 picks a free port; anything else is a usage error. */
static int parse_port(int argc, char **argv)
{
    int c;
    long port = DEFAULT_PORT;
    char *end;
    while ((c = getopt(argc, argv, "p:")) == 'p') {
        port = strtol(optarg, &end, 10);
        if (end == optarg || *end != '\0')
            port = -1;
    }
    if (c != -1 || optind != argc || port < 0 || port > 65535) {
        fprintf(stderr, "usage: stream_handler [-p PORT]\n");
        exit(2);
    }
    return (int)port;
}

int main(int argc, char **argv)
{
    static struct ss_server server; /* static: daemon threads may outlive main() */
    int port = parse_port(argc, argv);
    signal(SIGPIPE, SIG_IGN); /* Python ignores it at start-up: EPIPE instead */
    if (ss_server_init(&server, &ss_ThreadingMixIn, &ss_TCPServer, "127.0.0.1", port,
                       &EchoHandler, true) != SS_OK) {
        fprintf(stderr, "stream_handler: cannot listen on 127.0.0.1:%d: %s\n", port,
                strerror(errno));
        return 1;
    }
    server.daemon_threads = true; /* on Ctrl-C, do not wait for connected clients */
    printf("listening on 127.0.0.1:%d\n",
           ntohs(((struct sockaddr_in *)&server.server_address)->sin_port));
    fflush(stdout);
    ss_serve_forever(&server, 0.5); /* Ctrl-C kills us here; server.c stops cleanly */
    ss_server_close(&server);
    return 0;
}
