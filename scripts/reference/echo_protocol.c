/*
 * scripts/reference/echo_protocol.c: the course's line protocol (README.md),
 * answered byte for byte as the chapters' protocol.c answers (the suite's
 * contract rows check it). The C reference servers include it after
 * defining struct client (with peer[] and local_port) and reply(), which
 * queues one line and its '\n' for the client.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* What to do with a connection after answering a line. */
enum next_step { KEEP_OPEN, CLOSE };

static void reply_text(struct client *c, const char *text)
{
    reply(c, text, strlen(text));
}

static void send_greeting(struct client *c)
{
    char line[128];
    int len = snprintf(line, sizeof line, "hello chapter=%s pid=%d tid=%d port=%d", NAME,
                       (int)getpid(), (int)gettid(), c->local_port);
    reply(c, line, (size_t)len);
}

/* Milliseconds in "sleep <ms>": decimal digits worth 0..MAX_SLEEP_MS,
 * leading zeros allowed, or -1; checked digit by digit, so it cannot overflow. */
static long parse_millis(const char *text, size_t len)
{
    long ms = 0;
    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        ms = ms * 10 + (text[i] - '0');
        if (ms > MAX_SLEEP_MS)
            return -1;
    }
    return ms;
}

/* The handler blocks, and the whole loop with it: both libraries run their
 * callbacks on the one thread that waits for events (a real program would
 * hand slow work to a thread pool, uv_queue_work or a thread of its own). */
static void handle_sleep(struct client *c, const char *arg, size_t len)
{
    char line[64];
    long ms = parse_millis(arg, len);
    if (ms < 0) {
        snprintf(line, sizeof line, "error usage: sleep <ms> with 0 <= ms <= %d", MAX_SLEEP_MS);
        reply_text(c, line);
        return;
    }
    log_event("%s sleeps %ld ms", c->peer, ms);
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ; /* a signal woke us early: sleep the rest */
    snprintf(line, sizeof line, "slept %ld", ms);
    reply_text(c, line);
}

static int line_is(const char *line, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(line, word, len) == 0;
}

static enum next_step reject_long_line(struct client *c)
{
    char text[64];
    snprintf(text, sizeof text, "error line too long (max %d bytes)", MAX_LINE);
    reply_text(c, text);
    return CLOSE;
}

/* Answer one line, its '\n' already gone (a '\r' before it is dropped here).
 * Lines may hold any byte, NUL included: they are compared by length. */
static enum next_step answer_line(struct client *c, const char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\r')
        len--; /* telnet and "nc -C" end lines with "\r\n" */
    if (len > MAX_LINE)
        return reject_long_line(c);
    if (line_is(line, len, "quit") || line_is(line, len, "exit") || line_is(line, len, "q")) {
        reply_text(c, "bye");
        return CLOSE;
    }
    if (line_is(line, len, "sleep"))
        handle_sleep(c, "", 0);
    else if (len >= 6 && memcmp(line, "sleep ", 6) == 0)
        handle_sleep(c, line + 6, len - 6);
    else
        reply(c, line, len);
    return KEEP_OPEN;
}

