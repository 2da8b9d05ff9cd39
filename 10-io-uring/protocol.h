/*
 * protocol.h: the numbers of the course's line protocol, and the one thing
 * the protocol needs from each chapter. Byte-for-byte the same in every
 * chapter but 07, like protocol.c, which holds the protocol itself.
 */
#include <stddef.h>

/* The longest line the protocol accepts, "\r\n" not counted. It bounds the
 * memory one client can make us hold while we wait for its '\n'. */
#define MAX_LINE 4096
#define IN_SIZE (MAX_LINE + 2) /* a client's input buffer: a longest line and "\r\n" */

/* The longest "sleep <ms>": long enough to show a stalled server, short enough
 * that every test stays bounded in time. */
#define MAX_SLEEP_MS 10000

/* What to do with a connection after answering a line: keep it, or close it
 * once the replies written so far have gone out; or (09, where other threads
 * do the slow work) answer later, and leave the next lines until then. */
enum next_step { KEEP_OPEN, CLOSE, LATER };

/* How a reply reaches the client is what differs between chapters: sent at
 * once, blocking (01, 02, 04, 05, 08), or queued and sent when the socket
 * has room (03, 06, 09). Each server.c defines it; CLOSE when the client is
 * lost. */
struct client;
static enum next_step reply(struct client *c, const char *line, size_t len);
