/*
 * protocol.c: the course's line protocol, what a client and the server say
 * to each other. Byte-for-byte the same in every chapter but 07 (the suite
 * checks it): the stages change how the server waits and who serves, never
 * what it answers. server.c includes it after defining struct client (with
 * its in, in_len, peer and local_port) and log_event(); reply() is the
 * chapter's own.
 *
 *   greeting   hello chapter=<name> pid=<pid> tid=<thread id> port=<port>
 *   <line>     the line, echoed
 *   sleep <ms> waits ms milliseconds (0..MAX_SLEEP_MS), then "slept <ms>"
 *   quit, exit, q       bye, then the server closes
 *   a line over MAX_LINE bytes: an error, then the server closes
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum next_step reply_text(struct client *c, const char *text)
{
    return reply(c, text, strlen(text));
}

static enum next_step send_greeting(struct client *c)
{
    char line[128];
    int len = snprintf(line, sizeof line, "hello chapter=%s pid=%d tid=%d port=%d",
                       CHAPTER, (int)getpid(), (int)gettid(), c->local_port);
    return reply(c, line, (size_t)len);
}

/* Milliseconds in "sleep <ms>": decimal digits worth 0..MAX_SLEEP_MS, leading
 * zeros allowed, or -1. The value is checked digit by digit, so no number of
 * digits can overflow it. */
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

/* The slow work itself: this thread blocks for ms milliseconds. */
static void sleep_ms(long ms)
{
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ; /* a signal woke us early: sleep the rest */
}

static enum next_step reply_slept(struct client *c, long ms)
{
    char line[32];
    snprintf(line, sizeof line, "slept %ld", ms);
    return reply_text(c, line);
}

/* "sleep <ms>" stands for slow work, such as a database call: the handler
 * blocks, and whatever else this thread would do waits with it. Unless the
 * chapter defines HAND_OFF_SLEEP (09): then hand_off_sleep() gives the work
 * to another thread, and the answer comes later (LATER). */
static enum next_step handle_sleep(struct client *c, const char *arg, size_t len)
{
    long ms = parse_millis(arg, len);
    if (ms < 0) {
        char line[64];
        snprintf(line, sizeof line, "error usage: sleep <ms> with 0 <= ms <= %d", MAX_SLEEP_MS);
        return reply_text(c, line);
    }
    log_event("%s sleeps %ld ms", c->peer, ms);
#ifdef HAND_OFF_SLEEP
    return hand_off_sleep(c, ms);
#else
    sleep_ms(ms);
    return reply_slept(c, ms);
#endif
}

static int line_is(const char *line, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(line, word, len) == 0;
}

static int starts_with(const char *line, size_t len, const char *prefix)
{
    return len >= strlen(prefix) && memcmp(line, prefix, strlen(prefix)) == 0;
}

/* Answer one complete line: its '\n' and any '\r' before it are gone. Lines
 * may hold any byte, NUL included, so they are compared by length. */
static enum next_step handle_line(struct client *c, const char *line, size_t len)
{
    if (line_is(line, len, "quit") || line_is(line, len, "exit") || line_is(line, len, "q")) {
        reply_text(c, "bye");
        return CLOSE;
    }
    if (line_is(line, len, "sleep"))
        return handle_sleep(c, "", 0);
    if (starts_with(line, len, "sleep "))
        return handle_sleep(c, line + 6, len - 6);
    return reply(c, line, len);
}

static enum next_step reject_long_line(struct client *c)
{
    char text[64];
    snprintf(text, sizeof text, "error line too long (max %d bytes)", MAX_LINE);
    reply_text(c, text);
    return CLOSE;
}

/* TCP carries a stream of bytes, not messages: one recv() may return half a
 * line, or three lines glued together (the "sticky packet" problem). So the
 * bytes collect in c->in, and every complete line is cut out at its '\n'.
 * What remains is the start of a line whose end has not arrived yet, or,
 * after a line answered LATER, the lines that wait for that answer. */
static enum next_step handle_input(struct client *c)
{
    size_t start = 0;
    char *newline;
    while ((newline = memchr(c->in + start, '\n', c->in_len - start)) != NULL) {
        char *line = c->in + start;
        size_t len = (size_t)(newline - line);
        start += len + 1;
        if (len > 0 && line[len - 1] == '\r')
            len--; /* telnet and "nc -C" end lines with "\r\n" */
        if (len > MAX_LINE)
            return reject_long_line(c);
        enum next_step step = handle_line(c, line, len);
        if (step == CLOSE)
            return CLOSE;
        if (step == LATER)
            break; /* the lines after it wait in c->in until its answer is out */
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    if (c->in_len == IN_SIZE)
        return reject_long_line(c); /* the buffer is full and still no '\n' */
    return KEEP_OPEN;
}
